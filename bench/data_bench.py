"""Data benchmark: gpt2 preparation throughput (MB/s, end to end) and BatchLoader batches/s.

    python bench/data_bench.py            # ~100 MB text made by repeating the embedded corpus
    python bench/data_bench.py --mb 10    # a quick check
    python bench/data_bench.py --small    # smoke run: 0.2 MB, one process, 0.2 s per loader shape

Prints: the raw tiktoken encode speed on the same text (one process, the reference), the end-to-end
``prepare()`` speed (read files, chunk, datasets.map with num_proc, write memmaps), and loader batches/s for a
small and a large batch shape. Numbers depend on how busy the machine is; report them as indicative.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptlab.data import BatchLoader, DataConfig, load_meta, prepare  # noqa: E402
from gptlab.data.corpus import embedded_documents  # noqa: E402
from gptlab.data.tokenizers import gpt2_encoding  # noqa: E402


def make_text(path: Path, mb: float) -> int:
    """Write the corpus repeated to about ``mb`` MB; return the byte count."""
    plays = "".join(d["text"] + "\n\n" for d in embedded_documents()).encode()
    reps = max(1, round(mb * 1e6 / len(plays)))
    with open(path, "wb") as f:
        for _ in range(reps):
            f.write(plays)
    return reps * len(plays)


def cpu_seconds() -> float:
    """User+system CPU time of this process and its finished children (the datasets workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loader_rate(path: Path, T: int, B: int, seconds: float = 2.0) -> float:
    loader = BatchLoader(path, block_size=T, batch_size=B, seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loader.next()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="size of the text to prepare, in MB")
    ap.add_argument(
        "--num-proc", type=int, default=None, help="tokenizer processes (default: prepare's choice)"
    )
    ap.add_argument("--ref-mb", type=float, default=20.0, help="MB used for the raw tiktoken reference")
    ap.add_argument("--small", action="store_true", help="smoke run: shows the script works, not the speed")
    args = ap.parse_args()
    loader_s = 2.0
    if args.small:
        args.mb, args.ref_mb, args.num_proc, loader_s = 0.2, 0.2, 1, 0.2

    work = Path(tempfile.mkdtemp(prefix="gptlab-data-bench-"))
    try:
        src = work / "corpus.txt"
        nbytes = make_text(src, args.mb)
        print(f"text: {nbytes / 1e6:.1f} MB ({os.cpu_count()} cpus)")

        enc = gpt2_encoding()
        ref = src.read_bytes()[: int(args.ref_mb * 1e6)].decode("ascii", errors="ignore")
        t0, c0 = time.perf_counter(), cpu_seconds()
        enc.encode_ordinary(ref)
        dt, ref_cpu = time.perf_counter() - t0, (cpu_seconds() - c0) / (len(ref) / 1e6)
        print(
            f"tiktoken gpt2 encode_ordinary, 1 process: {len(ref) / 1e6 / dt:6.1f} MB/s  ({ref_cpu:.3f} CPU-s/MB)"
        )

        cfg = DataConfig(name="bench", source="files", path=str(src), tokenizer="gpt2",
                         num_proc=args.num_proc, out_dir=str(work / "prepared"))  # fmt: skip
        t0, c0 = time.perf_counter(), cpu_seconds()
        d = prepare(cfg, quiet=True)
        dt, prep_cpu = time.perf_counter() - t0, (cpu_seconds() - c0) / (nbytes / 1e6)
        meta = load_meta(d)
        toks = meta["train_tokens"] + meta["val_tokens"]
        print(f"prepare (gpt2, end to end):          {nbytes / 1e6 / dt:6.1f} MB/s  ({prep_cpu:.3f} CPU-s/MB, "
              f"{dt:.1f} s, {toks:,} tokens, num_proc {args.num_proc or 'auto'})")  # fmt: skip
        # On a shared machine wall-clock speed mostly measures the neighbours; CPU cost per MB does not.
        ncpu = len(os.sched_getaffinity(0))
        print(f"CPU cost prepare/raw encode: {prep_cpu / ref_cpu:.2f}x -> on {ncpu} idle cores about "
              f"{ncpu / prep_cpu:.1f} MB/s end to end")  # fmt: skip
        t0 = time.perf_counter()
        prepare(cfg, quiet=True)
        print(f"prepare again (nothing changed):     {1e3 * (time.perf_counter() - t0):6.1f} ms")

        for T, B in ((64, 12), (1024, 64)):
            print(
                f"BatchLoader cpu, block {T:4d} batch {B:2d}:   {loader_rate(d / 'train.bin', T, B, loader_s):8.0f} batches/s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
