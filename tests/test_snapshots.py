"""train.snapshots (gptlab/training/snapshots.py) and step= (open_run): the kept steps, a resume, a full disk, bad input."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from helpers import train_small

from gptlab.errors import UserError
from gptlab.open_run import load_run
from gptlab.rundir.checkpoint import load_checkpoint
from gptlab.rundir.layout import RunDir
from gptlab.training.config import TrainConfig
from gptlab.training.snapshots import SnapshotSchedule, parse_snapshots

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared") / "chars")


def weights(path):
    return load_checkpoint(path)["model"]


# ---------------------------------------------------------------------------------------------- the schedule
def test_schedules():
    assert parse_snapshots("log").steps(100) == [0, 1, 2, 4, 8, 16, 32, 64, 100]
    assert parse_snapshots("log").steps(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    assert parse_snapshots("every:30").steps(100) == [0, 30, 60, 90, 100]
    assert parse_snapshots("none").steps(100) == [] and parse_snapshots(None) == SnapshotSchedule()
    sched = parse_snapshots("every:30")
    assert [s for s in range(-1, 102) if sched.due(s, 100)] == sched.steps(100)
    sched = parse_snapshots("log")
    assert [s for s in range(-1, 102) if sched.due(s, 100)] == sched.steps(100)


@pytest.mark.parametrize("bad", ["evry:5", "every:0", "every:-3", "every:x", "logs", "every", 5, "every:5:2"])
def test_a_malformed_schedule_is_one_line(bad):
    with pytest.raises(UserError, match="train.snapshots must be none, log or every:N"):
        parse_snapshots(bad)


def test_too_many_snapshots_are_refused_before_the_run():
    with pytest.raises(
        UserError, match=r"keeps 2001 snapshots .* train.snapshots_max=100; use train.snapshots=every:21"
    ):
        TrainConfig(max_iters=2000, snapshots="every:1")
    assert TrainConfig(max_iters=2000, snapshots="every:21", snapshots_max=100).snapshots == "every:21"


# ---------------------------------------------------------------------------------------------- in a run
def test_a_run_keeps_its_scheduled_steps_and_each_loads(tmp_path, data_dir):
    run = tmp_path / "r"
    train_small(data_dir, run, "train.snapshots=log")
    rd = RunDir(run)
    assert rd.snapshot_steps() == [0, 1, 2, 4, 8, 12]
    assert sorted(p.name for p in rd.snapshots.iterdir())[:2] == ["step_000000.pt", "step_000001.pt"]
    last = load_checkpoint(rd.snapshot(12))
    assert last["step"] == 12 and last["snapshot"] is True and "optimizer" not in last
    for k, v in weights(rd.ckpt).items():  # the final snapshot is the final model
        assert torch.equal(v, last["model"][k]), k
    assert not torch.equal(weights(rd.snapshot(0))["lm_head.weight"], last["model"]["lm_head.weight"])
    # a snapshot is smaller than ckpt.pt (no optimizer state)
    assert rd.snapshot(12).stat().st_size < rd.ckpt.stat().st_size / 2
    r = load_run(run, step=4)
    assert r.step == 4 and r.snapshot and r.run_dir == run and r.notes == []


def test_no_snapshots_by_default(tmp_path, data_dir):
    run = tmp_path / "r"
    train_small(data_dir, run, "train.max_iters=4")
    assert RunDir(run).snapshot_steps() == [] and not (run / "snapshots").exists()


def test_a_resume_keeps_the_schedule(tmp_path, data_dir):
    """Stopped at step 6 (ckpt there), stale files from 'later' planted, resumed: the same steps, the same bits."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_small(data_dir, straight, "train.snapshots=log")
    first = train_small(data_dir, split, "train.snapshots=log", "train.stop_after_iters=6")
    assert first["status"] == "interrupted" and RunDir(split).snapshot_steps() == [0, 1, 2, 4]
    for late in (8, 16):  # left by a run killed past its checkpoint (16: one that was to train longer)
        (split / "snapshots" / f"step_{late:06d}.pt").write_bytes(b"from a run killed after its checkpoint")
    (split / "snapshots" / ".step_000016.pt.abc.tmp").write_bytes(b"a kill mid-write")
    train_small(data_dir, split, "train.snapshots=log", "train.resume=true")
    rs, rt = RunDir(split), RunDir(straight)
    assert rs.snapshot_steps() == rt.snapshot_steps() == [0, 1, 2, 4, 8, 12]
    assert not list(rs.snapshots.glob(".*.tmp"))
    for step in rs.snapshot_steps():
        a, b = weights(rs.snapshot(step)), weights(rt.snapshot(step))
        assert all(torch.equal(a[k], b[k]) for k in a), step


def test_snapshots_can_be_turned_on_at_a_resume(tmp_path, data_dir):
    run = tmp_path / "r"
    train_small(data_dir, run, "train.stop_after_iters=4")
    train_small(data_dir, run, "train.snapshots=every:4", "train.resume=true", "train.stop_after_iters=null")
    assert RunDir(run).snapshot_steps() == [4, 8, 12]  # from the resume's step on


def test_overwrite_removes_the_old_snapshots(tmp_path, data_dir):
    run = tmp_path / "r"
    train_small(data_dir, run, "train.snapshots=log")
    with pytest.raises(UserError, match="snapshots"):
        train_small(data_dir, run, "train.max_iters=3")
    train_small(data_dir, run, "train.max_iters=3", "train.overwrite=true")
    assert RunDir(run).snapshot_steps() == []


def test_a_full_disk_while_writing_a_snapshot_loses_nothing_earlier(tmp_path, data_dir):
    from test_faults import small_tmpfs

    with small_tmpfs(tmp_path / "full", "1200k") as full:
        run = full / "run"
        # no evaluation (so no checkpoint) before step 60: the disk fills while a snapshot is written
        with pytest.raises(UserError, match=f"no space left on the device \\(writing {run}/snapshots/step_0"):
            train_small(
                data_dir, run, "train.snapshots=every:1", "train.max_iters=60", "train.eval_interval=100"
            )
        rd = RunDir(run)
        kept = rd.snapshot_steps()
        assert kept[:3] == [0, 1, 2] and kept == list(range(len(kept))) and len(kept) < 61
        for step in kept:  # every file written before the disk filled is whole
            assert load_checkpoint(rd.snapshot(step))["step"] == step
        assert not list(rd.snapshots.glob(".*.tmp")) and not list(run.glob(".*.tmp"))
        assert rd.read_summary()["status"] == "failed"
        gc.collect()  # the failed write's exception held torch's zip writer, and its file, open: let umount work


# ---------------------------------------------------------------------------------------------- step=
@pytest.fixture(scope="module")
def kept_run(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("kept") / "r"
    train_small(data_dir, run, "train.snapshots=every:4")
    return run


def test_step_resolution(kept_run):
    assert [load_run(kept_run, step=s).step for s in (0, 4, "8", 12)] == [0, 4, 8, 12]
    r = load_run(kept_run, step=5)
    assert r.step == 4 and r.notes == [
        "step 5 is not kept; using the nearest kept step, 4 (kept: 0, 4, 8, 12)"
    ]
    assert load_run(kept_run, step=7).step == 8
    assert load_run(kept_run, step=6).step == 4  # a tie goes to the earlier step
    assert load_run(kept_run, step="best").ckpt_path.name == "best.pt"
    last = load_run(kept_run, step="last")
    assert last.ckpt_path.name == "ckpt.pt" and last.step == 12 and not last.snapshot
    direct = load_run(kept_run / "snapshots" / "step_000008.pt")  # a snapshot file loads like a checkpoint
    assert direct.step == 8 and direct.run_dir == kept_run


@pytest.mark.parametrize(
    "step, message",
    [
        (13, "step=13 is beyond the snapshots of .*: kept steps are 0, 4, 8, 12; step=last loads ckpt.pt"),
        (-1, r"step=-1 must be a step number \(0, 1, 2, ...\), best or last"),
        ("first", "step='first' must be a step number"),
        (1.5, "step=1.5 must be a step number"),
        (True, "step=True must be a step number"),
    ],
)
def test_bad_steps_are_one_line(kept_run, step, message):
    with pytest.raises(UserError, match=message):
        load_run(kept_run, step=step)


def test_step_in_a_run_without_snapshots_or_on_a_file(tmp_path, data_dir):
    run = tmp_path / "r"
    train_small(data_dir, run, "train.max_iters=4")
    with pytest.raises(UserError, match=r"keeps no snapshots \(train it with train.snapshots=log"):
        load_run(run, step=2)
    with pytest.raises(UserError, match="pass run=<run directory> \\(not ckpt.pt\\)"):
        load_run(run / "ckpt.pt", step=2)
    (run / "best.pt").unlink()
    with pytest.raises(UserError, match="has no best.pt; try step=last"):
        load_run(run, step="best")
    with pytest.raises(UserError, match="no run directory or checkpoint"):
        load_run(tmp_path / "nothing", step=2)


def test_a_damaged_snapshot_is_skipped_with_a_note(tmp_path, kept_run):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(kept_run, run)
    rd = RunDir(run)
    rd.snapshot(8).write_bytes(rd.snapshot(8).read_bytes()[:5000])  # torn
    r = load_run(run, step=8)
    assert r.step == 4 or r.step == 12
    assert r.step == 4  # the nearest intact one, the earlier on a tie
    assert r.notes[0].startswith(f"skipped the damaged snapshot {rd.snapshot(8)} (is not a readable")
    assert "using the nearest kept step, 4" in r.notes[1]
    for s in (0, 4, 12):
        rd.snapshot(s).write_bytes(b"junk")
    with pytest.raises(UserError, match="every snapshot in .* is damaged"):
        load_run(run, step=8)
