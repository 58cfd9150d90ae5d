"""Sampling speed: KV cache on vs off, side by side with nanoGPT's sample loop, and KV-cache sizes.

    python bench/sample_bench.py                       # small shape, 256/1000/2000 new tokens, CPU
    python bench/sample_bench.py --new 64,256 --repeats 1 --nanogpt /path/to/nanoGPT
    python bench/sample_bench.py --small               # smoke run: a tiny shape, 16 new tokens

The model is the `small` shape (6 layers, 6 heads, 384 wide, block 256, vocab 65) with random weights:
tokens/s does not depend on what the weights are. Every loop generates one sample from a one-token prompt
with the same sampling settings as nanoGPT's sample.py (temperature 0.8, top_k 200). Past block_size both
loops keep going the way their model defines (nanoGPT crops the context to the last block_size tokens).

`--nanogpt PATH` points at a nanoGPT checkout (a folder with model.py, or a git repository whose HEAD has
one); its model.py is imported at run time only, nothing of it is copied here. Without it that column is
skipped. The KV-cache table checks that GQA and MQA shrink the cache by exactly n_head / n_kv_head.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptlab.model import GPT, GPTConfig  # noqa: E402

SMALL = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
TINY = dict(SMALL, block_size=32, n_layer=2, n_embd=48)  # --small: 6 heads still, so the KV table holds


def timed(fn, repeats: int) -> float:
    """Median wall seconds of `fn()` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_nanogpt(path: str):
    """Import nanoGPT's model.py from a checkout folder or a git repository; None if it is not there."""
    p = Path(path).expanduser()
    src = p / "model.py"
    if not src.is_file():
        try:
            text = subprocess.run(
                ["git", "--git-dir", str(p), "show", "HEAD:model.py"],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        except (subprocess.CalledProcessError, FileNotFoundError):
            return None
        src = Path(tempfile.mkdtemp(prefix="nanogpt_")) / "model.py"
        src.write_text(text)
    spec = importlib.util.spec_from_file_location("nanogpt_model", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_speed(args) -> None:
    shape, label = (TINY, "tiny") if args.small else (SMALL, "small")
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**shape, position=args.position)).eval()
    nano = None
    if args.nanogpt:
        mod = load_nanogpt(args.nanogpt)
        if mod is None:
            print(f"nanoGPT: no model.py under {args.nanogpt}; skipping that column")
        else:
            nano = mod.GPT(mod.GPTConfig(**shape)).eval()
    idx = torch.zeros((1, 1), dtype=torch.long)  # (B, T) one-token prompt
    kw = dict(temperature=0.8, top_k=200)

    def run_ours(n, cache):
        with torch.no_grad():
            ours.generate(idx, n, use_cache=cache, **kw)

    def run_nano(n):
        with torch.no_grad():
            nano.generate(idx, n, **kw)

    run_ours(8, True), run_ours(8, False)  # warm-up
    print(
        f"\nsampling tokens/s, {label} shape, position={args.position}, batch 1, {torch.get_num_threads()} threads"
    )
    head = f"{'new tokens':>10} | {'cache':>10} | {'no cache':>10} | {'speed-up':>8}"
    head += f" | {'nanoGPT':>10} | {'cache/nanoGPT':>13}" if nano is not None else ""
    print(head)
    print("-" * len(head))
    for n in args.new:
        t_c = timed(lambda n=n: run_ours(n, True), args.repeats)
        t_n = timed(lambda n=n: run_ours(n, False), args.repeats)
        row = f"{n:>10} | {n / t_c:>10.1f} | {n / t_n:>10.1f} | {t_n / t_c:>7.1f}x"
        if nano is not None:
            t_g = timed(lambda n=n: run_nano(n), args.repeats)
            row += f" | {n / t_g:>10.1f} | {t_g / t_c:>12.1f}x"
        print(row, flush=True)

    # the cache must not change the tokens: greedy, past block_size
    n = shape["block_size"] + 44
    with torch.no_grad():
        a = ours.generate(idx, n, temperature=0.0, use_cache=True)
        b = ours.generate(idx, n, temperature=0.0, use_cache=False)
    print(
        f"greedy {n} tokens (past block_size {shape['block_size']}): cache == no cache: {torch.equal(a, b)}"
    )


def bench_kv_bytes(shape: dict, label: str) -> None:
    print(
        f"\nKV-cache bytes per token (float32), {label} shape; an 8k-position cache for one sample beside it"
    )
    head = f"{'attention':>9} | {'n_kv_head':>9} | {'bytes/token':>11} | {'formula':>9} | {'MHA / this':>10} | {'8k cache':>9}"
    print(head)
    print("-" * len(head))
    n_head = shape["n_head"]
    mha = None
    ok = True
    for name, kv in (("MHA", 6), ("GQA", 3), ("GQA", 2), ("MQA", 1)):
        m = GPT(GPTConfig(**shape, n_kv_head=kv))
        got = m.kv_cache_bytes_per_token(torch.float32)
        formula = 2 * shape["n_layer"] * kv * (shape["n_embd"] // n_head) * 4  # K and V, per layer, fp32
        mha = got if mha is None else mha
        ratio = mha / got
        ok &= got == formula and ratio == n_head / kv
        print(
            f"{name:>9} | {kv:>9} | {got:>11} | {formula:>9} | {ratio:>9.1f}x | {got * 8192 / 2**20:>5.1f} MiB"
        )
    print(
        f"every cache shrinks by exactly n_head / n_kv_head and matches 2*n_layer*n_kv_head*head_dim*4: {ok}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--new", default=None, help="comma-separated numbers of new tokens (default 256,1000,2000)"
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs per measurement (median is printed)")
    ap.add_argument(
        "--position", default="learned", help="position scheme of our model (learned = nanoGPT's)"
    )
    ap.add_argument("--nanogpt", default=None, help="nanoGPT checkout or git dir to compare with (optional)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-speed", action="store_true", help="only print the KV-cache table")
    ap.add_argument("--skip-kv", action="store_true", help="only print the speed table")
    ap.add_argument("--small", action="store_true", help="smoke run: a tiny shape, 16 new tokens by default")
    args = ap.parse_args()
    new = args.new or ("16" if args.small else "256,1000,2000")
    args.new = [int(x) for x in new.split(",") if x.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_kv:
        bench_kv_bytes(*((TINY, "tiny") if args.small else (SMALL, "small")))
    if not args.skip_speed:
        bench_speed(args)


if __name__ == "__main__":
    main()
