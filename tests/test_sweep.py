"""Sweep summaries from run directories in the contract's format (fake runs written here, no training)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import load_entry_point, record_run

from gptlab.sweep.extrapolate import evaluate_lengths, window_starts
from gptlab.sweep.plots import PLOT_FILES
from gptlab.sweep.runs import collect_runs, parse_overrides, read_run
from gptlab.sweep.summary import summarize
from gptlab.sweep.table import build_table, differing_keys, runs_markdown, to_markdown

compare = load_entry_point("compare")  # compare.py's main, through runpy (no import)


def finished(root, name, overrides, best, params=1000, kv=512, **kw):
    return record_run(
        root,
        name,
        overrides,
        best_val_loss=best,
        final_val_loss=best + 0.01,
        params=params,
        tokens_per_s=1234.5,
        wall_s=42.0,
        kv_cache_bytes_per_token=kv,
        **kw,
    )


@pytest.fixture
def sweep_dir(tmp_path):
    """A `positions`-style sweep: three finished runs, one failed, one interrupted, one never started."""
    root = tmp_path / "multirun" / "positions"
    common = ["+experiment=positions", "train.max_iters=100"]
    for pos, best, params in [("alibi", 1.9, 1000), ("rope", 1.8, 1000), ("learned", 2.0, 1064)]:
        finished(root, f"model.position={pos}", [*common, f"model.position={pos}"], best, params=params)
    record_run(
        root,
        "model.position=t5",
        [*common, "model.position=t5"],
        status="failed",
        error="NaN",
        evals=[(7, 9.0, 1)],
    )
    record_run(
        root,
        "model.position=none",
        [*common, "model.position=none"],
        status="interrupted",
        evals=[(50, 2.6, 5)],
    )
    nd = root / "model.position=relative"  # crashed before train.py wrote anything; the callback recorded it
    nd.mkdir()
    (nd / "job_status.json").write_text(
        json.dumps(
            {"status": "failed", "overrides": [*common, "model.position=relative"], "error": "UserError: bad"}
        )
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file in the sweep dir is not a run
    return root


def test_overrides_parsed_and_only_differing_keys_kept(sweep_dir):
    assert parse_overrides(["+experiment=x", "model.position=alibi", "~foo", "a=b=c"]) == {
        "experiment": "x",
        "model.position": "alibi",
        "a": "b=c",
    }
    runs = collect_runs([sweep_dir])
    assert len(runs) == 6
    # train.max_iters is the same everywhere; +experiment is not an architecture choice
    assert differing_keys(runs) == ["model.position"]


def test_every_run_listed_with_its_status(sweep_dir):
    table = build_table(collect_runs([sweep_dir]))
    by_pos = {r["model.position"]: r for r in table.rows}
    assert set(by_pos) == {"alibi", "rope", "learned", "t5", "none", "relative"}
    assert by_pos["t5"]["status"] == "failed (step 7/100)" and by_pos["t5"]["note"] == "NaN"
    assert by_pos["relative"]["status"] == "failed" and "UserError: bad" in by_pos["relative"]["note"]
    assert by_pos["none"]["status"] == "interrupted (step 50/100)"
    assert by_pos["none"]["best_val_loss"] == 2.6  # from metrics.jsonl: the summary has no number yet
    # finished runs first, by best val loss; then the others
    assert [r["model.position"] for r in table.rows[:3]] == ["rope", "alibi", "learned"]
    md = runs_markdown(table)
    assert md.count("\n| `") == 6
    assert "**1.8000**" in md  # the best finished run stands out
    assert "| `model.position=rope` | finished | rope |" in to_markdown(table)  # the runs are in the summary


def test_status_of_runs_without_summary(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    torn = '{"kind": "eval", "step": 10, "val_loss": 3.0}\n{"kind": "ev'  # killed mid-write
    (d / "metrics.jsonl").write_text(torn)
    r = read_run(d)
    assert r.status == "running" and r.value("best_val_loss") == 3.0
    (d / "summary.json").write_text(json.dumps({"status": "running", "overrides": ["a=1"]}))
    (d / "job_status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    r = read_run(d)
    assert (r.status, r.error) == ("failed", "RuntimeError: boom")


def test_merged_sweeps_read_values_from_each_runs_config(tmp_path):
    a, b = tmp_path / "positions", tmp_path / "kv_heads"
    finished(a, "model.position=alibi", ["model.position=alibi"], 1.9)
    finished(a, "model.position=rope", ["model.position=rope"], 1.8)
    for kv, bytes_ in [(4, 2048), (1, 512)]:
        finished(b, f"model.n_kv_head={kv}", [f"model.n_kv_head={kv}"], 1.85, kv=bytes_)
    table = build_table(collect_runs([a, b]))
    assert table.keys == ["model.position", "model.n_kv_head"]
    rows = {r["run"]: r for r in table.rows}
    # positions runs did not override n_kv_head: their config says null; kv_heads runs use the default rope
    assert rows["positions/model.position=alibi"]["model.n_kv_head"] == "null"
    assert rows["kv_heads/model.n_kv_head=1"]["model.position"] == "rope"
    assert rows["kv_heads/model.n_kv_head=1"]["label"] == "position=rope, n_kv_head=1"


def test_a_config_group_override_shows_the_choice_not_its_content(tmp_path):
    finished(tmp_path, "a", ["model=small", "train.max_iters=5"], 1.7)
    finished(tmp_path, "b", ["train.max_iters=5"], 1.9)
    table = build_table(collect_runs([tmp_path]))
    assert table.keys == ["model"]
    assert [r["model"] for r in table.rows] == ["small", "(default)"]


def test_csv_and_plots_and_markdown_written(sweep_dir):
    md = summarize([sweep_dir], extrapolate=False)
    assert md == sweep_dir / "summary.md"
    with open(sweep_dir / "summary.csv") as f:  # one row per setting; here every setting has one seed
        settings = {r["setting"]: r for r in csv.DictReader(f)}
    assert len(settings) == 6
    alibi = settings["position=alibi"]
    assert (alibi["finished"], alibi["best_val_loss_n"], float(alibi["best_val_loss_mean"])) == (
        "1",
        "1",
        1.9,
    )
    assert alibi["best_val_loss_std"] == alibi["best_val_loss_ci_low"] == ""  # one seed: no interval
    assert alibi["note"] == "n=1, no interval" and settings["position=t5"]["note"] == "no finished run"
    with open(sweep_dir / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    alibi = next(r for r in rows if r["model.position"] == "alibi")
    assert float(alibi["best_val_loss"]) == 1.9 and float(alibi["final_val_loss"]) == pytest.approx(1.91)
    assert int(alibi["params"]) == 1000 and int(alibi["kv_cache_bytes_per_token"]) == 512
    assert float(alibi["tokens_per_s"]) == 1234.5 and float(alibi["wall_s"]) == 42.0
    assert alibi["val_loss_2x"] == ""  # not evaluated
    for name in PLOT_FILES.values():
        png = sweep_dir / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md.read_text()


def test_extrapolation_columns_and_not_applicable_reason(sweep_dir):
    runs = collect_runs([sweep_dir])
    for r in runs:
        if not r.finished:
            continue
        learned = r.config_value("model.position") == "learned"
        r.extrapolation = {
            "results": [
                {"multiplier": m, "loss": None if learned and m > 1 else 2.0 + m / 100, "reason": None}
                | ({"reason": "learned positions stop at block_size 64"} if learned and m > 1 else {})
                for m in (1, 2, 4, 8)
            ]
        }
    table = build_table(runs)
    learned = next(r for r in table.rows if r["model.position"] == "learned")
    assert learned["val_loss_1x"] == 2.01 and learned["val_loss_2x"] is None
    assert learned["note"] == "learned positions stop at block_size 64"
    md = runs_markdown(table)
    line = next(l for l in md.splitlines() if "position=learned`" in l)
    assert line.count("n/a") == 3
    rope = next(r for r in table.rows if r["model.position"] == "rope")
    assert rope["val_loss_8x"] == 2.08


def test_params_plot_not_drawn_when_the_counts_differ_by_under_one_percent(tmp_path):
    root = tmp_path / "sweep"
    for pos, best, params in [("alibi", 1.9, 809_536), ("rope", 1.8, 809_536), ("learned", 2.0, 817_600)]:
        finished(root, f"model.position={pos}", [f"model.position={pos}"], best, params=params)
    stale = root / PLOT_FILES["params"]
    stale.write_bytes(b"an old picture")  # from an earlier summary of this sweep
    md = summarize([root], extrapolate=False).read_text()
    assert not stale.exists() and f"]({PLOT_FILES['params']})" not in md
    assert "not drawn, the parameter counts differ by under 1% (809,536 to 817,600)" in md
    for key in ("curves", "wall", "length"):
        assert (root / PLOT_FILES[key]).is_file() and f"]({PLOT_FILES[key]})" in md
    # 1% or more apart: drawn
    finished(root, "model.n_embd=48", ["model.n_embd=48"], 2.2, params=817_632)  # 1.0001% above 809,536
    md = summarize([root], extrapolate=False).read_text()
    assert (root / PLOT_FILES["params"]).is_file() and f"]({PLOT_FILES['params']})" in md


def test_timing_says_where_it_was_measured_and_that_load_changes_it(sweep_dir, monkeypatch):
    from gptlab.runtime.device import cpu_info
    from gptlab.sweep import plots

    captions = {}
    save = plots._save

    def keep_caption(fig, ax, path, n):
        captions[path.name] = fig.get_supxlabel()
        return save(fig, ax, path, n)

    monkeypatch.setattr(plots, "_save", keep_caption)
    for name in ("model.position=alibi", "model.position=rope"):
        s = json.loads((sweep_dir / name / "summary.json").read_text())
        (sweep_dir / name / "summary.json").write_text(json.dumps({**s, "device": "cpu"}))
    md = summarize([sweep_dir], extrapolate=False).read_text()
    line = next(l for l in md.splitlines() if l.startswith("Timing: "))
    assert cpu_info()["model"] in line and "load average" in line and "ran on cpu;" in line
    table_part = md[md.index("| run") : md.index("Columns:")]
    assert "Timing: " in table_part  # printed with the table by compare.py
    wall = " ".join(captions[PLOT_FILES["wall"]].split())
    assert cpu_info()["model"] in wall and "load average" in wall
    assert captions[PLOT_FILES["curves"]] == ""  # the step plot needs no caveat


def test_compare_cli_merges_and_reports_bad_input(tmp_path, capsys):
    a, b = tmp_path / "s1", tmp_path / "s2"
    finished(a, "x", ["model.n_layer=1"], 2.0)
    finished(b, "y", ["model.n_layer=2"], 1.5)
    out = tmp_path / "cmp"
    compare.main([str(a), str(b), "-o", str(out), "--no-extrapolate"])
    text = capsys.readouterr().out
    assert "n_layer" in text and "**1.5000**" in text
    assert (out / "summary.csv").is_file() and (out / "summary.md").is_file()
    with pytest.raises(SystemExit) as e:
        compare.main([str(tmp_path / "missing")])
    assert e.value.code == 2
    assert "is not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        compare.main([str(empty), "--no-extrapolate"])
    assert "no runs found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- extrapolation method


def test_window_starts_evenly_spaced_and_fit():
    s = window_starts(1001, 100, 5)
    assert s.tolist() == [0, 225, 450, 675, 900]
    assert s[-1] + 100 + 1 <= 1001
    with pytest.raises(ValueError):
        window_starts(100, 100, 3)


class BigramModel(torch.nn.Module):
    """Logits depend on the current token only: a model whose loss we can compute by hand."""

    def __init__(self, vocab: int, max_seq_len=None):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        self.max_seq_len = max_seq_len

    def forward(self, idx, targets=None):
        return self.table(idx), None


def reference_loss(table: np.ndarray, tokens: np.ndarray, starts, length: int) -> float:
    """Naive: loop over windows and positions, -log softmax(table[x])[y]."""
    logp = table - np.log(np.exp(table).sum(1, keepdims=True))
    losses = [-logp[tokens[s + i], tokens[s + i + 1]] for s in starts for i in range(length)]
    return float(np.mean(losses))


def test_evaluate_lengths_matches_a_hand_computed_loss():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, size=700).astype(np.uint16)
    model = BigramModel(11)
    table = model.table.weight.detach().double().numpy()
    res = evaluate_lengths(model, tokens, block_size=16, multipliers=(1, 2, 4, 8), windows=6)
    starts = window_starts(700, 128, 6)  # the same starts for every length: those of the longest
    for r in res:
        L = 16 * r["multiplier"]
        assert r["length"] == L and r["tokens"] == 6 * L
        assert r["loss"] == pytest.approx(reference_loss(table, tokens, starts, L), rel=1e-5)
    assert res == evaluate_lengths(model, tokens, 16, (1, 2, 4, 8), 6)  # deterministic


def test_evaluate_lengths_not_applicable_past_max_seq_len_or_past_the_data():
    tokens = np.arange(200, dtype=np.uint16) % 7
    res = evaluate_lengths(
        BigramModel(7, max_seq_len=16), tokens, 16, (1, 2, 4, 8, 16), 4, position="learned"
    )
    assert res[0]["loss"] is not None and math.isfinite(res[0]["loss"])
    assert [r["loss"] for r in res[1:]] == [None] * 4
    assert res[1]["reason"] == "learned positions stop at block_size 16: longer sequences cannot be evaluated"
    res = evaluate_lengths(BigramModel(7), tokens, 16, (1, 2, 4, 8, 16), 4)
    assert [r["loss"] is not None for r in res] == [True, True, True, True, False]  # 16×16+1 > 200 tokens
    assert "val split has 200 tokens" in res[4]["reason"]
