"""Time and peak memory of one attention layer: fused ``sdpa`` vs ``flex`` vs ``explicit`` softmax(QK^T)V.

    python bench/attention.py                       # CPU, T = 256 1024 4096, forward + backward
    python bench/attention.py --device cuda --dtype bfloat16 --seq 1024 4096 16384
    python bench/attention.py --position alibi      # a score bias: sdpa gets a materialised mask, flex does not
    python bench/attention.py --no-backward         # forward only (on a CPU the only way flex runs)
    python bench/attention.py --small               # smoke run: T = 32, 32 wide, 2 heads, one repeat

torch has no FlexAttention backward on a CPU: there a forward + backward table leaves flex out (say
``--no-backward`` to include it). On a CPU flex is torch's unfused reference implementation, so its CPU
figures say nothing about the fused GPU kernel (bench/gpu_bench.py measures that).

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` above the inputs; on CPU each measurement runs
in a fresh subprocess and reports the peak resident set size (Linux VmHWM, reset through /proc/self/clear_refs)
above the resident size just before the timed calls. The machine may be busy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gptlab.errors import UserError, exit_on_user_error  # noqa: E402
from gptlab.model.attention import CausalSelfAttention  # noqa: E402
from gptlab.model.config import GPTConfig  # noqa: E402
from gptlab.model.positions import build_position  # noqa: E402
from gptlab.runtime.device import cpu_description  # noqa: E402

FULL = {"seq": [256, 1024, 4096], "n_embd": 384, "n_head": 6, "repeats": 3}
SMALL = {"seq": [32], "n_embd": 32, "n_head": 2, "repeats": 1}  # --small


def _proc_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def measure(args, impl: str, T: int) -> dict:
    """Median seconds per call and peak extra memory (MiB) of one attention layer at length T."""
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfg = GPTConfig(
        n_embd=args.n_embd, n_head=args.n_head, n_kv_head=args.n_kv_head, position=args.position,
        attn_impl=impl, block_size=max(T, 1), n_layer=1,
    )  # fmt: skip
    attn = CausalSelfAttention(cfg, 0).to(dev, dtype)
    pos = build_position(cfg).to(dev)
    x = torch.randn(args.batch, T, args.n_embd, device=dev, dtype=dtype, requires_grad=args.backward)

    def step():
        y = attn(x, pos)
        if args.backward:
            y.float().square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    ctx = torch.enable_grad() if args.backward else torch.no_grad()
    with ctx:
        step()  # warm-up (kernel selection, allocator)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
            base = _proc_kb("VmRSS:") * 1024
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _proc_kb("VmHWM:") * 1024
    return {"impl": impl, "T": T, "s": statistics.median(times), "mib": max(0, peak - base) / 2**20}


def run_one(args, impl: str, T: int) -> dict:
    if args.device != "cpu":
        return measure(args, impl, T)
    # CPU: a fresh process per point, so one point's peak RSS cannot hide another's
    cmd = [sys.executable, __file__, "--_worker", impl, str(T)] + args.passthrough
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed for {impl} T={T}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--seq", type=int, nargs="+", default=None, help="sequence lengths T (default 256 1024 4096)"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--n-embd", type=int, default=None, help="width (default 384)")
    p.add_argument("--n-head", type=int, default=None, help="heads (default 6)")
    p.add_argument("--n-kv-head", type=int, default=None)
    p.add_argument("--position", default="rope", help="position scheme (alibi/t5/relative add a score bias)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per point (default 3)")
    p.add_argument("--small", action="store_true", help="smoke run: tiny defaults (shows the script works)")
    p.add_argument("--impls", nargs="+", default=["sdpa", "flex", "explicit"], help="attention paths")
    p.add_argument("--no-backward", dest="backward", action="store_false", help="time the forward only")
    p.add_argument("--_worker", nargs=2, metavar=("IMPL", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = SMALL if args.small else FULL
    for name, value in defaults.items():  # what is not given on the command line
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU; use --device cpu")
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    return args


@exit_on_user_error
def main(argv=None):
    args = parse(argv)
    if args._worker:
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
        print(json.dumps(measure(args, args._worker[0], int(args._worker[1]))))
        return
    mode = "fwd+bwd" if args.backward else "fwd"
    impls = list(args.impls)
    if args.backward and args.device == "cpu" and "flex" in impls:
        impls.remove("flex")
        print("# flex left out: torch has no FlexAttention backward on a CPU (add --no-backward to time it)")
    print(
        f"# attention layer, {mode}, device={args.device} dtype={args.dtype} B={args.batch} C={args.n_embd} "
        f"heads={args.n_head} kv_heads={args.n_kv_head or args.n_head} position={args.position} "
        f"torch={torch.__version__} | CPU: {cpu_description()}"
    )
    base, others = impls[0], impls[1:]
    head = f"{'T':>6} |" + "".join(f" {i + ' ms':>11}" for i in impls) + " |"
    head += "".join(f" {i + ' MiB':>12}" for i in impls) + " |"
    head += "".join(f" {o + '/' + base + ' time':>19} {'mem':>6}" for o in others)
    print(head)
    for T in args.seq:
        r = {i: run_one(args, i, T) for i in impls}
        line = f"{T:>6} |" + "".join(f" {r[i]['s'] * 1e3:>11.1f}" for i in impls) + " |"
        line += "".join(f" {r[i]['mib']:>12.1f}" for i in impls) + " |"
        for o in others:
            mem = r[o]["mib"] / r[base]["mib"] if r[base]["mib"] > 0.05 else float("inf")
            line += f" {r[o]['s'] / r[base]['s']:>18.2f}x {mem:>5.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
