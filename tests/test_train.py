"""End-to-end tests of train.py: outputs, bit-exact resume, NaN stop, signals, DDP on gloo, CLI errors."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import cfg_with, small_train

from gptlab.errors import UserError
from gptlab.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
# A very small model and budget: every test here trains for a few seconds at most.
SMALL = small_train(max_iters=12)  # cfg_with's default


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The embedded corpus prepared once for the module (char level)."""
    return str(tmp_path_factory.mktemp("prepared") / "shakespeare_char")


def rows(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_run_writes_every_output(tmp_path, data_dir):
    summary = train(cfg_with(data_dir), tmp_path / "run", overrides=["x=1"])
    run = tmp_path / "run"
    for name in ("config.yaml", "ckpt.pt", "best.pt", "metrics.jsonl", "summary.json", "loss.png"):
        assert (run / name).is_file(), name
    assert summary["status"] == "finished" and summary["step"] == 12 and summary["overrides"] == ["x=1"]
    train_rows, eval_rows = rows(run, "train"), rows(run, "eval")
    assert [r["step"] for r in train_rows] == list(range(1, 13))
    assert [r["step"] for r in eval_rows] == [4, 8, 12]
    for r in train_rows + eval_rows:
        assert {"step", "train_loss", "lr", "tokens_per_s", "elapsed_s"} <= set(r)
    assert all("val_loss" in r for r in eval_rows)
    best = min(r["val_loss"] for r in eval_rows)
    assert summary["best_val_loss"] == pytest.approx(best)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["best_val_loss"] == pytest.approx(best)
    assert ckpt["tokenizer"]["tokenizer"] == "char" and ckpt["step"] in (4, 8, 12)
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    # a finished run is skipped by resume=auto (what an interrupted sweep re-run relies on)
    again = train(cfg_with(data_dir, "train.resume=auto"), run)
    assert again["status"] == "finished" and len(rows(run, "train")) == 12


@pytest.mark.parametrize("optim", ["adamw", "muon"])
def test_resume_is_bit_exact(tmp_path, data_dir, optim):
    """N steps straight == N/2 steps, stop, resume, N/2 steps: identical losses and weights (CPU).
    With optim=muon the checkpoint holds both optimizers' states (Muon's momentum, AdamW's moments)."""
    extra = ["model.dropout=0.1", f"optim={optim}"]  # dropout makes the torch RNG state matter too
    train(cfg_with(data_dir, *extra), tmp_path / "straight")
    first = train(cfg_with(data_dir, *extra, "train.stop_after_iters=6"), tmp_path / "resumed")
    assert first["status"] == "interrupted" and first["step"] == 6
    # a hard kill after the checkpoint can leave rows for steps the resumed run will log again
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 7, "train_loss": 9.9}) + "\n")
    train(cfg_with(data_dir, *extra, "train.resume=true"), tmp_path / "resumed")
    a, b = rows(tmp_path / "straight", "train"), rows(tmp_path / "resumed", "train")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_loss"] for r in rows(tmp_path / "straight", "eval")] == [
        r["val_loss"] for r in rows(tmp_path / "resumed", "eval")
    ]
    wa = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_threads_null_counts_every_token_of_the_step(tmp_path, data_dir, monkeypatch):
    """train.threads=null gives a step one thread per FLOPS_PER_THREAD of its work, all batch_size * block_size
    tokens of it: on an idle 2-core machine the tiny shape's step (12 x 64 tokens, ~4 GFLOP) gets both cores and
    the test model's (4 x 32 tokens, ~24 MFLOP) one. Counting one token per sequence gave the tiny step one."""
    from gptlab.runtime.device import FLOPS_PER_THREAD

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("gptlab.runtime.device.cpu_load", lambda: 0.0)
    monkeypatch.setattr("gptlab.runtime.device._default_threads", lambda: 2)
    tiny = ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=64", "train.batch_size=12"]  # fmt: skip
    for i, shape in enumerate(([], tiny)):
        train(cfg_with(data_dir, *shape, "train.eval_iters=1", max_iters=1), tmp_path / str(i))
    # 6 FLOPs per weight and token (the tiny model: 0.8M weights in matmuls) against FLOPS_PER_THREAD
    assert 6 * 0.79e6 * 12 * 64 > 2 * FLOPS_PER_THREAD > 6 * 30e3 * 4 * 32
    assert calls == [1, 2]


def test_resume_without_checkpoint_is_one_clear_error(tmp_path, data_dir):
    with pytest.raises(UserError, match="no ckpt.pt"):
        train(cfg_with(data_dir, "train.resume=true"), tmp_path / "empty")


def test_a_mistyped_override_on_resume_is_one_line(tmp_path, data_dir):
    """A resume may raise train.max_iters; a mistyped value is checked with the rest of the resumed config
    (training.config.RunConfig), one line, before anything is written (it used to reach int(): a traceback)."""
    run = tmp_path / "run"
    train(cfg_with(data_dir, "train.stop_after_iters=4"), run)
    before = (run / "summary.json").read_bytes()
    more = ["train.resume=true", "train.max_iters=abc"]
    with pytest.raises(UserError) as e:
        train(cfg_with(data_dir, *more), run, overrides=more)
    assert str(e.value) == "train.max_iters must be an integer, got 'abc'"
    assert (run / "summary.json").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from gptlab.model import GPT

    calls = {"n": 0}
    original = GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 9:  # the 10th training step goes bad
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(UserError, match="loss became nan at step 9"):
        train(cfg_with(data_dir), tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 8  # the last evaluation before the bad step
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def _cli(args, **kw):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, data_dir):
    for args, needle in [
        (["train.resume=maybe"], "train.resume must be"),
        (["model.position=absolute"], "position"),
        (["model.n_head=3"], "n_head"),
        (["model.nonexistent=1"], "nonexistent"),
    ]:
        r = _cli([*SMALL, f"data.out_dir={data_dir}", f"hydra.run.dir={tmp_path / 'bad'}", *args])
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr, r.stderr
        assert needle in r.stderr, (args, r.stderr)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, data_dir):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    p = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            *SMALL,
            f"data.out_dir={data_dir}",
            "train.max_iters=100000",
            "train.eval_interval=100000",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in err
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == summary["step"] > 0
    r = _cli(
        [
            *SMALL,
            f"data.out_dir={data_dir}",
            f"train.max_iters={summary['step'] + 3}",
            "train.resume=true",
            f"hydra.run.dir={run}",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tmp_path, data_dir):
    """torchrun with 2 CPU processes (gloo): trains to the end, only rank 0 writes metrics and checkpoints."""
    train(cfg_with(data_dir, "train.max_iters=1"), tmp_path / "warm")  # prepare the data once, single process
    run = tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "train.py",
            *SMALL,
            f"data.out_dir={data_dir}",
            "train.max_iters=6",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2
    assert len(rows(run, "train")) == 6  # one writer: rank 0
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] == 6


@pytest.mark.slow
def test_torchrun_with_one_process_trains_through_ddp_and_resumes(tmp_path, data_dir):
    """torchrun --nproc_per_node=1 joins a process group of one (gloo here, NCCL on a GPU) and wraps the model
    in DDP: the path of many GPUs, checkable on one; a stop and a resume under torchrun finish the run."""
    train(cfg_with(data_dir, "train.max_iters=1"), tmp_path / "warm")
    run = tmp_path / "ddp1"
    r = torchrun_one(data_dir, run, "train.max_iters=6", "train.stop_after_iters=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    r = torchrun_one(data_dir, run, "train.max_iters=6", "train.resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 1 and summary["step"] == 6
    assert [r["step"] for r in rows(run, "train")] == list(range(1, 7))


def torchrun_one(data_dir, run, *args, timeout=300):
    """``torchrun --standalone --nproc_per_node=1 train.py`` on the SMALL model in ``run`` (also used by
    tests/test_cuda.py)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train.py"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, *SMALL, f"data.out_dir={data_dir}", f"hydra.run.dir={run}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_init_distributed_joins_a_group_only_under_torchrun(monkeypatch):
    from gptlab.training.ddp import init_distributed

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert not init_distributed("cpu").enabled
    monkeypatch.setenv("WORLD_SIZE", "1")  # set by some schedulers without torchrun: still one plain process
    monkeypatch.setenv("RANK", "0")
    assert not init_distributed("cpu").enabled


def test_float16_trains_through_the_gradient_scaler(tmp_path, data_dir):
    """float16 autocast uses a GradScaler: its state is checkpointed, and gradients are unscaled before
    clipping (the logged grad norm is the true one, not 2**16 times it)."""
    fp32 = train(cfg_with(data_dir, "train.dtype=float32", "train.max_iters=4"), tmp_path / "fp32")
    fp16 = train(cfg_with(data_dir, "train.dtype=float16", "train.max_iters=4"), tmp_path / "fp16")
    assert fp32["status"] == fp16["status"] == "finished" and fp16["dtype"] == "float16"
    ckpt = torch.load(tmp_path / "fp16" / "ckpt.pt", weights_only=True)
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 1  # the scaler ran (init scale 2**16)
    assert torch.load(tmp_path / "fp32" / "ckpt.pt", weights_only=True)["scaler"] is None
    g32 = [r["grad_norm"] for r in rows(tmp_path / "fp32", "train")]
    g16 = [r["grad_norm"] for r in rows(tmp_path / "fp16", "train")]
    assert g16[0] == pytest.approx(g32[0], rel=0.05)
    l32 = [r["train_loss"] for r in rows(tmp_path / "fp32", "train")]
    l16 = [r["train_loss"] for r in rows(tmp_path / "fp16", "train")]
    assert l16 == pytest.approx(l32, rel=0.01) and l16[-1] < l16[0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_training_step_reads_nothing_off_the_device(tmp_path, data_dir, monkeypatch, dtype):
    """Between log steps the loop never makes the host wait for the device: no .item(), bool(), float(),
    .tolist() or .cpu() of a tensor inside train_step (the loss, grad norm and NaN check stay on the device
    and are read at log, evaluation and checkpoint steps). float16: the gradient scaler hands its overflow
    flag to the fused AdamW instead of reading it. Checked on the CPU by spying on every read."""
    import gptlab.training.loop as loop

    inside, reads = [False], []
    step = loop.train_step

    def watched(s):
        inside[0] = True
        try:
            step(s)
        finally:
            inside[0] = False

    monkeypatch.setattr(loop, "train_step", watched)
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            if inside[0]:
                reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    cfg = cfg_with(data_dir, "train.max_iters=6", "train.log_interval=3", f"train.dtype={dtype}")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["step"] == 6
    assert reads == []
    assert [r["step"] for r in rows(tmp_path / "run", "train")] == [3, 6]


def test_deterministic_option_turns_on_deterministic_kernels(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        summary = train(cfg_with(data_dir, "train.deterministic=true", "train.max_iters=2"), tmp_path / "run")
        assert summary["status"] == "finished"
        assert torch.are_deterministic_algorithms_enabled()
        # strict, not warn_only: only then does the flash attention backward pick its deterministic algorithm
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_summary_tokens_per_s_is_the_run_average_without_warmup_or_evaluation(
    tmp_path, data_dir, monkeypatch, capsys
):
    """On a fake clock: the first step of each start takes 100 s (compile), each evaluation 50 s, the last
    step 0.1 s. summary.json and the done line report the run's average over the other steps, also across a
    resume; the last window alone (0.1 s a step) would claim 10x."""
    import types

    import gptlab.training.loop as loop
    import gptlab.training.throughput as throughput

    clock = [0.0]
    monkeypatch.setattr(throughput, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    step_s = {1: 100.0, 7: 100.0, 12: 0.1}  # steps 1 and 7 start a run (7: the resume); the rest 1 s
    real_step, real_eval = loop.train_step, loop.evaluate

    def timed_step(s):
        real_step(s)
        clock[0] += step_s.get(s.step, 1.0)

    def timed_eval(s):
        clock[0] += 50.0
        return real_eval(s)

    monkeypatch.setattr(loop, "train_step", timed_step)
    monkeypatch.setattr(loop, "evaluate", timed_eval)
    tokens_per_step = 4 * 32  # SMALL: batch 4 x block 32
    first = train(cfg_with(data_dir, "train.stop_after_iters=6"), tmp_path / "run")
    assert first["timed_steps"] == 5 and first["tokens_per_s"] == pytest.approx(tokens_per_step / 1.0)
    capsys.readouterr()
    summary = train(cfg_with(data_dir, "train.resume=true"), tmp_path / "run")
    timed = [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    expected = len(timed) * tokens_per_step / sum(step_s.get(k, 1.0) for k in timed)
    assert summary["timed_steps"] == len(timed) and summary["tokens_per_s"] == pytest.approx(expected)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["tokens_per_s"] == pytest.approx(expected)
    assert f"| {expected:,.0f} tokens/s (run average;" in capsys.readouterr().out
    last = rows(tmp_path / "run", "train")[-1]
    assert last["tokens_per_s"] == pytest.approx(tokens_per_step / 0.1)  # a train row keeps its own window


def _wandb_env(tmp_path):
    """The environment for a real wandb in a subprocess: no WANDB_MODE from the test settings, and wandb's
    own folders (settings, cache) under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[name] = str(tmp_path / "wandb_home" / name.lower())
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_wandb_offline_logs_a_run_and_a_resume_continues_it(tmp_path, data_dir):
    """wandb.mode=offline with the wandb installed: the run's offline files appear in <run>/wandb, and a resume
    logs to the same wandb run id (kept in wandb_id.txt)."""
    run = tmp_path / "run"
    env = _wandb_env(tmp_path)
    args = [*SMALL, f"data.out_dir={data_dir}", "wandb.mode=offline", f"hydra.run.dir={run}"]
    r = subprocess.run([sys.executable, "train.py", *args, "train.stop_after_iters=4"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert re.fullmatch(r"[a-z0-9]{8}", run_id)
    (first,) = (run / "wandb").glob("offline-run-*")
    assert first.name.endswith(f"-{run_id}") and (first / f"run-{run_id}.wandb").stat().st_size > 0
    more = ["train.resume=true", "train.stop_after_iters=null"]
    r = subprocess.run([sys.executable, "train.py", *args, *more], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (run / "wandb_id.txt").read_text().strip() == run_id
    assert re.search(rf"offline-run-\d+_\d+-{run_id}\b", r.stdout + r.stderr)  # the run wandb logs to
    assert {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")} == {run_id}
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_wandb_failing_to_start_is_one_line_and_the_same_command_works_again(tmp_path, data_dir, monkeypatch):
    """A failure inside wandb.init (here: raised on purpose, after wandb began writing) is one UserError, and
    the run folder Hydra made is left as it was found, so the same command then starts."""
    import wandb

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)  # what Hydra makes before train.py runs
    (run / ".hydra" / "config.yaml").write_text("{}\n")
    (run / "train.log").write_text("")

    def broken(**kw):
        (Path(kw["dir"]) / "wandb" / "offline-run-x").mkdir(parents=True)
        raise RuntimeError("boom")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.raises(UserError, match=r"wandb could not start in offline mode \(RuntimeError: boom\)"):
        train(cfg_with(data_dir, "wandb.mode=offline"), run)
    assert not run.exists()

    logged = []

    class FakeRun:
        def log(self, row, step):
            logged.append(step)

        def finish(self):
            logged.append("finish")

    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    summary = train(cfg_with(data_dir, "wandb.mode=offline"), run)
    assert summary["status"] == "finished" and logged[-1] == "finish" and 12 in logged


@pytest.mark.slow
def test_the_end_of_a_run_says_what_next_and_train_log_holds_its_lines(tmp_path, data_dir):
    """train.py (wandb disabled) names the architecture at the start; at the end, where loss.png is and the
    sample.py / heads.py commands for this run, runnable as printed (the run folder has a space in its name);
    <run>/train.log has the lines, with their time. wandb left nothing behind."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gptlab.cli import check_overrides

    run = tmp_path / "my run"
    model = ["model.n_head=4", "model.n_kv_head=2", "model.window=16", "model.position=alibi"]
    r = _cli([*SMALL, *model, f"data.out_dir={data_dir}", f"hydra.run.dir={run}", "train.sample_tokens=5"])
    assert r.returncode == 0, r.stderr[-3000:]
    start = next(ln for ln in r.stderr.splitlines() if ln.startswith("model: "))
    for part in ("2 layers", "4 heads / 2 KV heads (GQA)", "alibi positions", "window 16", "attn explicit"):
        assert part in start, start
    lines = r.stdout.splitlines()
    assert f"loss curves: {run / 'loss.png'}" in lines and (run / "loss.png").is_file()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("next: "))
    commands = [shlex.split(ln.removeprefix("next:").split("#")[0]) for ln in lines[first:]]
    (sample,) = [c for c in commands if c[1].endswith("sample.py")]
    (heads,) = [c for c in commands if c[1].endswith("heads.py")]
    s = subprocess.run([sys.executable, *sample[1:], "max_new_tokens=5"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert s.returncode == 0 and "1 x 5 tokens" in s.stderr, s.stderr
    assert OverridesParser.create().parse_override(heads[2]).value() == str(run)  # what Hydra reads back
    check_overrides("heads", heads[2:])  # and heads.py's config takes it
    log = (run / "train.log").read_text()
    assert re.search(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] model: 2 layers", log, re.M), log[:2000]
    for needle in ("step     12/12 | loss", "step 12: train loss", "done: 12 steps", "next: python"):
        assert needle in log, needle
    assert not (run / "wandb").exists() and not (run / "wandb_id.txt").exists()
