"""Seeds and time-to-target in real training: what a seed changes (and what it keeps the same across settings),
train.target_loss in summary.json, and one tiny multirun of 2 settings x 2 seeds grouped end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats as sps
from test_sweep_multirun import ENV, ROOT, TINY
from test_train import cfg_with, rows

from gptlab.errors import UserError
from gptlab.rundir.layout import RunDir
from gptlab.training.config import TrainConfig, from_mapping
from gptlab.training.loop import train
from gptlab.training.resume import plan_run
from gptlab.training.session import setup
from gptlab.training.signals import StopFlag


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared") / "shakespeare_char")


def first_batches(tmp_path, data_dir, name, *overrides, n=3):
    """The session train.py would build (nothing trained): its first n training batches and its embedding."""
    cfg = cfg_with(data_dir, *overrides)
    run = RunDir(tmp_path / name)
    s = setup(plan_run(run, OmegaConf.to_container(cfg, resolve=True), []), run, [], StopFlag())
    s.progress.close()
    return [s.state.loader.next()[0].clone() for _ in range(n)], s.raw_model.tok_emb.weight.detach().clone()


def test_a_seed_sets_initialisation_and_data_order_and_every_setting_shares_the_order(tmp_path, data_dir):
    rope0, w_rope0 = first_batches(tmp_path, data_dir, "a", "seed=0", "model.position=rope")
    alibi0, _ = first_batches(tmp_path, data_dir, "b", "seed=0", "model.position=alibi", "model.n_layer=1")
    rope1, w_rope1 = first_batches(tmp_path, data_dir, "c", "seed=1", "model.position=rope")
    # the same seed: another architecture trains on exactly the same batches, in the same order
    assert all(torch.equal(a, b) for a, b in zip(rope0, alibi0))
    # another seed: other batches and other initial weights, together
    assert not any(torch.equal(a, b) for a, b in zip(rope0, rope1))
    assert not torch.equal(w_rope0, w_rope1)
    again, w_again = first_batches(tmp_path, data_dir, "d", "seed=0", "model.position=rope")
    assert all(torch.equal(a, b) for a, b in zip(rope0, again)) and torch.equal(w_rope0, w_again)


def test_time_to_target_is_the_first_evaluation_at_or_below_it(tmp_path, data_dir):
    train(cfg_with(data_dir, "seed=3"), tmp_path / "plain")
    evals = rows(tmp_path / "plain", "eval")  # steps 4, 8, 12
    target = min(e["val_loss"] for e in evals[1:])  # first reached after the first evaluation
    expected = next(e for e in evals if e["val_loss"] <= target)
    assert expected["step"] > evals[0]["step"]

    summary = train(cfg_with(data_dir, "seed=3", f"train.target_loss={target!r}"), tmp_path / "target")
    again = rows(tmp_path / "target", "eval")
    assert [e["val_loss"] for e in again] == [e["val_loss"] for e in evals]  # the same run (CPU, same seed)
    seen = next(e for e in again if e["step"] == expected["step"])
    tokens_per_step = 4 * 32  # train.batch_size x model.block_size of test_train.SMALL
    assert summary["time_to_target"] == {
        "target_loss": target,
        "step": expected["step"],
        "tokens": expected["step"] * tokens_per_step,
        "wall_s": seen["elapsed_s"],
    }
    assert (
        json.loads((tmp_path / "target" / "summary.json").read_text())["time_to_target"]["step"]
        == seen["step"]
    )

    never = train(cfg_with(data_dir, "seed=3", "train.target_loss=0.01"), tmp_path / "never")
    assert never["time_to_target"] == {"target_loss": 0.01, "step": None, "tokens": None, "wall_s": None}
    assert "time_to_target" not in json.loads((tmp_path / "plain" / "summary.json").read_text())


def test_a_bad_target_loss_is_one_line():
    for value, msg in [
        (-1.0, "train.target_loss must be a positive number"),
        (0, "train.target_loss must be a positive number"),
        (float("nan"), "train.target_loss must be a positive number"),
        ("abc", "train.target_loss must be a number or null, got 'abc'"),
    ]:
        with pytest.raises(UserError, match=msg):
            from_mapping(TrainConfig, {"target_loss": value}, "train")
    assert from_mapping(TrainConfig, {"target_loss": 2}, "train").target_loss == 2


def test_bad_seeds_on_the_command_line_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "-m", "seeds=0", f"hydra.sweep.dir={tmp_path / 's'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: seeds=0 must be a positive integer")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_two_settings_by_two_seeds_end_to_end(tmp_path):
    """`seeds=2` on a real sweep: 4 runs, grouped into 2 settings of 2 seeds, paired by seed."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "+experiment=positions", "model.position=rope,alibi", "seeds=2",
        *TINY, "train.target_loss=100", f"hydra.sweep.dir={sweep}", "+hydra.callbacks.sweep_summary.windows=4",
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    best = {}
    for d in sorted(p for p in sweep.iterdir() if p.is_dir()):
        s = json.loads((d / "summary.json").read_text())
        pos, seed = (
            next(o.split("=")[1] for o in s["overrides"] if o.startswith(k)) for k in ("model.pos", "seed=")
        )
        assert f"seed={seed}" in d.name and s["status"] == "finished"
        assert (d / "config.yaml").read_text().count(f"seed: {seed}\n") == 1  # the run trained with it
        assert s["time_to_target"]["step"] == 2  # reached at the first evaluation
        best[pos, int(seed)] = s["best_val_loss"]
    assert sorted(best) == [("alibi", 0), ("alibi", 1), ("rope", 0), ("rope", 1)]
    assert best["rope", 0] != best["rope", 1]  # the seed changed the run

    with open(sweep / "summary.csv") as f:
        settings = {row["setting"]: row for row in csv.DictReader(f)}
    assert set(settings) == {"position=rope", "position=alibi"}
    for pos in ("rope", "alibi"):
        row = settings[f"position={pos}"]
        xs = [best[pos, 0], best[pos, 1]]
        half = 12.706204736 * abs(xs[0] - xs[1]) / math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(2)
        assert (row["seeds"], row["best_val_loss_n"], row["target_step_mean"]) == ("0 1", "2", "2.0")
        assert float(row["best_val_loss_mean"]) == pytest.approx(sum(xs) / 2)
        assert float(row["best_val_loss_ci_high"]) == pytest.approx(sum(xs) / 2 + half)
        assert row["val_loss_1x_n"] == "2"
    with open(sweep / "comparison.csv") as f:
        (cmp,) = list(csv.DictReader(f))
    assert (cmp["baseline"], cmp["setting"], cmp["pairs"]) == ("position=rope", "position=alibi", "2")
    d = [best["alibi", s] - best["rope", s] for s in (0, 1)]
    assert float(cmp["mean_diff"]) == pytest.approx(sum(d) / 2)
    p = sps.ttest_rel([best["alibi", s] for s in (0, 1)], [best["rope", s] for s in (0, 1)]).pvalue
    assert float(cmp["p"]) == pytest.approx(p)
    assert "2 settings × 2 seeds" in (sweep / "summary.md").read_text()
    assert "## Paired comparison with `position=rope`" in r.stdout
