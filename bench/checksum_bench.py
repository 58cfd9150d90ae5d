"""What checking prepared data whole costs: the sha256 of every byte of train.bin and val.bin.

    python bench/checksum_bench.py                        # a synthetic 100 MB token file
    python bench/checksum_bench.py --mb 20                # a smaller one
    python bench/checksum_bench.py data/prepared/<name>   # a prepared folder: its no-op prepare() check

Prints the CPU, the checksum speed of sha256 (what meta.json records) beside blake2b, and for a prepared folder
the time ``check_prepared`` takes (what every ``prepare()`` call, so every training start, pays). Medians of
five runs, file in the page cache (a cold disk read adds the disk's time).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptlab.data.build import check_prepared  # noqa: E402
from gptlab.data.integrity import CHUNK, file_checksum, forget_verified  # noqa: E402
from gptlab.runtime.device import cpu_info  # noqa: E402


def median_s(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blake2b_of(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", nargs="?", help="a prepared data folder (default: a synthetic token file)")
    ap.add_argument("--mb", type=float, default=100.0, help="size of the synthetic token file, in MB")
    args = ap.parse_args()
    info = cpu_info()
    print(f"cpu: {info['model']} (sha_ni: {'sha_ni' in info['flags']})")
    with tempfile.TemporaryDirectory(prefix="gptlab-checksum-bench-") as tmp:
        if args.prepared:
            files = [Path(args.prepared) / f"{s}.bin" for s in ("train", "val")]
        else:
            files = [Path(tmp) / "train.bin"]
            rng = np.random.default_rng(0)
            rng.integers(0, 50257, size=int(args.mb * 1e6 / 2), dtype="uint16").tofile(files[0])
        for f in files:
            mb = f.stat().st_size / 1e6
            for name, fn in (("sha256", file_checksum), ("blake2b", blake2b_of)):
                s = median_s(lambda fn=fn, f=f: fn(f))
                print(f"{f.name}: {mb:8.2f} MB  {name:7s} {1e3 * s:8.1f} ms  ({mb / s:6.0f} MB/s)")
        if args.prepared:

            def fresh_check():  # as in a new process: nothing remembered from the previous call
                forget_verified()
                meta, why = check_prepared(Path(args.prepared))
                assert meta is not None, why

            s = median_s(fresh_check)
            print(f"check_prepared (every prepare() call): {1e3 * s:.1f} ms")


if __name__ == "__main__":
    main()
