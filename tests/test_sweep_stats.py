"""Sweeps with seeds: the statistics against hand formulas and scipy, settings pooled from run directories
(fake runs, no training), the paired comparison, compare.py merging seeds and refusing bad input, the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import load_entry_point
from matplotlib.collections import PolyCollection
from scipy import stats as sps
from test_sweep import finished

import gptlab.sweep.plots as plots
from gptlab.cli import expand_seeds
from gptlab.errors import UserError
from gptlab.sweep.runs import collect_runs
from gptlab.sweep.settings import pick_baseline
from gptlab.sweep.stats import estimate, holm, paired
from gptlab.sweep.summary import summarize
from gptlab.sweep.table import build_table

compare = load_entry_point("compare")  # compare.py's main, through runpy (no import)

# Student t quantiles t(0.975, df) from a printed table (independent of scipy)
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}


# ----------------------------------------------------------------------------- the statistics


def test_estimate_is_the_mean_with_a_student_t_interval():
    xs = [2.11, 2.15, 2.13, 2.20]
    e = estimate(xs)
    mean = sum(xs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 3)  # n - 1 in the denominator
    assert (e.n, e.mean, e.std) == (4, pytest.approx(mean), pytest.approx(sd))
    assert e.low == pytest.approx(mean - T975[3] * sd / 2) and e.high == pytest.approx(
        mean + T975[3] * sd / 2
    )
    assert (e.low, e.high) == pytest.approx(sps.t.interval(0.95, 3, loc=mean, scale=sps.sem(xs)))
    assert e.half == pytest.approx(T975[3] * sd / 2)
    one = estimate([2.0, None, float("nan")])  # missing numbers are left out
    assert (one.n, one.mean, one.std, one.low, one.half) == (1, 2.0, None, None, None)
    assert estimate([]).n == 0 and estimate([None]).mean is None


def test_paired_difference_by_seed_against_a_hand_computed_t_test():
    # two seeds in common (seed 3 only in the baseline, seed 5 only in the other): 1 degree of freedom, where
    # Student's t is the Cauchy distribution and the two-sided p is 1 - (2 / pi) atan(|t|)
    base = {0: 2.10, 1: 2.20, 3: 9.9}
    other = {0: 2.05, 1: 2.18, 5: 1.0}
    p = paired(base, other)
    d = np.array([2.05 - 2.10, 2.18 - 2.20])
    sd = d.std(ddof=1)
    t = d.mean() / (sd / math.sqrt(2))
    assert p.seeds == (0, 1) and p.n == 2
    assert p.diff.mean == pytest.approx(d.mean()) and p.diff.std == pytest.approx(sd)
    assert p.diff.low == pytest.approx(d.mean() - T975[1] * sd / math.sqrt(2))
    assert p.p == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)))
    assert p.distinguishable is False  # the interval [-0.22, +0.15] holds zero

    base = {s: 2.0 + 0.01 * s for s in range(4)}
    other = {s: 1.9 + 0.012 * s + 0.001 * (-1) ** s for s in range(4)}
    p = paired(base, other)
    ref = sps.ttest_rel([other[s] for s in range(4)], [base[s] for s in range(4)])
    assert p.p == pytest.approx(ref.pvalue) and p.distinguishable is True and p.diff.high < 0


def test_paired_with_one_seed_or_identical_differences_has_no_p():
    one = paired({0: 2.0, 1: 2.1}, {0: 1.9})
    assert (one.n, one.diff.mean, one.diff.low, one.p, one.distinguishable) == (
        1,
        pytest.approx(-0.1),
        None,
        None,
        None,
    )
    same = paired({0: 2.0, 1: 2.1}, {0: 2.0, 1: 2.1})  # t is 0/0: no p, the interval is the point 0
    assert same.p is None and same.diff.low == 0 == same.diff.high and same.distinguishable is False


def test_holm_against_a_hand_computation():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.5, 0.2]) == [None, pytest.approx(0.5), pytest.approx(0.4)]  # m = 2
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.03]) == [0.03] and holm([]) == []


# ----------------------------------------------------------------------------- settings from run directories


def seeded(root: Path, pos: str, seed: int, best: float, job: int | None = None, max_iters=100, **kw) -> Path:
    """A finished fake run of `model.position=pos` with `seed`; `job`: its Hydra job number."""
    name = f"model.position={pos},seed={seed}" + (f",train.max_iters={max_iters}" if max_iters != 100 else "")
    overrides = [f"model.position={pos}", f"seed={seed}"]
    tokens_per_s = kw.pop("tokens_per_s", None)
    d = finished(root, name, overrides, best, **kw)
    if tokens_per_s is not None:
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, "tokens_per_s": tokens_per_s}))
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg.update(seed=seed, train={"max_iters": max_iters, "batch_size": 4})
    cfg["data"] = {"name": "shakespeare_char", "out_dir": str(root / "prepared")}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if job is not None:
        (d / ".hydra").mkdir()
        (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": job}}}))
    return d


BEST = {  # setting -> best val loss of seeds 0, 1, 2
    "rope": [2.10, 2.14, 2.12],
    "alibi": [2.05, 2.10, 2.06],  # clearly lower than rope, seed by seed
    "none": [2.13, 2.12, 2.16],  # about rope
}


@pytest.fixture
def seeds_sweep(tmp_path) -> Path:
    """3 settings x 3 seeds, in Hydra's job order rope, alibi, none (not alphabetical)."""
    root = tmp_path / "sweep"
    for i, (pos, bests) in enumerate(BEST.items()):
        for seed, b in enumerate(bests):
            seeded(root, pos, seed, b, job=3 * i + seed, tokens_per_s=1000.0 + 10 * seed)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_runs_that_differ_only_in_seed_are_one_setting(seeds_sweep):
    table = build_table(collect_runs([seeds_sweep]))
    assert table.keys == ["model.position", "seed"] and table.setting_keys == ["model.position"]
    assert [s.label for s in table.settings] == [
        "position=alibi",
        "position=rope",
        "position=none",
    ]  # by mean
    alibi = table.settings[0]
    assert [r.seed for r in alibi.runs] == [0, 1, 2]
    # the runs are listed beneath their setting, in the same order
    assert [row["setting"] for row in table.rows] == [s.label for s in table.settings for _ in range(3)]


def test_summary_csv_has_mean_std_and_interval_per_setting(seeds_sweep):
    summarize([seeds_sweep], extrapolate=False)
    rows = {r["setting"]: r for r in read_csv(seeds_sweep / "summary.csv")}
    assert set(rows) == {"position=rope", "position=alibi", "position=none"}
    for pos, xs in BEST.items():
        r = rows[f"position={pos}"]
        mean, sd = np.mean(xs), np.std(xs, ddof=1)
        assert (r["runs"], r["finished"], r["seeds"], r["best_val_loss_n"]) == ("3", "3", "0 1 2", "3")
        assert float(r["best_val_loss_mean"]) == pytest.approx(mean)
        assert float(r["best_val_loss_std"]) == pytest.approx(sd)
        assert float(r["best_val_loss_ci_low"]) == pytest.approx(mean - T975[2] * sd / math.sqrt(3))
        assert float(r["best_val_loss_ci_high"]) == pytest.approx(mean + T975[2] * sd / math.sqrt(3))
        assert float(r["tokens_per_s_mean"]) == pytest.approx(1010.0)
        assert float(r["tokens_per_s_std"]) == pytest.approx(10.0)
    assert len(read_csv(seeds_sweep / "runs.csv")) == 9
    md = (seeds_sweep / "summary.md").read_text()
    assert "3 settings × 3 seeds" in md and "## Settings" in md and "## Runs" in md
    a = BEST["alibi"]
    half = T975[2] * np.std(a, ddof=1) / math.sqrt(3)
    assert (
        f"| `position=alibi` | 3 | 1.0k | **{np.mean(a):.4f}** | {np.std(a, ddof=1):.4f} | [{np.mean(a) - half:.4f}"
        in md
    )


def test_comparison_pairs_by_seed_against_the_first_setting_with_holm(seeds_sweep):
    summarize([seeds_sweep], extrapolate=False)
    rows = {r["setting"]: r for r in read_csv(seeds_sweep / "comparison.csv")}
    assert set(rows) == {"position=alibi", "position=none"}  # the baseline is Hydra's first job: rope
    ps = {}
    for pos in ("alibi", "none"):
        r = rows[f"position={pos}"]
        assert r["baseline"] == "position=rope" and r["pairs"] == "3" and r["seeds"] == "0 1 2"
        d = np.array(BEST[pos]) - np.array(BEST["rope"])
        half = T975[2] * d.std(ddof=1) / math.sqrt(3)
        assert float(r["mean_diff"]) == pytest.approx(d.mean())
        assert float(r["ci_low"]) == pytest.approx(d.mean() - half)
        assert float(r["ci_high"]) == pytest.approx(d.mean() + half)
        ps[pos] = sps.ttest_rel(BEST[pos], BEST["rope"]).pvalue
        assert float(r["p"]) == pytest.approx(ps[pos])
    # Holm over the two settings, by hand: the smaller p doubled, the larger kept (or raised to it)
    lo, hi = sorted(ps.values())
    holm_by_hand = {ps_k: (min(1, 2 * lo) if p == lo else max(min(1, 2 * lo), hi)) for ps_k, p in ps.items()}
    for pos in ("alibi", "none"):
        assert float(rows[f"position={pos}"]["p_holm"]) == pytest.approx(holm_by_hand[pos])
    assert rows["position=alibi"]["verdict"] == "lower than the baseline"
    assert rows["position=none"]["verdict"] == "not distinguishable at this budget"
    md = (seeds_sweep / "summary.md").read_text()
    assert "## Paired comparison with `position=rope`" in md
    assert "| `position=none` | 3 | +0.0167 |" in md and "not distinguishable at this budget |" in md


def test_baseline_chosen_by_name_and_bad_baselines_are_one_line(seeds_sweep, capsys):
    settings = build_table(collect_runs([seeds_sweep])).settings
    assert pick_baseline(settings, "alibi").label == "position=alibi"
    assert pick_baseline(settings, "position=none").label == "position=none"
    assert pick_baseline(settings, "model.position=none").label == "position=none"
    compare.main([str(seeds_sweep), "--no-extrapolate", "compare.baseline=position=alibi"])
    assert {r["baseline"] for r in read_csv(seeds_sweep / "comparison.csv")} == {"position=alibi"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        compare.main([str(seeds_sweep), "--no-extrapolate", "--baseline", "xpos"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "compare.baseline=xpos is not a setting of these runs; choose one of: position=alibi;" in err
    # the Hydra callback never loses a summary: it compares with the first setting and says so
    logged = []
    summarize([seeds_sweep], extrapolate=False, baseline="xpos", strict=False, log=logged.append)
    assert logged == [
        "warning: compare.baseline=xpos is not a setting of these runs; choose one of: position=alibi; "
        "position=rope; position=none; compared with the first setting, `position=rope`, instead"
    ]
    assert {r["baseline"] for r in read_csv(seeds_sweep / "comparison.csv")} == {"position=rope"}


def test_one_seed_per_setting_shows_no_interval_not_an_error(tmp_path):
    for i, (pos, bests) in enumerate(BEST.items()):
        seeded(tmp_path, pos, 0, bests[0], job=i + 1)
    failed = seeded(tmp_path, "t5", 0, 2.0, job=0) / "summary.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "failed", "error": "NaN"}))
    md = summarize([tmp_path], extrapolate=False).read_text()
    # the default baseline is the first job's setting that finished a run (job 0 failed)
    assert "## Paired comparison with `position=rope`" in md
    assert "One seed per setting" in md and "## Settings" not in md  # the runs table says it all
    rows = {r["setting"]: r for r in read_csv(tmp_path / "comparison.csv")}
    assert rows.pop("position=t5")["verdict"] == "no finished seed in common with the baseline"
    assert {r["verdict"] for r in rows.values()} == {"n=1, no interval"}
    assert {r["p"] for r in rows.values()} == {""}
    assert "| `position=alibi` | 1 | -0.0500 | n=1, no interval | – | – | n=1, no interval |" in md
    assert {r["note"] for r in read_csv(tmp_path / "summary.csv")} == {"n=1, no interval", "no finished run"}


def test_compare_merges_the_seeds_of_separate_sweeps(tmp_path, capsys):
    a, b = tmp_path / "seeds01", tmp_path / "seed2"
    for pos in ("rope", "alibi"):
        for seed in (0, 1):
            seeded(a, pos, seed, BEST[pos][seed])
        seeded(b, pos, 2, BEST[pos][2])
    compare.main([str(a), str(b), "-o", str(tmp_path / "merged"), "--no-extrapolate", "--baseline", "rope"])
    rows = {r["setting"]: r for r in read_csv(tmp_path / "merged" / "summary.csv")}
    assert {k: (v["seeds"], v["best_val_loss_n"]) for k, v in rows.items()} == {
        "position=rope": ("0 1 2", "3"),
        "position=alibi": ("0 1 2", "3"),
    }
    assert float(rows["position=alibi"]["best_val_loss_mean"]) == pytest.approx(np.mean(BEST["alibi"]))
    (row,) = read_csv(tmp_path / "merged" / "comparison.csv")
    assert row["pairs"] == "3" and float(row["p"]) == pytest.approx(
        sps.ttest_rel(BEST["alibi"], BEST["rope"]).pvalue
    )


def test_compare_refuses_to_pair_settings_of_different_budgets_or_data(tmp_path, capsys):
    a, b = tmp_path / "short", tmp_path / "long"
    for seed in (0, 1):
        seeded(a, "rope", seed, 2.1)
        seeded(b, "alibi", seed, 1.9, max_iters=300)
    with pytest.raises(SystemExit) as e:
        compare.main([str(a), str(b), "-o", str(tmp_path / "out"), "--no-extrapolate"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "differ in budgets (train.max_iters 300 vs 100)" in err and "--unpaired" in err
    assert not (tmp_path / "out" / "summary.md").exists()  # refused before anything was written
    compare.main([str(a), str(b), "-o", str(tmp_path / "out"), "--no-extrapolate", "--unpaired"])
    assert [r["train.max_iters"] for r in read_csv(tmp_path / "out" / "summary.csv")] == ["300", "100"]
    assert not (tmp_path / "out" / "comparison.csv").exists()
    # the Hydra callback (not strict) writes the summary and says in one warning line why nothing is paired
    logged = []
    md = summarize([a, b], tmp_path / "cb", extrapolate=False, strict=False, log=logged.append).read_text()
    assert len(logged) == 1 and logged[0].startswith(
        "warning: no paired comparison: `position=alibi, max_iters=300` and the baseline `position=rope, "
        "max_iters=100` differ in budgets (train.max_iters 300 vs 100)"
    )
    assert "Note: no paired comparison" in md and "| `position=alibi, max_iters=300` | 2 |" in md
    assert not (tmp_path / "cb" / "comparison.csv").exists()
    # the same setting at two budgets is two settings, never one setting of 4 seeds
    seeded(b, "rope", 0, 2.0, max_iters=300)
    table = build_table(collect_runs([a, b]), pair=False)
    assert sorted((s.label, len(s.runs)) for s in table.settings) == [
        ("position=alibi, max_iters=300", 2),
        ("position=rope, max_iters=100", 2),
        ("position=rope, max_iters=300", 1),
    ]
    # other data under the same name: a data column, and no pairing
    c = tmp_path / "otherdata"
    for seed in (0, 1):
        d = seeded(c, "alibi", seed, 1.9)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["data"]["val_fraction"] = 0.2
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match=r"differ in data \(the data config\)"):
        build_table(collect_runs([a, c]))
    assert "data" in build_table(collect_runs([a, c]), pair=False).keys


def test_a_seed_twice_in_one_setting_is_refused(tmp_path):
    seeded(tmp_path / "a", "rope", 0, 2.1)
    seeded(tmp_path / "b", "rope", 0, 2.1)
    seeded(tmp_path / "a", "alibi", 0, 2.0)
    with pytest.raises(UserError, match="has two finished runs with seed 0"):
        build_table(collect_runs([tmp_path / "a", tmp_path / "b"]))


def test_time_to_target_pooled_over_the_seeds_that_reached_it(tmp_path):
    reached = [(40, 4000, 3.0), (60, 6000, 5.0), (None, None, None)]
    for seed, (step, tokens, wall) in enumerate(reached):
        ttt = {"target_loss": 2.2, "step": step, "tokens": tokens, "wall_s": wall}
        seeded(tmp_path, "rope", seed, 2.1, time_to_target=ttt)
        seeded(tmp_path, "alibi", seed, 2.0, time_to_target=ttt)
    md = summarize([tmp_path], extrapolate=False).read_text()
    row = next(r for r in read_csv(tmp_path / "summary.csv") if r["setting"] == "position=rope")
    assert (row["target_loss"], row["target_step_n"], float(row["target_step_mean"])) == ("2.2", "2", 50.0)
    assert float(row["target_wall_s_ci_high"]) == pytest.approx(4.0 + T975[1] * math.sqrt(2) / math.sqrt(2))
    assert "| `position=rope` | 2.2 | 2 of 3 | 50 ± 127 | 5,000 ± 12,706 | 4.0 ± 12.7 s |" in md
    runs = {r["run"]: r for r in read_csv(tmp_path / "runs.csv")}
    assert runs["model.position=rope,seed=2"]["target_step"] == ""  # not reached: empty, not 0
    assert "| not reached |" in md


# ----------------------------------------------------------------------------- seeds=N


def test_seeds_expands_into_the_seed_sweep_and_bad_values_are_one_line():
    assert expand_seeds(["-m", "+experiment=positions", "seeds=3"]) == [
        "-m",
        "+experiment=positions",
        "seed=0,1,2",
    ]
    assert expand_seeds(["--multirun", "seeds=1"]) == ["--multirun", "seed=0"]
    assert expand_seeds(["-m", "seed=5,6"]) == ["-m", "seed=5,6"]  # a plain Hydra sweep is left alone
    for argv, msg in [
        (["-m", "seeds=0"], "seeds=0 must be a positive integer"),
        (["-m", "seeds=-2"], "seeds=-2 must be a positive integer"),
        (["-m", "seeds=three"], "seeds=three must be a positive integer"),
        (["-m", "seeds=2,3"], "seeds=2,3 must be a positive integer"),
        (["seeds=3"], "add -m"),
        (["-m", "seeds=3", "seed=4"], "not both"),
    ]:
        with pytest.raises(UserError, match=msg):
            expand_seeds(argv)


# ----------------------------------------------------------------------------- plots


def test_plots_band_each_setting_with_seeds_and_keep_one_line_per_run_without(tmp_path, monkeypatch):
    axes = {}
    monkeypatch.setattr(plots, "_save", lambda fig, ax, path, n: axes.__setitem__(Path(path).name, ax))
    root = tmp_path / "seeds"
    losses = {0: (2.5, 2.1), 1: (2.6, 2.3), 2: (2.4, 2.2)}
    for pos in ("rope", "alibi"):
        for seed, (l50, l100) in losses.items():
            seeded(root, pos, seed, l100, evals=[(50, l50, 5.0 + seed), (100, l100, 10.0 + seed)])
    plots.write_plots(build_table(collect_runs([root])), tmp_path)
    ax = axes["val_loss_curves.png"]
    assert len(ax.get_lines()) == 2  # one mean line per setting, not one per seed
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [50, 100] and list(line.get_ydata()) == pytest.approx([2.5, 2.2])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    e = estimate([2.1, 2.3, 2.2])
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(e.low) and ys.max() == pytest.approx(estimate([2.5, 2.6, 2.4]).high)
    wall = axes["val_loss_vs_wall_time.png"].get_lines()[0]
    assert list(wall.get_xdata()) == pytest.approx([6.0, 11.0])  # the seeds' mean wall time at each step
    assert "(n=3)" in line.get_label()

    one = tmp_path / "one"
    for pos in ("rope", "alibi"):
        seeded(one, pos, 0, 2.1)
    plots.write_plots(build_table(collect_runs([one])), tmp_path)
    ax = axes["val_loss_curves.png"]
    assert len(ax.get_lines()) == 2 and not ax.collections  # as before seeds: a line per run, no band
    assert {line.get_label() for line in ax.get_lines()} == {"position=rope", "position=alibi"}
