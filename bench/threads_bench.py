"""How fast each kind of work runs on 1, 2, ... torch CPU threads, and what the automatic rule picks.

    python bench/threads_bench.py                 # as the machine is now
    python bench/threads_bench.py --burn 1        # with one busy-looping process beside it (a loaded machine)

Workloads: batch-1 KV-cached decoding (what sample.py does), a no-grad forward on a batch (what the head report
does), and a training step (forward, backward, AdamW), each on the `tiny` and the `small` shape with random
weights. Thread counts are interleaved repeat by repeat so a drift in the machine's speed hits them alike; the
table gives the median time per step, the spread (min-max) and the thread count `runtime.device.threads_for`
picks from the step's FLOPs on an idle machine and at the load at the end (other processes' runnable threads, as
the rule reads it). The first line names the CPU and the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptlab.model import GPT, GPTConfig  # noqa: E402
from gptlab.runtime.device import cpu_description, cpu_load, threads_for  # noqa: E402

TINY = dict(
    vocab_size=65,
    block_size=64,
    n_layer=4,
    n_head=4,
    n_embd=128,
    norm="rmsnorm",
    mlp="swiglu",
    attn_impl="explicit",
)
SMALL = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)


def workloads(names: list[str]):
    """(name, FLOPs per step, setup() -> step callable, steps per timing)."""
    models = {"tiny": GPT(GPTConfig(**TINY)), "small": GPT(GPTConfig(**SMALL))}
    out = []
    for shape, m in models.items():
        n = m.num_params()
        block = m.config.block_size

        def decode(m=m, new=64):
            idx = torch.zeros((1, 1), dtype=torch.long)
            with torch.inference_mode():
                for _ in m.generate_iter(idx, new, temperature=0.8, top_k=200, use_cache=True):
                    pass
            return new

        def forward(m=m, b=4, t=128 if block > 128 else block):
            x = torch.randint(0, 65, (b, t))
            with torch.inference_mode():
                m(x)
            return 1

        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def train(m=m, opt=opt, b=12 if shape == "tiny" else 4, t=block):
            x = torch.randint(0, 65, (b, t))
            _, loss = m(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return 1

        out += [
            (f"decode {shape} b1", 2 * n, decode),
            (f"forward {shape} 4x{min(128, block)}", 2 * n * 4 * min(128, block), forward),
            (
                f"train {shape} {12 if shape == 'tiny' else 4}x{block}",
                6 * n * (12 if shape == "tiny" else 4) * block,
                train,
            ),
        ]
    return [w for w in out if not names or any(k in w[0] for k in names)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats per thread count")
    ap.add_argument("--burn", type=int, default=0, help="busy-looping processes started beside the benchmark")
    ap.add_argument("--only", nargs="*", default=[], help="workloads whose name contains one of these words")
    args = ap.parse_args()
    cores = torch.get_num_threads()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burn)]
    try:
        if burners:
            time.sleep(2)
        print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.2f}; {args.burn} burner(s)")
        torch.manual_seed(0)
        work = workloads(args.only)
        times = {(w[0], t): [] for w in work for t in args.threads}
        for _name, _, fn in work:  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, _, fn in work:
                for t in args.threads:
                    torch.set_num_threads(t)
                    t0 = time.perf_counter()
                    steps = fn()
                    times[(name, t)].append((time.perf_counter() - t0) / steps)
        load = cpu_load()
        head = " | ".join(f"{t} thr ms/step" for t in args.threads)
        print(f"\n| workload | MFLOP/step | {head} | rule: idle machine | rule: load {load:.1f} |")
        print(f"|---|---|{'---|' * len(args.threads)}---|---|")
        for name, flops, _ in work:
            cells = []
            for t in args.threads:
                v = [x * 1e3 for x in times[(name, t)]]
                cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
            rule = f"{threads_for(flops, cores)} | {threads_for(flops, cores, load)}"
            print(f"| {name} | {flops / 1e6:.1f} | {' | '.join(cells)} | {rule} |")
    finally:
        for p in burners:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
