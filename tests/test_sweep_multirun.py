"""Hydra multiruns end to end: train.py with an experiment config, and the callback with a failing job."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from gptlab.errors import UserError
from gptlab.sweep.callback import SweepSummary
from gptlab.sweep.runs import read_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
TINY = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=16",
    "train.max_iters=4",
    "train.eval_interval=2",
    "train.eval_iters=1",
    "train.batch_size=4",
    "train.log_interval=2",
    "train.device=cpu",
    "train.threads=1",  # one thread each: far faster than two on a busy 2-core machine
]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV, **kw)


@pytest.mark.slow
def test_positions_experiment_summary_and_rerun_skips_finished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "+experiment=positions",
        "model.position=alibi,learned",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    r = run(cmd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "length extrapolation: evaluated 2 run(s)" in r.stdout
    with open(sweep / "runs.csv") as f:
        rows = {row["model.position"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"alibi", "learned"}
    for row in rows.values():
        assert row["status"] == "finished"
        assert int(row["kv_cache_bytes_per_token"]) == 2 * 1 * 2 * 16 * 4  # 2 * layers * kv heads * hs * fp32
        assert float(row["val_loss_1x"]) > 0 and float(row["best_val_loss"]) > 0
    assert all(rows["alibi"][f"val_loss_{m}x"] for m in (2, 4, 8))
    assert rows["learned"]["val_loss_2x"] == "" and "stop at block_size 16" in rows["learned"]["note"]
    for name in (
        "summary.md",
        "summary.csv",
        "comparison.csv",
        "val_loss_curves.png",
        "val_loss_vs_params.png",
        "val_loss_vs_wall_time.png",
        "loss_vs_eval_length.png",
    ):
        assert (sweep / name).is_file(), name
    # the table is printed at the end; the overrides all runs share are left out of the run names there
    assert "| `model.position=alibi` | finished | alibi |" in r.stdout
    run_dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # run folders are named by their overrides (hydra.job.override_dirname), so a re-run finds them
    assert len(run_dirs) == 2
    assert "model.position=alibi" in run_dirs[0].name and "train.max_iters=4" in run_dirs[0].name
    assert "model.position=alibi" in json.loads((run_dirs[0] / "summary.json").read_text())["overrides"]

    # the same command again: both runs are skipped (checkpoints untouched), the summary is rebuilt
    stamps = {p: (p / "best.pt").stat().st_mtime_ns for p in run_dirs}
    r = run(cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (r.stdout + r.stderr).count("already finished") == 2
    assert stamps == {p: (p / "best.pt").stat().st_mtime_ns for p in run_dirs}
    assert "length extrapolation: evaluated" not in r.stdout  # cached results reused


APP = """
import json
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.x == 2:
        raise RuntimeError("job two broke")
    (out / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 1, "val_loss": 1.0 + cfg.x}) + "\\n")
    (out / "summary.json").write_text(json.dumps({"status": "finished", "overrides": [f"x={cfg.x}"],
                                                  "best_val_loss": 1.0 + cfg.x}))

main()
"""

APP_CONFIG = """
x: 0
hydra:
  sweep:
    dir: {sweep}
    subdir: ${{hydra.job.override_dirname}}
  callbacks:
    sweep_summary:
      _target_: gptlab.sweep.callback.SweepSummary
      extrapolate: false
"""


@pytest.mark.slow
def test_a_failing_job_is_listed_and_the_summary_still_written(tmp_path):
    """Hydra skips on_multirun_end when a job fails; the callback's exit handler writes the summary."""
    sweep = tmp_path / "sweep"
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app.yaml").write_text(APP_CONFIG.format(sweep=sweep))
    r = subprocess.run(
        [sys.executable, str(tmp_path / "app.py"), "-m", "x=1,2,3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert r.returncode == 1  # Hydra reports the failed job
    with open(sweep / "runs.csv") as f:
        rows = {row["x"]: row for row in csv.DictReader(f)}
    assert {k: v["status"] for k, v in rows.items()} == {"1": "finished", "2": "failed", "3": "finished"}
    assert rows["2"]["note"] == "RuntimeError: job two broke"
    assert json.loads((sweep / "x=3" / "job_status.json").read_text())["status"] == "finished"


def test_on_job_end_records_a_failure_in_the_run_dir(tmp_path):
    cb = SweepSummary(extrapolate=False)
    hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    ret = JobReturn(overrides=["model.position=t5"], hydra_cfg=hydra_cfg, status=JobStatus.FAILED)
    ret.return_value = UserError("model.n_kv_head=3 must divide model.n_head=2")
    ret.status = JobStatus.FAILED
    cb.on_job_end(config=OmegaConf.create(), job_return=ret)
    r = read_run(tmp_path)
    assert (r.status, r.overrides) == ("failed", ["model.position=t5"])
    assert r.error == "UserError: model.n_kv_head=3 must divide model.n_head=2"


def _fake_run(d: Path, x: int) -> None:
    d.mkdir(parents=True)
    summary = {"status": "finished", "overrides": [f"x={x}"], "best_val_loss": float(x)}
    (d / "summary.json").write_text(json.dumps(summary))


def test_exit_handler_evaluates_only_after_a_failed_job_not_after_ctrl_c(tmp_path, capsys):
    """After Ctrl-C the summary shows what is there at once; after a failed job the sweep is complete and
    the finished runs are evaluated (these fake runs have no checkpoint, so the attempt shows as a note)."""
    _fake_run(tmp_path / "x=1", 1)
    _fake_run(tmp_path / "x=2", 2)
    cb = SweepSummary()
    cb._sweep_dir = tmp_path
    cb._write_if_missing()
    with open(tmp_path / "runs.csv") as f:
        assert [row["note"] for row in csv.DictReader(f)] == ["", ""]
    (tmp_path / "x=2" / "job_status.json").write_text(json.dumps({"status": "failed", "error": "E: boom"}))
    cb._written = False
    cb._write_if_missing()
    with open(tmp_path / "runs.csv") as f:
        rows = {row["x"]: row for row in csv.DictReader(f)}
    assert rows["1"]["note"].startswith("length extrapolation failed: run directory")
    assert (rows["2"]["status"], rows["2"]["note"]) == ("failed", "E: boom")
    assert "sweep summary:" in capsys.readouterr().out
