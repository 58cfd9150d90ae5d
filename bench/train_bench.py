"""Time to nanoGPT's validation loss on a CPU, with statistics; and step speed against nanoGPT at its shape.

    python bench/train_bench.py --nanogpt /path/to/nanoGPT --seeds 3      # the record: nanogpt, record, record_fp32
    python bench/train_bench.py --nanogpt /path/to/nanoGPT --only nanogpt same same_bf16   # step speed, same shape
    python bench/train_bench.py --probe "+recipe=record train.max_iters=180"  # steps to the target, no timing
    python bench/train_bench.py --smoke                                    # the whole path on a tiny budget

Data: ../shared/data/tinyshakespeare/input.txt (never committed), characters; the last 10% is val (gptlab's
split falls one character later than nanoGPT's). Both programs' data are prepared before any clock starts.

Runs (--only picks; default: nanogpt, record, record_fp32):
  nanogpt      nanoGPT's README CPU recipe: 4 layers, 4 heads, 128 wide, block 64, batch 12, 2000 iterations.
               Its seed is fixed (1337 in its train.py, not a global its configurator can override), so every
               repeat computes the same losses: repeats measure its wall-time variance only. Its last logged
               val loss (step 2000, 20 random batches) is the target.
  record       gptlab's time-to-loss recipe, configs/recipe/record.yaml (every recipe switch, Muon; 2 layers,
               192 wide, batch 32, 160 steps), dtype=auto (bf16 on CPUs with native bf16)
  record_fp32  the same forced to float32; Muon's Newton-Schulz stays in bf16 where optim.muon_ns_dtype=auto
               measures bf16 faster (a CPU with native bf16), so this is not all of what a CPU without it runs
  record_l4    the previous record: the same switches on the 4-layer tiny model, batch 12, 320 steps;
  record_l4_fp32  and in float32
  fast         the laptop defaults (model=tiny: RoPE, SwiGLU, RMSNorm, lr 2e-3), 700 steps, dtype=auto;
  fast_fp32    and in float32: the record before Muon
  same         gptlab on nanoGPT's identical shape and schedule, fp32 with sdpa (per-step speed against it)
  same_bf16    the same in bf16 autocast with the explicit attention path

Time to target (gptlab runs): the timed run trains as a user would (one evaluation, at the end, on 20 batches;
a log line every --every steps) and nothing else; the bench timestamps each log line as it arrives on the run's
stderr. A second, untimed run of the same command and seed keeps the weights every --every steps
(train.snapshots: each write costs 30-160 ms with its fsync, too much to time); each kept state's loss on the
full val split (every token once, in windows of block_size, float32) gives the first step at or below the
target (scanning back from the last kept state until one is SCAN_MARGIN = 0.1 above it). CPU training is deterministic, and the bench checks it: the untimed run's final full-val loss must
equal the timed run's to the last digit, or the line says it did not. The time to target is then the timed
run's log line at that step: "wall" from process start (start-up included, as a user waits), "loop" from
the first step (the run's own elapsed_s). nanoGPT reaches its target at its last step: its wall time is its
whole process, its loop time the sum of its logged iteration times.

Statistics: gptlab seed i (1337 + i) runs in round i beside nanoGPT's i-th repeat, the order rotated each
round. Means carry a 95% Student-t interval (scipy.stats.t, n - 1 degrees of freedom); a ratio to nanoGPT is
the geometric mean of the per-round ratios, its interval the t interval of the mean log ratio, exponentiated.
Run it on a quiet machine: a second busy core distorts every time. CPUs differ (an AVX2-only EPYC ran bf16 13x
slower than fp32): every line names the CPU it was measured on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gptlab.open_run import load_run  # noqa: E402
from gptlab.rundir.layout import RunDir  # noqa: E402
from gptlab.runtime.device import cpu_description  # noqa: E402
from gptlab.sweep.extrapolate import window_loss  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
# nanoGPT's last logged val loss after its 2000 steps (README: AVX-512 BF16 EPYC; also an AMX Xeon), the target
# when nanoGPT is not run
README_TARGET = 1.8857
EVERY = 10  # steps between log lines of a timed run and between kept states of its untimed twin
SCAN_MARGIN = 0.1  # the scan back from the last kept state stops at a loss this far above the target

NANOGPT_ARGS = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
# gptlab on nanoGPT's exact shape, architecture and schedule (learned positions, LayerNorm, GELU, no bias).
SAME = [
    "model=tiny",
    "model.position=learned",
    "model.norm=layernorm",
    "model.mlp=gelu",
    "model.bias=false",
    "train.batch_size=12",
    "train.max_iters=2000",
    "optim.lr=1e-3",
    "optim.min_lr=1e-4",
    "optim.warmup_iters=100",
    "optim.beta2=0.99",
]
# The laptop defaults: the tiny model (RoPE, SwiGLU, RMSNorm, explicit attention), AdamW at lr 2e-3, 700 steps.
FAST = ["model=tiny", "train.max_iters=700"]
# The time-to-loss record: configs/recipe/record.yaml (the search: docs/training.md, "Time to nanoGPT's loss").
RECORD = ["model=tiny", "+recipe=record"]
# The previous record: every switch (configs/recipe/all.yaml) on the tiny model's own shape, batch and schedule,
# Muon at 0.03, 320 steps (docs/training.md compares the two in bf16 and float32).
RECORD_L4 = ["model=tiny", "+recipe=all", "optim.muon_lr=0.03", "train.max_iters=320"]


@dataclass(frozen=True)
class Recipe:
    overrides: tuple[str, ...]
    to_target: bool = True  # measure the time to the target (an untimed twin run keeps states)


RECIPES = {
    "record": Recipe((*RECORD,)),
    "record_fp32": Recipe((*RECORD, "train.dtype=float32")),
    "record_l4": Recipe((*RECORD_L4,)),
    "record_l4_fp32": Recipe((*RECORD_L4, "train.dtype=float32")),
    "fast": Recipe((*FAST,)),
    "fast_fp32": Recipe((*FAST, "train.dtype=float32")),
    # fp32 with the fused attention, as nanoGPT runs (the tiny config's explicit path would let auto pick bf16)
    "same": Recipe((*SAME, "train.dtype=float32", "model.attn_impl=sdpa"), to_target=False),
    # bf16 autocast with the explicit attention path (faster than SDPA's bf16 backward on CPUs)
    "same_bf16": Recipe((*SAME, "train.dtype=bfloat16", "model.attn_impl=explicit"), to_target=False),
}
# --smoke: the record recipe on a 2-layer, 32-wide model for 30 steps on the embedded corpus, a loose target
SMOKE = (
    "model=tiny", "+recipe=record", "model.n_layer=2", "model.n_embd=32", "model.n_head=2",
    "model.block_size=32", "train.batch_size=8", "train.max_iters=30", "optim.warmup_iters=5",
)  # fmt: skip
SMOKE_TARGET = 3.7
SMOKE_EVERY = 5
ONLY_AT_END = 10**9  # train.eval_interval: a run evaluates at this multiple and at its last step
STEP_LINE = re.compile(r"^step\s+(\d+)/\d+ \|")  # gptlab/training/run_output.Progress's plain log line


# ------------------------------------------------------------------------------------------------ statistics
def mean_ci(xs: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% Student-t interval (nan for fewer than two values)."""
    from scipy import stats

    n = len(xs)
    m = statistics.fmean(xs)
    if n < 2:
        return m, math.nan
    return m, float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(xs) / math.sqrt(n)


def ratio_ci(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Paired ratios num[i] / den[i]: the geometric mean and its 95% interval (t interval of the mean log)."""
    m, h = mean_ci([math.log(a / b) for a, b in zip(num, den, strict=True)])
    return math.exp(m), math.exp(m - h), math.exp(m + h)


# ------------------------------------------------------------------------------------------------ full val
def val_windows(n_tokens: int, block_size: int) -> np.ndarray:
    """Start offsets of windows of block_size + 1 tokens that predict every val token once (the first aside)."""
    return np.arange(0, n_tokens - block_size, block_size)


def full_val_loss(model, tokens: np.ndarray, block_size: int) -> float:
    """Mean next-token loss over the whole val split, in windows of ``block_size`` (float32, no autocast)."""
    with torch.no_grad():
        loss, _ = window_loss(model, tokens, val_windows(len(tokens), block_size), block_size, "cpu")
    return loss


def val_tokens(prepared: Path) -> np.ndarray:
    from gptlab.data import load_meta

    return np.memmap(prepared / "val.bin", dtype=np.dtype(load_meta(prepared)["dtype"]), mode="r")


def run_val_loss(path: Path, tokens: np.ndarray) -> float:
    run = load_run(path)
    return full_val_loss(run.model, tokens, run.model.config.block_size)


def first_at_target(run_dir: Path, tokens: np.ndarray, target: float) -> tuple[int | None, dict[int, float]]:
    """The first kept step after step 0 whose full-val loss is <= target (None if none), scanning back from
    the last state until a loss is SCAN_MARGIN above the target; and the losses it evaluated, by step."""
    run, losses, first = RunDir(run_dir), {}, None
    for step in reversed([s for s in run.snapshot_steps() if s > 0]):
        losses[step] = run_val_loss(run.snapshot(step), tokens)
        if losses[step] <= target:
            first = step
        elif losses[step] > target + SCAN_MARGIN:
            break
    return first, losses


# ------------------------------------------------------------------------------------------------ gptlab
def data_args(prepared: Path, smoke: bool) -> list[str]:
    if smoke:  # the corpus shipped in the repo: runs anywhere
        return ["data=shakespeare_char", f"data.out_dir={prepared}"]
    return [
        "data=text_files",
        f"data.path={CORPUS}",
        "data.name=tinyshakespeare_char",
        "data.tokenizer=char",
        f"data.out_dir={prepared}",
    ]


def train_cmd(overrides: list[str], data: list[str], seed: int, every: int, run_dir: Path) -> list[str]:
    """train.py as the bench runs it: one evaluation, at the last step (20 batches, as nanoGPT's), a log line
    every ``every`` steps, no text sample."""
    return [
        sys.executable, "train.py", *data, *overrides, f"seed={seed}",
        f"train.eval_interval={ONLY_AT_END}", "train.eval_iters=20", f"train.log_interval={every}",
        "train.sample_tokens=0", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, dict[int, float], str]:
    """Run ``cmd``; its wall time, the arrival time (from process start) of each step's log line on stderr,
    and its stdout. Exits with the tail of stderr if it fails."""
    arrivals, tail = {}, deque(maxlen=30)
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            now = time.perf_counter() - t0
            m = STEP_LINE.match(line)
            if m:
                arrivals[int(m[1])] = now
            else:
                tail.append(line)
        rc = p.wait()
        wall = time.perf_counter() - t0
        out.seek(0)
        stdout = out.read()
    if rc != 0:
        sys.exit(f"{shlex.join(cmd[1:])} failed:\n{''.join(tail)[-2000:]}")
    return wall, arrivals, stdout


@dataclass
class Result:
    label: str
    seed: int
    wall_s: float  # the whole process
    loop_s: float  # the training loop (gptlab: elapsed_s at the last step; nanoGPT: its iteration times)
    ms_per_iter: float
    iters: int
    dtype: str
    val_loss: float  # the run's own last logged evaluation (20 batches)
    full_val: float | None = None  # the final weights on the full val split
    arrivals: dict = field(default_factory=dict)
    elapsed: dict = field(default_factory=dict)  # step -> elapsed_s (gptlab)
    run_dir: Path | None = None
    cmd: list = field(default_factory=list)
    # time to target (filled later)
    target_step: int | None = None
    target_wall_s: float | None = None
    target_loop_s: float | None = None
    twin_matches: bool | None = None


def run_ours(label: str, recipe: Recipe, seed: int, ctx: dict) -> Result:
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-", dir=ctx["tmp"]))
    cmd = train_cmd(list(recipe.overrides), ctx["data"], seed, ctx["every"], run_dir)
    wall, arrivals, _ = timed(cmd, ROOT, ctx["env"])
    run = RunDir(run_dir)
    train_rows, evals = run.read_metrics("train"), run.read_metrics("eval")
    last = train_rows[-1]
    return Result(
        label=label, seed=seed, wall_s=wall, loop_s=last["elapsed_s"],
        ms_per_iter=statistics.median(r["ms_per_iter"] for r in train_rows[1:] or train_rows),
        iters=last["step"], dtype=run.read_summary()["dtype"], val_loss=evals[-1]["val_loss"],
        full_val=run_val_loss(run.ckpt, ctx["val"]), arrivals=arrivals,
        elapsed={r["step"]: r["elapsed_s"] for r in train_rows}, run_dir=run_dir, cmd=cmd,
    )  # fmt: skip


def probe(cmd: list[str], ctx: dict, target: float) -> dict:
    """The untimed twin of a timed run: the same command keeping the weights every ``every`` steps; the first
    kept step at or below the target and the final state's full-val loss."""
    every, run_dir = ctx["every"], Path(tempfile.mkdtemp(prefix="bench-probe-", dir=ctx["tmp"]))
    cmd = [
        *cmd[:-1],
        f"train.snapshots=every:{every}",
        "train.snapshots_max=100000",
        f"hydra.run.dir={run_dir}",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=ctx["env"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{shlex.join(cmd[1:])} failed:\n{r.stderr[-2000:]}")
    first, losses = first_at_target(run_dir, ctx["val"], target)
    final = losses[max(losses)]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"first": first, "final": final, "losses": losses}


def time_to_target(res: Result, twin: dict) -> None:
    """Fill in the timed run's time to the target from its untimed twin's first step at or below it."""
    res.twin_matches = twin["final"] == res.full_val
    res.target_step = twin["first"]
    if res.target_step is not None:
        res.target_wall_s = res.arrivals.get(res.target_step)
        res.target_loop_s = res.elapsed.get(res.target_step)


# ------------------------------------------------------------------------------------------------ nanoGPT
def prepare_nanogpt(checkout: Path, tmp: Path) -> Path:
    """A working folder for nanoGPT outside its checkout (which is only read): its configurator.py and its
    shakespeare_char data prepared from our copy of the corpus."""
    work = tmp / "nanogpt"
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    shutil.copy(checkout / "configurator.py", work)
    shutil.copy(checkout / "data" / "shakespeare_char" / "prepare.py", data)
    shutil.copy(CORPUS, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return work


def run_nanogpt(checkout: Path, work: Path, env: dict, round_: int) -> Result:
    out_dir = work / f"out{round_}"
    cmd = [
        sys.executable, str(checkout / "train.py"), str(checkout / "config" / "train_shakespeare_char.py"),
        *NANOGPT_ARGS, f"--out_dir={out_dir}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"nanoGPT failed:\n{r.stderr[-2000:]}")
    evals = re.findall(r"step (\d+): train loss [0-9.]+, val loss ([0-9.]+)", r.stdout)
    times = [
        (int(i), float(t)) for i, t in re.findall(r"iter (\d+): loss [0-9.]+, time ([0-9.]+)ms", r.stdout)
    ]
    return Result(
        label="nanogpt", seed=1337, wall_s=wall, loop_s=sum(t for _, t in times) / 1000,
        # per-iteration times, skipping iterations that include an evaluation (every 250)
        ms_per_iter=statistics.median(t for i, t in times if i % 250 != 0),
        iters=int(evals[-1][0]), dtype="float32", val_loss=float(evals[-1][1]), run_dir=out_dir, cmd=cmd,
    )  # fmt: skip


def nanogpt_full_val(checkout: Path, out_dir: Path, tokens: np.ndarray) -> tuple[float, int]:
    """nanoGPT's saved weights (it saves at an evaluation that improved the val loss) on the full val split;
    and the step they are from."""
    from bench.sample_bench import load_nanogpt

    mod = load_nanogpt(str(checkout))
    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    with contextlib.redirect_stdout(io.StringIO()):  # its parameter count
        model = mod.GPT(mod.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    full_logits = lambda x: (model(x, x.contiguous())[0], None)  # noqa: E731  (targets: every position)
    with torch.no_grad():
        T = model.config.block_size
        loss, _ = window_loss(full_logits, tokens, val_windows(len(tokens), T), T, "cpu")
    return loss, int(ckpt["iter_num"])


# ------------------------------------------------------------------------------------------------ output
def fmt_ci(m: float, h: float, digits: int = 1) -> str:
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def fmt_ratio(r: tuple[float, float, float]) -> str:
    g, lo, hi = r
    return f"{g:.3f}×" if math.isnan(lo) else f"{g:.3f}× [{lo:.3f}, {hi:.3f}]"


def report(results: dict[str, list[Result]], target: float, target_note: str, cpu: str, every: int) -> None:
    print(f"\ntarget: val loss <= {target:.4f} ({target_note})")
    print(
        f"time to target: the first step, in steps of {every}, whose weights have full-val loss <= target "
        "(an untimed twin run keeps them); wall = from process start, loop = from the first step"
    )
    n = results.get("nanogpt")
    head = f"{'run':11s} {'n':>2s} {'wall s':>13s} {'loop s':>13s} {'ms/iter':>8s} {'val (log)':>9s} {'full val':>15s}"
    print(f"\n{head} {'to target: step':>15s} {'wall s':>13s} {'loop s':>13s}   CPU")
    for label, rs in results.items():
        wall, loop = mean_ci([r.wall_s for r in rs]), mean_ci([r.loop_s for r in rs])
        full = [r.full_val for r in rs if r.full_val is not None]
        full_s = fmt_ci(*mean_ci(full), digits=4) if full else "-"
        reached = [r for r in rs if r.target_step is not None and r.target_wall_s is not None]
        if label == "nanogpt":
            tt = (f"{rs[0].iters} (all)", fmt_ci(*wall), fmt_ci(*loop))
        elif not RECIPES[label].to_target:
            tt = ("not measured", "-", "-")
        elif len(reached) < len(rs):
            tt = (f"reached {len(reached)}/{len(rs)}", "-", "-")
        else:
            steps = mean_ci([r.target_step for r in rs])
            tt = (
                fmt_ci(*steps, digits=0),
                fmt_ci(*mean_ci([r.target_wall_s for r in rs])),
                fmt_ci(*mean_ci([r.target_loop_s for r in rs])),
            )
        print(
            f"{label:11s} {len(rs):2d} {fmt_ci(*wall):>13s} {fmt_ci(*loop):>13s} "
            f"{statistics.median(r.ms_per_iter for r in rs):8.1f} {statistics.fmean(r.val_loss for r in rs):9.4f} "
            f"{full_s:>15s} {tt[0]:>15s} {tt[1]:>13s} {tt[2]:>13s}   {rs[0].dtype}, {cpu}"
        )
    for label, rs in results.items():
        if label == "nanogpt" or not RECIPES[label].to_target:
            continue
        mismatched = [r.seed for r in rs if r.twin_matches is False]
        if mismatched:
            print(
                f"note: {label} seed(s) {mismatched}: the untimed twin's final loss differs from the timed run's"
            )
        missed = [r.seed for r in rs if r.target_step is None]
        if missed:
            print(f"{label}: target not reached by seed(s) {missed} [{cpu}]")
    if not n:
        return
    print(f"\nratios to nanoGPT (geometric mean over rounds, 95% t interval) [{cpu}]:")
    for label, rs in results.items():
        if label == "nanogpt":
            continue
        pairs = list(zip(rs, n, strict=False))
        parts = [
            f"ms/iter {fmt_ratio(ratio_ci([a.ms_per_iter for a, _ in pairs], [b.ms_per_iter for _, b in pairs]))}"
        ]
        if RECIPES[label].to_target and all(a.target_wall_s is not None for a, _ in pairs):
            tw = ratio_ci([a.target_wall_s for a, _ in pairs], [b.wall_s for _, b in pairs])
            tl = ratio_ci([a.target_loop_s for a, _ in pairs], [b.loop_s for _, b in pairs])
            parts.insert(0, f"time to target: wall {fmt_ratio(tw)}, loop {fmt_ratio(tl)}")
        parts.append(
            f"whole run wall {fmt_ratio(ratio_ci([a.wall_s for a, _ in pairs], [b.wall_s for _, b in pairs]))}"
        )
        print(f"  {label:11s} " + "; ".join(parts) + f"  ({len(pairs)} rounds, {rs[0].dtype})")


# ------------------------------------------------------------------------------------------------ main
def prepare_ours(data: list[str], env: dict) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "data", *data], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        sys.exit(f"preparing the data failed:\n{r.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to run side by side (only read)")
    ap.add_argument("--seeds", "--repeats", type=int, default=1, help="rounds: gptlab seeds 1337, 1338, ...")
    ap.add_argument(
        "--only", choices=["nanogpt", *RECIPES], nargs="+", action="extend", help="run only these"
    )
    ap.add_argument(
        "--target", type=float, help=f"val loss to reach (default: nanoGPT's, else {README_TARGET})"
    )
    ap.add_argument("--every", type=int, default=EVERY, help="steps between log lines / kept states")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: torch's choice)")
    ap.add_argument(
        "--probe", action="append", metavar="OVERRIDES",
        help="untimed: the steps the tiny model needs to reach the target with these train.py overrides "
        "(e.g. '+recipe=record train.max_iters=180'; repeatable)",
    )  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="a tiny budget on the embedded corpus, no nanoGPT")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    args = ap.parse_args()
    if args.seeds < 1:
        sys.exit("--seeds must be >= 1")
    if args.smoke:
        args.nanogpt, args.seeds, args.every = None, 1, SMOKE_EVERY
        args.target = args.target or SMOKE_TARGET
        args.only = ["record"]
        RECIPES["record"] = Recipe(SMOKE)
    elif not CORPUS.exists():
        sys.exit(f"missing {CORPUS}")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="train-bench-"))
    prepared = tmp / "data"
    data = data_args(prepared, args.smoke)
    prepare_ours(data, env)
    ctx = {"tmp": tmp, "data": data, "env": env, "every": args.every, "val": val_tokens(prepared)}
    cpu = cpu_description()
    threads = env.get("OMP_NUM_THREADS", f"torch default {torch.get_num_threads()}")
    print(
        f"CPU: {cpu} | threads: {threads} | torch {torch.__version__} | {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    try:
        if args.probe:
            run_probes(args, ctx, cpu)
        else:
            run_bench(args, ctx, cpu)
    finally:
        if args.keep:
            print(f"run directories kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_probes(args, ctx: dict, cpu: str) -> None:
    target = args.target or README_TARGET
    print(f"steps to val loss <= {target:.4f} on the full val split (states kept every {args.every} steps):")
    for spec in args.probe:
        overrides = ["model=tiny", *shlex.split(spec)]
        for i in range(args.seeds):
            cmd = train_cmd(overrides, ctx["data"], 1337 + i, args.every, ctx["tmp"] / "unused")
            t0 = time.perf_counter()
            p = probe(cmd, ctx, target)
            first = p["first"] if p["first"] is not None else "not reached"
            print(
                f"  {spec!r} seed {1337 + i}: steps to target {first}, final full val {p['final']:.4f} "
                f"({time.perf_counter() - t0:.0f}s) [{cpu}]",
                flush=True,
            )


def run_bench(args, ctx: dict, cpu: str) -> None:
    which = args.only or (["nanogpt", "record", "record_fp32"] if args.nanogpt else ["record", "record_fp32"])
    if "nanogpt" in which and not args.nanogpt:
        sys.exit("--only nanogpt needs --nanogpt <checkout>")
    work = prepare_nanogpt(args.nanogpt, ctx["tmp"]) if "nanogpt" in which else None
    results: dict[str, list[Result]] = {label: [] for label in which}
    for i in range(args.seeds):
        order = which[i % len(which) :] + which[: i % len(which)]  # rotated each round
        for label in order:
            if label == "nanogpt":
                res = run_nanogpt(args.nanogpt, work, ctx["env"], i)
            else:
                res = run_ours(label, RECIPES[label], 1337 + i, ctx)
            results[label].append(res)
            full = f"full val {res.full_val:.4f}  " if res.full_val is not None else ""
            print(
                f"  round {i + 1}: {label:11s} val {res.val_loss:.4f}  {full}wall {res.wall_s:6.1f}s  "
                f"loop {res.loop_s:6.1f}s  {res.ms_per_iter:6.1f} ms/it  ({res.iters} it, {res.dtype})  [{cpu}]",
                flush=True,
            )
    if "nanogpt" in results:
        logged = {r.val_loss for r in results["nanogpt"]}
        target = args.target or results["nanogpt"][0].val_loss
        note = f"nanoGPT's last logged val loss here, {len(logged)} distinct value(s) over its repeats"
        full, step = nanogpt_full_val(args.nanogpt, results["nanogpt"][0].run_dir, ctx["val"])
        results["nanogpt"][0].full_val = full
        note += f"; its weights saved at step {step} have full-val loss {full:.4f}"
    else:
        target = args.target or README_TARGET
        note = "given" if args.target else "nanoGPT's on the AVX-512 BF16 EPYC, README; not run here"
    # the untimed twins (after all timing: they cannot disturb it)
    for label, rs in results.items():
        if label == "nanogpt" or not RECIPES[label].to_target:
            continue
        for res in rs:
            time_to_target(res, probe(res.cmd, ctx, target))
    report(results, target, note, cpu, args.every)
    if args.keep:
        for label, rs in results.items():
            for r in rs:
                print(f"{label} seed {r.seed}: {r.run_dir}")


if __name__ == "__main__":
    main()
