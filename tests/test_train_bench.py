"""bench/train_bench.py: the full-val loss, the time-to-target bookkeeping, the statistics and its smoke run."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import train_bench as tb
from gptlab.training.run_output import Progress

ROOT = Path(__file__).resolve().parents[1]


class FixedDistribution(torch.nn.Module):
    """Predicts the same distribution p at every position, whatever the input."""

    def __init__(self, p: np.ndarray):
        super().__init__()
        self.logits = torch.tensor(np.log(p), dtype=torch.float32)

    def forward(self, x):
        return self.logits.expand(*x.shape, -1), None


def test_full_val_loss_scores_every_val_token_once():
    rng = np.random.default_rng(0)
    vocab, T = 7, 16
    tokens = rng.integers(0, vocab, 1000).astype(np.uint16)
    p = rng.random(vocab) + 0.1
    p /= p.sum()
    starts = tb.val_windows(len(tokens), T)
    covered = len(starts) * T  # targets are tokens[1 : 1 + covered]
    assert 0 <= len(tokens) - 1 - covered < T  # only a tail shorter than one window is left out
    expected = float(np.mean(-np.log(p[tokens[1 : 1 + covered]])))
    assert tb.full_val_loss(FixedDistribution(p), tokens, T) == pytest.approx(expected, rel=1e-5)


def test_ratio_ci_is_the_t_interval_of_the_mean_log_ratio():
    num, den = [2.0, 3.0, 2.5], [10.0, 10.0, 10.0]
    logs = [math.log(0.2), math.log(0.3), math.log(0.25)]
    m = sum(logs) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in logs) / 2)
    h = 4.302652729911275 * sd / math.sqrt(3)  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
    g, lo, hi = tb.ratio_ci(num, den)
    assert (g, lo, hi) == pytest.approx((math.exp(m), math.exp(m - h), math.exp(m + h)))
    assert math.isnan(tb.mean_ci([1.0])[1])  # one value: no interval


def test_first_at_target_is_the_earliest_kept_step_at_or_below_it(tmp_path, monkeypatch):
    losses = {0: 4.2, 10: 2.5, 20: 1.95, 30: 1.88, 40: 1.89, 50: 1.87}
    (tmp_path / "snapshots").mkdir()
    for step in losses:
        (tmp_path / "snapshots" / f"step_{step:06d}.pt").touch()
    seen = []

    def fake_loss(path, tokens):
        step = int(path.stem.split("_")[1])
        seen.append(step)
        return losses[step]

    monkeypatch.setattr(tb, "run_val_loss", fake_loss)
    first, evaluated = tb.first_at_target(tmp_path, None, 1.885)
    assert first == 30  # not 50: step 30 reached it first, although step 40 was above again
    assert seen == [50, 40, 30, 20, 10]  # the scan stops at 2.5, more than 0.1 above the target
    assert evaluated == {s: losses[s] for s in seen}
    assert tb.first_at_target(tmp_path, None, 1.5)[0] is None
    assert tb.first_at_target(tmp_path, None, 5.0)[0] == 10  # a trained step: never the initial weights


def test_time_to_target_reads_the_timed_run_at_the_twins_step():
    res = tb.Result(
        "record", 1337, wall_s=9.0, loop_s=6.0, ms_per_iter=20.0, iters=30, dtype="float32", val_loss=1.8,
        full_val=1.81, arrivals={10: 4.0, 20: 5.5, 30: 7.0}, elapsed={10: 2.0, 20: 3.5, 30: 5.0},
    )  # fmt: skip
    tb.time_to_target(res, {"first": 20, "final": 1.81, "losses": {}})
    assert (res.target_step, res.target_wall_s, res.target_loop_s, res.twin_matches) == (20, 5.5, 3.5, True)
    tb.time_to_target(res, {"first": None, "final": 1.82, "losses": {}})
    assert (res.target_step, res.twin_matches) == (None, False)


def test_the_step_line_pattern_matches_what_a_run_prints():
    stream = io.StringIO()  # not a terminal: plain lines, as a piped train.py writes them
    row = {"step": 120, "train_loss": 2.0, "lr": 1e-3, "tokens_per_s": 5e4, "ms_per_iter": 15.0, "mfu": None}
    Progress(700, stream=stream).log(row, eta_s=3.0)
    m = tb.STEP_LINE.match(stream.getvalue())
    assert m and int(m[1]) == 120


def test_record_recipe_is_every_switch_on_a_shape_batch_and_schedule_of_its_own():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gptlab.training.resume import differences

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        every, record = (
            OmegaConf.to_container(compose("config", overrides=[f"+recipe={name}"]), resolve=False)
            for name in ("all", "record")
        )
    assert {k: new for k, _, new in differences(every, record)} == {
        "model.n_layer": 2,
        "model.n_embd": 192,
        "model.n_head": 6,
        "optim.lr": 0.006,
        "optim.muon_lr": 0.03,
        "optim.warmup_iters": 50,
        "train.batch_size": 32,
        "train.max_iters": 160,
    }
    assert tb.RECORD == ["model=tiny", "+recipe=record"]


# The --smoke run itself is tests/test_bench.py's smoke_train_bench (every bench script has one there).
