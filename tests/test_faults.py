"""Faults and hostile input: nothing lost, nothing changed behind the user's back, one line for each mistake.

In-process tests drive `training.loop.train` with a tiny model; the kill / signal / lock tests start
train.py in subprocesses. Every case names the defect class of the reliability issue it guards.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from helpers import small_train
from hydra import compose, initialize_config_dir

from gptlab.data import BatchLoader, DataConfig, load_meta, prepare
from gptlab.errors import UserError
from gptlab.open_run import load_run
from gptlab.rundir.checkpoint import save_checkpoint
from gptlab.rundir.files import atomic_write, read_jsonl
from gptlab.rundir.layout import RunDir
from gptlab.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = small_train(max_iters=8)
cfg_with = functools.partial(helpers.cfg_with, max_iters=8)  # SMALL's config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared") / "chars")


def run_train(data_dir, run, *overrides):
    """train() as train.py calls it: the overrides typed on the command line are passed along."""
    return train(cfg_with(data_dir, *overrides), run, overrides=[*SMALL, *overrides])


def cli(*args, timeout=240, **kw):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("error: "), stderr
    return lines[-1]


# ---------------------------------------------------------------------------------------------- 1. resume
def test_resume_takes_the_saved_config_not_the_defaults(tmp_path, data_dir):
    run = tmp_path / "alibi"
    first = run_train(data_dir, run, "model.position=alibi", "train.stop_after_iters=4")
    assert first["status"] == "interrupted"
    # the line train.py prints, run as printed: only train.resume and the run dir
    done = train(cfg_with(data_dir, "train.resume=true"), run, overrides=["train.resume=true"])
    assert done["status"] == "finished" and done["step"] == 8  # max_iters 8 from the saved config
    assert load_run(run).model.config.position == "alibi"
    assert RunDir(run).read_config()["model"]["position"] == "alibi"


def test_resume_refuses_changes_to_the_experiment_and_writes_nothing(tmp_path, data_dir):
    run = tmp_path / "r"
    run_train(data_dir, run, "model.position=alibi", "train.stop_after_iters=4")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(UserError) as e:
        run_train(data_dir, run, "train.resume=true", "model.position=rope", "optim.lr=0.01")
    msg = str(e.value)
    assert "model.position: 'alibi' -> 'rope'" in msg and "optim.lr" in msg and "\n" not in msg
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # config.yaml (and everything else) untouched by the refused resume


def test_resume_applies_safe_changes_and_records_them(tmp_path, data_dir):
    run = tmp_path / "r"
    first = train(cfg_with(data_dir), run, overrides=["+note=first"])
    assert first["status"] == "finished" and first["step"] == 8
    # 6. resuming a finished run keeps what it recorded; more iterations are applied and recorded
    more = train(cfg_with(data_dir, "train.resume=true", "train.max_iters=12"), run,
                 overrides=["train.resume=true", "train.max_iters=12"])  # fmt: skip
    assert more["status"] == "finished" and more["step"] == 12
    assert more["overrides"] == ["+note=first"]
    assert more["final_val_loss"] is not None and more["tokens_per_s"] is not None
    assert more["resumes"][-1]["changes"] == ["train.max_iters: 8 -> 12"]
    steps = [r["step"] for r in RunDir(run).read_metrics("train")]
    assert steps == list(range(1, 13))
    # the same max_iters again: nothing to do, the summary stays as it is
    before = (run / "summary.json").read_bytes()
    again = train(cfg_with(data_dir, "train.resume=true", "train.max_iters=12"), run,
                  overrides=["train.resume=true", "train.max_iters=12"])  # fmt: skip
    assert again["status"] == "finished" and (run / "summary.json").read_bytes() == before


# ---------------------------------------------------------------------------------------------- 2. NaN weights
def _poison_from(monkeypatch, bad_step: int):
    """Training forward passes from the bad_step-th on return a NaN loss (weights go NaN after the step)."""
    from gptlab.model import GPT

    calls = {"n": 0}
    original = GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        if self.training and loss is not None:
            calls["n"] += 1
            if calls["n"] >= bad_step:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)


def test_nan_weights_never_overwrite_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    _poison_from(monkeypatch, 6)  # step index 5 goes bad
    run = tmp_path / "r"
    with pytest.raises(UserError, match=r"loss became nan at step 5.*last good checkpoint \(step 5\)"):
        # a checkpoint every step and no log row before it: the save itself must refuse the bad weights
        run_train(data_dir, run, "train.ckpt_interval=1", "train.log_interval=100")
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 5 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert RunDir(run).read_summary()["status"] == "failed"


def test_a_signal_forced_save_of_nan_weights_is_refused(tmp_path, data_dir, monkeypatch):
    _poison_from(monkeypatch, 1)  # the very first step goes bad: no good checkpoint exists
    run = tmp_path / "r"
    with pytest.raises(UserError, match="no checkpoint was saved before it"):
        run_train(data_dir, run, "train.stop_after_iters=2", "train.log_interval=100")
    assert not (run / "ckpt.pt").exists() and not (run / "best.pt").exists()


# ---------------------------------------------------------------------------------------------- 3. hostile checkpoint
def test_a_checkpoint_cannot_make_tools_read_or_write_files_it_names(tmp_path, data_dir, monkeypatch):
    from gptlab.data import build, sources
    from gptlab.interp.run_report import run_report

    victim = tmp_path / "victim"  # a user's own prepared data, which the checkpoint names as its out_dir
    victim.mkdir()
    (victim / "train.bin").write_bytes(b"precious")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me " * 100)
    meta = load_meta(prepare(DataConfig(out_dir=data_dir), quiet=True))

    def forbidden(*a, **k):
        raise AssertionError("a tool reading a run prepared data or read a source file")

    monkeypatch.setattr(build, "_prepare_locked", forbidden)
    monkeypatch.setattr(sources, "load_text_source", forbidden)
    from gptlab.model import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=meta["vocab_size"], block_size=16, n_layer=1, n_head=2, n_embd=16)
    run = tmp_path / "run"
    save_checkpoint(
        run / "ckpt.pt", model=GPT(cfg).state_dict(), model_config=cfg.to_dict(), step=1, tokenizer=meta,
        config={"data": {"name": "evil", "source": "files", "path": str(secret), "out_dir": str(victim),
                         "tokenizer": "char"}},
    )  # fmt: skip
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        hcfg = compose("heads", overrides=[f"run={run}", f"out={tmp_path / 'out'}", "text=ROMEO: hi there"])
    res = run_report(hcfg)
    assert (tmp_path / "out" / "heads.csv").is_file() and res["out"] == tmp_path / "out"
    assert sorted(p.name for p in victim.iterdir()) == ["train.bin"]
    assert (victim / "train.bin").read_bytes() == b"precious"
    assert not any(p.name.startswith(".gptlab-prepare") for p in tmp_path.rglob("*"))
    from gptlab.sweep.extrapolate import extrapolate_run

    with pytest.raises(UserError, match="prepared data is not here"):
        extrapolate_run(run, use_cache=False, device="cpu")
    assert sorted(p.name for p in victim.iterdir()) == ["train.bin"]


# ---------------------------------------------------------------------------------------------- 4. existing dir
def test_a_new_run_in_an_existing_run_dir_is_refused_unless_overwrite(tmp_path, data_dir):
    run = tmp_path / "r"
    run_train(data_dir, run)
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="already holds a run .*train.resume=true.*train.overwrite=true"):
        run_train(data_dir, run, "train.max_iters=4")
    assert (run / "metrics.jsonl").read_bytes() == metrics
    fresh = run_train(data_dir, run, "train.max_iters=4", "train.overwrite=true")
    assert fresh["step"] == 4 and "resumes" not in fresh
    assert torch.load(run / "best.pt", weights_only=True)["step"] <= 4  # the old run's best.pt is gone
    assert [r["step"] for r in RunDir(run).read_metrics("train")] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- 5. lock
def test_a_second_trainer_on_one_run_dir_is_refused_naming_the_first(tmp_path, data_dir):
    run = tmp_path / "r"
    with RunDir(run).lock("train.py"):  # another trainer holds the directory
        with pytest.raises(UserError, match=rf"in use by another process \(pid {os.getpid()}, train.py\)"):
            run_train(data_dir, run)
    assert not (run / "config.yaml").exists()
    assert run_train(data_dir, run)["status"] == "finished"  # released: the next one runs


@pytest.mark.slow
def test_concurrent_trainers_subprocess(tmp_path, data_dir):
    run = tmp_path / "r"
    args = ["train.py", *SMALL, f"data.out_dir={data_dir}", "train.max_iters=100000",
            "train.eval_interval=100000", f"hydra.run.dir={run}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / "metrics.jsonl")
        second = cli(*args)
        assert second.returncode == 2
        assert f"pid {first.pid}" in one_error_line(second.stderr)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 0 and RunDir(run).read_summary()["status"] == "interrupted"


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"


# ---------------------------------------------------------------------------------------------- 7. corrupt data
def test_damaged_prepared_data_is_prepared_again(tmp_path, capsys):
    out = tmp_path / "d"
    cfg = DataConfig(out_dir=str(out), max_documents=2)
    prepare(cfg, quiet=True)
    good = (out / "train.bin").read_bytes()
    for damage in ("zeroed", "edited meta"):
        if damage == "zeroed":
            (out / "train.bin").write_bytes(bytes(len(good)))
        else:
            meta = json.loads((out / "meta.json").read_text())
            (out / "meta.json").write_text(json.dumps({**meta, "vocab_size": 3}))
        prepare(cfg)
        assert "again" in capsys.readouterr().err
        assert (out / "train.bin").read_bytes() == good and load_meta(out)["vocab_size"] > 3


def test_out_of_range_token_ids_are_one_line(tmp_path):
    out = tmp_path / "d"
    prepare(DataConfig(out_dir=str(out), max_documents=2), quiet=True)
    ids = np.memmap(out / "train.bin", dtype=np.uint16, mode="r+")
    ids[:] = 60000  # beyond the 60-odd characters of the vocabulary
    ids.flush()
    # the whole-file checksum refuses it first; a file whose checksum matches gets the id check per batch
    # (tests/test_data_integrity.py)
    with pytest.raises(UserError, match=r"train.bin does not match the checksum .*\(damaged or edited\)"):
        BatchLoader(out / "train.bin", block_size=16, batch_size=2)


# ---------------------------------------------------------------------------------------------- 8. torn lines, leftovers
def test_torn_metrics_line_and_leftovers_do_not_block_a_resume(tmp_path, data_dir):
    run = tmp_path / "r"
    run_train(data_dir, run, "train.stop_after_iters=4")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 5, "train_lo')  # a kill -9 mid-write
    (run / ".ckpt.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    done = run_train(data_dir, run, "train.resume=true")
    assert done["status"] == "finished"
    assert not list(run.glob(".*.tmp"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole again
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"] == list(range(1, 9))


def test_a_finished_run_without_its_plot_gets_it_back(tmp_path, data_dir):
    run = tmp_path / "r"
    run_train(data_dir, run)
    (run / "loss.png").unlink()  # kill -9 right after "finished"
    again = run_train(data_dir, run, "train.resume=auto")
    assert again["status"] == "finished" and (run / "loss.png").is_file()


def test_leftover_prepare_folders_are_removed(tmp_path):
    out = tmp_path / "d"
    cfg = DataConfig(out_dir=str(out), max_documents=2)
    prepare(cfg, quiet=True)
    (out / ".gptlab-prepare-dead").mkdir()
    (out / ".gptlab-prepare-dead" / "train.bin").write_bytes(b"x" * 1000)
    (out / "train.bin").write_bytes(b"")  # damaged: the next prepare takes the lock and cleans up
    prepare(cfg, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [".gptlab-data", "meta.json", "train.bin", "val.bin"]


# ---------------------------------------------------------------------------------------------- tracebacks owed a line
def test_resume_of_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, data_dir):
    run = tmp_path / "r"
    run_train(data_dir, run, "train.stop_after_iters=4")
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    ckpt["model"].pop("lm_head.weight")
    ckpt["model"]["tok_emb.weight"] = ckpt["model"]["tok_emb.weight"][:, :16]
    torch.save(ckpt, run / "ckpt.pt")
    with pytest.raises(UserError, match=r"does not fit this model .*tok_emb.weight"):
        run_train(data_dir, run, "train.resume=true")


def test_disk_full_at_the_first_checkpoint(tmp_path, data_dir, monkeypatch):
    from gptlab.rundir import checkpoint

    def full(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    run = tmp_path / "r"
    with pytest.raises(
        UserError, match=r"no space left on the device \(writing .*best.pt\).*train.overwrite=true"
    ):
        run_train(data_dir, run)
    summary = RunDir(run).read_summary()
    assert summary["status"] == "failed" and summary["error"] == "disk full"


def test_disk_full_while_preparing_leaves_nothing_half_written(tmp_path, monkeypatch):
    from gptlab.data import build

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "d"
    monkeypatch.setattr(build, "_build_text", full)
    with pytest.raises(OSError):
        prepare(DataConfig(out_dir=str(out), max_documents=1), quiet=True)
    assert not out.exists()  # the folder it made is gone again; the entry points say "no space left"


def test_ctrl_c_during_evaluation_keeps_the_checkpoint(tmp_path, data_dir, monkeypatch, capsys):
    from gptlab.training import loop

    real = loop.evaluate
    calls = {"n": 0}

    def second_ctrl_c(s):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what the second Ctrl-C raises inside an evaluation
        return real(s)

    monkeypatch.setattr(loop, "evaluate", second_ctrl_c)
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run_train(data_dir, run)
    assert "interrupted; the last checkpoint" in capsys.readouterr().err
    assert RunDir(run).read_summary()["status"] == "interrupted"
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] == 4
    assert run_train(data_dir, run, "train.resume=true")["status"] == "finished"


def test_a_second_ctrl_c_stops_at_once():
    """The first Ctrl-C (or SIGTERM) only asks the loop to stop after its step; a second Ctrl-C raises the
    KeyboardInterrupt the test above simulates (real signals here, delivered to this process)."""
    from gptlab.training.signals import StopFlag

    before = signal.getsignal(
        signal.SIGINT
    )  # Python's default, or SIG_IGN in a job started in the background
    for first in (signal.SIGINT, signal.SIGTERM):
        flag = StopFlag().install()
        try:
            signal.raise_signal(first)  # the handler runs before raise_signal returns
            assert flag.requested == first.name
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        finally:
            flag.restore()
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_ctrl_c_during_the_end_of_run_sample_keeps_the_finished_run(tmp_path, data_dir, monkeypatch, capsys):
    from gptlab.model import GPT

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(GPT, "generate", interrupted)
    summary = run_train(data_dir, tmp_path / "r", "train.sample_tokens=20")
    assert summary["status"] == "finished" and "sample skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, needle",
    [
        ("seed=abc", "seed must be a non-negative integer, got 'abc'"),
        ("train.threads=-1", "train.threads must be a positive integer or null, got -1"),
        ("train.stop_after_iters=-1", "train.stop_after_iters must be a positive integer or null"),
        ("optim.lr=abc", "optim.lr must be a number, got 'abc'"),
        ("train.compile=maybe", "train.compile must be true or false"),
    ],
)
def test_bad_values_are_one_line_before_anything_is_written(tmp_path, data_dir, override, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        run_train(data_dir, tmp_path / "r", override)
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_unknown_keys_and_unusable_run_dirs_are_one_line(tmp_path):
    from gptlab.cli import check_overrides

    f = tmp_path / "a_file"
    f.write_text("")
    for name, argv, needle in [
        ("config", ["train.foo=1"], "unknown config key 'train.foo'; valid keys in train: batch_size"),
        ("sample", ["foo=1"], "unknown config key 'foo'; valid top-level keys: compile, device"),
        ("heads", ["probe.foo=1"], "valid keys in probe: batch_size, reps, seed"),
        ("config", [f"hydra.run.dir={f}"], "is a file; pass a directory"),
        ("config", ["data=shakspeare"], "unknown data config 'shakspeare'; choose one of"),
    ]:
        with pytest.raises(UserError, match=needle):
            check_overrides(name, argv)
    check_overrides("config", ["-m", "+experiment=positions", "model.position=rope,alibi", "+new.key=1"])


@pytest.mark.slow
def test_cli_config_errors_exit_2_with_one_line(tmp_path, data_dir):
    for args, needle in [
        (["train.foo=1"], "valid keys in train"),
        (["seed=abc"], "seed must be"),
        ([f"hydra.run.dir={tmp_path}/x", "optim.lr=abc"], "optim.lr must be a number"),
    ]:
        r = cli("train.py", *SMALL, f"data.out_dir={data_dir}", *args)
        assert r.returncode == 2 and needle in one_error_line(r.stderr), r.stderr
    r = cli("sample.py", "foo=1")
    assert r.returncode == 2 and "valid top-level keys" in one_error_line(r.stderr)


# ---------------------------------------------------------------------------------------------- sample / heads input
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("tiny") / "run"
    run_train(data_dir, run, "train.max_iters=2", "train.eval_interval=2")
    return run


def test_sampling_more_than_memory_holds_is_one_line(tiny_run, monkeypatch):
    import gptlab.sampling.batch  # noqa: F401  (makes sampling.batch an attribute)
    from gptlab import sampling

    monkeypatch.setattr(sampling.batch, "free_memory", lambda device: 64 << 20)  # 64 MiB free
    opts = sampling.parse_options({"run": str(tiny_run), "num_samples": 2_000_000, "max_new_tokens": 10})
    with pytest.raises(UserError, match=r"num_samples=2000000 x max_new_tokens=10 needs at least .* is free"):
        sampling.sample(opts)


def test_non_finite_checkpoints_are_refused_when_loaded(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    ckpt["model"]["blocks.0.attn.q_proj.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")  # bypasses save_checkpoint's own check, as a hand-made file would
    with pytest.raises(UserError, match=r"non-finite weights \(blocks.0.attn.q_proj.weight"):
        load_run(tmp_path / "nan.pt")


def test_text_files_that_are_not_utf8_or_are_folders(tiny_run, tmp_path):
    from gptlab.interp.run_report import run_report
    from gptlab.sampling.prompt import read_prompt

    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        bad_file = compose(
            "heads", overrides=[f"run={tiny_run}", f"text_file={latin}", f"out={tmp_path / 'o'}"]
        )
        one_tok = compose(
            "heads", overrides=[f"run={tiny_run}", "text=ROMEO", "max_tokens=1", f"out={tmp_path / 'o'}"]
        )
    with pytest.raises(UserError, match="is not UTF-8 text .*iconv"):
        run_report(bad_file)
    with pytest.raises(UserError, match="max_tokens=1 must be an integer >= 2"):
        run_report(one_tok)
    with pytest.raises(UserError, match="is a directory; give a UTF-8 text file"):
        read_prompt("x", str(tmp_path))


def test_long_load_errors_are_not_cut_mid_word(tmp_path):
    from gptlab.rundir.checkpoint import first_line

    words = " ".join(f"word{i}" for i in range(100))
    line = first_line(ValueError(words), limit=120)
    assert line.endswith(" …") and line[:-2].split(" ")[-1] in words.split(" ")


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        from gptlab.rundir import files

        files._umask.cache_clear()
        atomic_write(tmp_path / "a.txt", "hi")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
        files._umask.cache_clear()


# ---------------------------------------------------------------------------------------------- kill -9, signals
@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_a_straight_run(tmp_path, data_dir):
    """Three hard kills at random moments (checkpoint every step, so some land mid-write), each followed by a
    resume: every checkpoint stays loadable and the final weights equal an uninterrupted run's."""
    extra = ["train.max_iters=60", "train.eval_interval=20", "train.ckpt_interval=1", "model.dropout=0.1"]
    run_train(data_dir, tmp_path / "straight", *extra)
    run = tmp_path / "killed"
    args = ["train.py", *SMALL, f"data.out_dir={data_dir}", *extra, f"hydra.run.dir={run}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    for attempt in range(3):
        resume = ["train.resume=auto"] if attempt else []
        p = subprocess.Popen([sys.executable, *args, *resume], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        _wait_for(run / "ckpt.pt")
        time.sleep(rng.uniform(0.05, 0.6))
        p.kill()
        p.wait()
        torch.load(run / "ckpt.pt", weights_only=True)  # never torn
    r = cli(*args, "train.resume=auto")
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(run / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(run.glob(".*.tmp"))
    steps = [r["step"] for r in RunDir(run).read_metrics("train")]
    assert steps == list(range(1, 61))


@pytest.mark.slow
def test_sigterm_stops_a_sweep_with_one_line(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "train.py", "-m", *SMALL, f"data.out_dir={data_dir}", "train.max_iters=100000",
         "train.eval_interval=100000", "model.position=rope,alibi", f"hydra.sweep.dir={sweep}",
         "hydra.callbacks.sweep_summary.extrapolate=false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(sweep.glob("*/metrics.jsonl")):
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130 and "Traceback" not in err, err
    first = next(sweep.glob("*/summary.json")).parent
    assert RunDir(first).read_summary()["status"] == "interrupted"
    assert len(list(sweep.glob("*/summary.json"))) == 1  # the second job never started


class _Payload:
    """Pickles to a call that would create a marker file if any loader ran it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"format": "gptlab-checkpoint", "version": 1, "model": {}, "x": _Payload(marker)},
        tmp_path / "evil.pt",
    )
    (tmp_path / "junk.pt").write_bytes(b"junk" * 100)
    with pytest.raises(UserError, match="pickled Python objects, which could run code: refused"):
        load_run(tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a torch zip file"):
        load_run(tmp_path / "junk.pt")
    assert not marker.exists()


def test_a_writer_failing_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save raises RuntimeError (not OSError) when the disk fills: atomic_write names it ENOSPC."""
    from gptlab.rundir import files

    def torch_like_writer(tmp):
        Path(tmp).write_bytes(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 704 vs 598")

    class Full:
        f_bavail, f_frsize = 3, 4096

    with pytest.raises(RuntimeError, match="unexpected pos"):  # room left: a real error, passed on
        atomic_write(tmp_path / "a.pt", torch_like_writer)
    monkeypatch.setattr(files.os, "statvfs", lambda _: Full())
    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "a.pt", torch_like_writer)
    assert e.value.errno == errno.ENOSPC and e.value.filename.endswith("a.pt")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` for the block (needs root to mount: the test skips otherwise)."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.mark.slow
def test_disk_full_on_a_real_small_filesystem(tmp_path, data_dir):
    """A 160 KB tmpfs (needs root to mount; skipped otherwise): one line, summary says failed, exit 2."""
    with small_tmpfs(tmp_path / "full", "160k") as full:
        r = cli("train.py", *SMALL, f"data.out_dir={data_dir}", f"hydra.run.dir={full / 'run'}")
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and "no space left on the device" in line and "overwrite=true" in line
        assert RunDir(full / "run").read_summary()["status"] == "failed"
        assert not list((full / "run").glob(".*.tmp"))


def test_disk_full_while_preparing_on_a_real_small_filesystem(tmp_path):
    """datasets wraps ENOSPC in its own error: still one line, and no half-prepared folder is left."""
    with small_tmpfs(tmp_path / "full", "600k") as full:
        r = cli("-m", "data", f"data.out_dir={full / 'prep'}")
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and f"no space left on the device (writing {full / 'prep'}" in line
        assert not (full / "prep").exists()


def test_a_full_disk_is_found_behind_a_library_s_own_error():
    from gptlab.errors import disk_full_cause

    class LibraryError(Exception):
        pass

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x")
        except OSError as inner:
            raise LibraryError("An error occurred while generating the dataset") from inner
    except LibraryError as e:
        assert disk_full_cause(e).filename == "/x"
    assert disk_full_cause(RuntimeError("other")) is None
    assert disk_full_cause(OSError(errno.EACCES, "denied")) is None


@pytest.mark.slow
def test_a_run_refused_at_start_up_leaves_no_run_folder(tmp_path, data_dir):
    """Hydra makes the run folder (.hydra/, train.log) before train.py can check a value: it goes again."""
    r = cli("train.py", *SMALL, f"data.out_dir={data_dir}", "seed=abc", f"hydra.run.dir={tmp_path / 'r'}")
    assert r.returncode == 2 and not (tmp_path / "r").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    r = cli("train.py", *SMALL, f"data.out_dir={data_dir}", "model.n_layer=0", f"hydra.run.dir={mine}")
    assert r.returncode == 2 and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------- first day
def test_a_run_dir_no_one_can_write_is_one_line_also_for_root(monkeypatch):
    """root passes os.access everywhere, yet cannot make a folder in /proc or /sys: one line, before Hydra."""
    from gptlab import cli

    monkeypatch.setattr(cli.os, "access", lambda *a, **k: True)  # what os.access answers root
    for value, needle in [("/proc/gptlab/run", "cannot make a folder in /proc"), ("/sys/x", "in /sys")]:
        with pytest.raises(UserError, match=needle):
            cli.check_overrides("config", [f"hydra.run.dir={value}"])
    with pytest.raises(UserError, match=r"hydra.sweep.dir=/proc/s: cannot make a folder in /proc"):
        cli.check_overrides("config", ["-m", "hydra.sweep.dir=/proc/s"])


# Runs train.py, first sending SIGINT to itself at one point of its start-up: when `numpy` is first imported
# (torch imports it under a broad except), or as the command line is checked.
CTRL_C_AT = r"""
import os, runpy, signal, sys
sys.path.insert(0, os.getcwd())
where = sys.argv.pop(1)
def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
class AtImport:
    def find_spec(self, name, path=None, target=None):
        if name == where:
            sys.meta_path.remove(self)
            ctrl_c()
if where == "check_overrides":
    from gptlab import cli
    check = cli.check_overrides
    def checking(*args):
        ctrl_c()
        return check(*args)
    cli.check_overrides = checking
else:
    sys.meta_path.insert(0, AtImport())
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["numpy", "check_overrides"])
def test_ctrl_c_at_a_point_of_start_up_is_one_line(tmp_path, data_dir, where):
    run = tmp_path / "run"
    r = cli("-c", CTRL_C_AT, where, *SMALL, f"data.out_dir={data_dir}", f"hydra.run.dir={run}")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 130 and r.stderr.strip() == "interrupted while starting; nothing was written"
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_soon_after_the_start_never_prints_a_traceback(tmp_path, data_dir, delay):
    """Ctrl-C at a few moments of train.py's start-up (imports, the command-line check, Hydra, set-up, the
    first steps on a busy machine): one line, exit 130 before training or 0 after a clean stop."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "train.py", *SMALL, f"data.out_dir={data_dir}", "train.max_iters=100000",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert "Traceback" not in err, err
    assert p.returncode in (0, 130), err


@pytest.mark.slow
def test_a_failing_sweep_job_is_one_line_and_the_others_finish(tmp_path, data_dir):
    """`-m model.n_kv_head=3,2` with 4 heads: job 0 cannot be built. Its `error:` line is printed when it fails,
    job 1 still trains, the summary lists both, and Hydra ends the sweep with exit status 1 and the message
    (no traceback)."""
    sweep = tmp_path / "sweep"
    r = cli("train.py", "-m", *SMALL, f"data.out_dir={data_dir}", "model.n_head=4", "model.n_kv_head=3,2",
            f"hydra.sweep.dir={sweep}", "hydra.callbacks.sweep_summary.extrapolate=false")  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: model.n_kv_head=3 must divide model.n_head=4")
    assert "(sweep job 0, " in errors[0]
    assert RunDir(sweep / "1").read_summary()["status"] == "finished"
    assert "| failed | 3 |" in r.stdout and "| finished | 2 |" in r.stdout


def test_a_start_that_fails_after_writing_its_config_can_be_run_again(tmp_path):
    """The data is prepared after config.yaml is written: a data error there removes what the start wrote,
    so the same command gives the same error again, not "already holds a run"."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = ["data=text_files", f"data.path={empty}", "data.tokenizer=char", f"data.out_dir={tmp_path / 'd'}"]
    for _ in range(2):
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=[*SMALL, *args])
        with pytest.raises(UserError, match="is empty; remove it or give it some text"):
            train(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()
