"""Phase-change detection (gptlab/interp/phases.py): synthetic curves with a known answer, and series recorded from
real runs of the induction study (docs/heads.md), 2 layers (induction heads form) and 1 layer (none can)."""

import json
from pathlib import Path

import numpy as np
import pytest

from gptlab.interp.phases import Phase, find_phase, noise_level, phase_sentence, training_phases

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def sigmoid(x, mid, width, lo=0.05, hi=0.8):
    return lo + (hi - lo) / (1 + np.exp(-(np.asarray(x, float) - mid) / width))


@pytest.mark.parametrize("mid, width", [(500, 40), (300, 80), (1100, 25)])
def test_a_sigmoid_s_window_holds_its_inflection(mid, width):
    steps = np.arange(0, 1501, 50)
    rng = np.random.default_rng(0)
    vals = sigmoid(steps, mid, width) + rng.normal(0, 0.005, len(steps))
    p = find_phase(steps, vals, min_change=0.15)
    assert p is not None
    assert p.start <= mid <= p.end
    # 60 % of a logistic rise lies within +-ln(4) widths of the middle; the grid and smoothing widen it a little
    assert p.end - p.start <= 2 * np.log(4) * width + 3 * 50
    assert p.before == pytest.approx(0.05, abs=0.03) and p.after == pytest.approx(0.8, abs=0.03)


def test_a_falling_sigmoid_is_found_with_direction_minus_one():
    steps = np.arange(0, 1001, 25)
    vals = -5 * sigmoid(steps, 600, 30, 0, 1)
    assert find_phase(steps, vals, min_change=0.5) is None  # it never rises
    p = find_phase(steps, vals, direction=-1, min_change=0.5)
    assert p is not None and p.start <= 600 <= p.end and p.change == pytest.approx(-5, abs=0.3)


def test_flat_noisy_drifting_and_short_series_have_no_phase():
    steps = np.arange(0, 2001, 50)
    rng = np.random.default_rng(1)
    assert find_phase(steps, np.full(len(steps), 0.04), min_change=0.15) is None  # flat
    assert find_phase(steps, 0.04 + rng.normal(0, 0.005, len(steps)), min_change=0.15) is None  # flat + noise
    # loud noise around a constant: its range passes the absolute threshold, the noise test stops it
    loud = 0.5 + rng.normal(0, 0.15, len(steps))
    assert np.ptp(loud) > 0.3 and find_phase(steps, loud, min_change=0.15) is None
    assert find_phase(steps, np.linspace(0, 0.8, len(steps)), min_change=0.15) is None  # steady drift
    assert find_phase([0, 100, 200, 300], [0, 0, 1, 1], min_change=0.15) is None  # too few points
    with pytest.raises(ValueError):
        find_phase([0, 1, 2], [0, 1], min_change=0.1)


def test_missing_values_are_dropped():
    steps = np.arange(0, 1501, 50)
    vals = list(sigmoid(steps, 700, 40))
    vals[3], vals[20] = None, float("nan")
    p = find_phase(steps, vals, min_change=0.15)
    assert p is not None and p.start <= 700 <= p.end


def test_the_loss_needs_a_plateau_before_its_drop():
    steps = np.arange(0, 2001, 50)
    decay = 2 + 3.5 * np.exp(-steps / 150)  # the usual curve: fastest at the start, no slope change
    assert find_phase(steps, decay, direction=-1, min_change=0.5) is not None  # a drop it is...
    assert (
        find_phase(steps, decay, direction=-1, min_change=0.5, after_plateau=True) is None
    )  # ...not a phase
    plateau = 5.5 - 0.0002 * steps - 2.5 * sigmoid(steps, 900, 40, 0, 1)
    p = find_phase(steps, plateau, direction=-1, min_change=0.5, after_plateau=True)
    assert p is not None and p.start <= 900 <= p.end


def test_noise_level_of_white_noise_and_of_a_smooth_trend():
    rng = np.random.default_rng(2)
    assert noise_level(rng.normal(0, 0.1, 4000)) == pytest.approx(0.1, rel=0.1)
    assert noise_level(np.linspace(0, 1, 100) ** 2) < 1e-3


def _rows(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def test_recorded_2_layer_run_forms_induction_heads_in_one_window():
    """metrics.jsonl of the 2-layer induction study (800 steps, heads every 50; tests/fixtures/README.md)."""
    ph = training_phases(_rows("induction_2l_metrics.jsonl"))
    heads = ph["heads"]["induction"]
    assert {(d["layer"], d["head"]) for d in heads} == {(1, 0), (1, 1), (1, 2), (1, 3)}  # every layer-1 head
    for d in heads:  # the recorded scores: 0.04-0.09 up to step 400, 0.27-0.32 at 500, > 0.5 by 800
        assert 300 <= d["start"] <= 450 and 500 <= d["end"] <= 700
    assert ph["icl_score"] is not None and Phase(**ph["icl_score"]).overlaps(
        Phase(*(heads[0][k] for k in ("start", "end", "before", "after", "change")))
    )
    assert ph["val_loss"] is not None and 350 <= ph["val_loss"]["start"] <= 550
    s = ph["sentence"]
    assert s.startswith("induction heads L1H0, L1H1, L1H2, L1H3 formed between steps")
    assert "ICL score fell" in s and "fastest in the same window" in s


def test_recorded_1_layer_run_reports_no_induction_phase():
    ph = training_phases(_rows("induction_1l_metrics.jsonl"))
    assert ph["heads"]["induction"] == []
    assert ph["sentence"].startswith("no induction head formed")


def test_a_run_without_head_rows_has_no_phases():
    assert training_phases([{"kind": "eval", "step": 10, "val_loss": 3.0}]) is None


def test_the_sentence_orders_previous_token_heads_before_induction_heads():
    ph = {
        "heads": {
            "induction": [
                {
                    "layer": 1,
                    "head": 0,
                    "start": 420,
                    "end": 610,
                    "before": 0.04,
                    "after": 0.8,
                    "change": 0.76,
                }
            ],
            "previous-token": [
                {"layer": 0, "head": 2, "start": 100, "end": 300, "before": 0.1, "after": 0.7, "change": 0.6}
            ],
        },
        "icl_score": {"start": 450, "end": 600, "before": -0.3, "after": -5.1, "change": -4.8},
        "val_loss": None,
    }
    assert phase_sentence(ph) == (
        "induction head L1H0 formed between steps 420 and 610; ICL score fell from -0.30 to -5.10, fastest in "
        "the same window; previous-token head L0H2 formed first, by step 300"
    )
