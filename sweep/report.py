"""Write a sweep's summary: summary.md, summary.csv and the plots, from run directories on disk.

Used by the Hydra callback at the end of a multirun and by compare.py; both give the same files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sweep.extrapolate import DEFAULT_MULTIPLIERS, DEFAULT_WINDOWS, extrapolate_run, read_cache
from sweep.plots import PLOT_FILES, skipped_plots, timing_caveat, write_plots
from sweep.runs import RunRecord, collect_runs
from sweep.table import build_table, to_markdown, write_csv


def attach_extrapolation(
    runs: list[RunRecord],
    multipliers=DEFAULT_MULTIPLIERS,
    windows: int = DEFAULT_WINDOWS,
    device: str = "auto",
    cached_only: bool = False,
    log=print,
) -> None:
    """Fill `run.extrapolation` for every finished run (from the cache, or by evaluating best.pt).
    A run that cannot be evaluated gets `{"error": reason}` instead; nothing raises."""
    evaluated, t0 = 0, time.perf_counter()
    for r in runs:
        if not r.finished:
            continue
        try:
            res = read_cache(r.run_dir, multipliers, windows)
            if res is None and not cached_only:
                res = extrapolate_run(r.run_dir, multipliers, windows, device)
                evaluated += 1
            r.extrapolation = res
        except Exception as e:  # one bad run must not lose the summary of the others
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            r.extrapolation = {"error": f"length extrapolation failed: {msg}"}
    if evaluated:
        log(f"length extrapolation: evaluated {evaluated} run(s) in {time.perf_counter() - t0:.1f} s")


def summarize(
    dirs: list[str | Path],
    out_dir: str | Path | None = None,
    extrapolate: bool = True,
    multipliers=DEFAULT_MULTIPLIERS,
    windows: int = DEFAULT_WINDOWS,
    device: str = "auto",
    cached_only: bool = False,
    log=print,
) -> Path:
    """Collect the runs under `dirs`, write summary.md, summary.csv and the plots into `out_dir`
    (default: the only dir given), and return the path of summary.md."""
    dirs = [Path(d) for d in dirs]
    if out_dir is None:
        if len(dirs) != 1:
            raise ValueError("out_dir is needed when merging several sweep directories")
        out_dir = dirs[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(dirs)
    if extrapolate:
        attach_extrapolation(runs, multipliers, windows, device, cached_only, log)
    table = build_table(runs, multipliers)
    write_csv(table, out_dir / "summary.csv")
    write_plots(table, out_dir)
    md = out_dir / "summary.md"
    md.write_text(_document(table, dirs, extrapolate, windows))
    return md


def _document(table, dirs: list[Path], extrapolate: bool, windows: int) -> str:
    counts: dict[str, int] = {}
    for r in table.runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    parts = [
        "# Sweep summary",
        "",
        f"Runs from {', '.join(f'`{d}`' for d in dirs)}: {len(table.runs)} ({status}). "
        "Rebuild with `python compare.py " + " ".join(str(d) for d in dirs) + "`.",
        "",
        to_markdown(table),
        "",
        f"Timing: {timing_caveat(table)}",
        "",
        "Columns: the overrides that differ between runs; parameters; best and last val loss; training "
        "tokens/s and wall time; KV-cache bytes per token (float32); "
        + (
            f"val loss at k× the training block size (mean over all positions of {windows} fixed val "
            "windows, the same start offsets for every length; `python -m sweep.extrapolate`)."
            if extrapolate
            else "length extrapolation not evaluated (--no-extrapolate)."
        ),
        "",
    ]
    titles = {
        "curves": "Val loss during training",
        "wall": "Val loss vs wall time",
        "params": "Best val loss vs parameters",
        "length": "Length extrapolation",
    }
    skipped = skipped_plots(table)
    for key, name in PLOT_FILES.items():
        shown = (
            f"{titles[key]}: not drawn, {skipped[key]}." if key in skipped else f"![{titles[key]}]({name})"
        )
        parts += [shown, ""]
    return "\n".join(parts)


def print_table(md_path: Path, stream=None) -> None:
    """Print the table part of a summary.md (the lines that start with `|`, then its notes)."""
    text = Path(md_path).read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith("|")), None)
    if start is None:
        return
    end = next((i for i, line in enumerate(text) if line.startswith("Columns:")), len(text))
    print("\n".join(text[start:end]).rstrip(), file=stream or sys.stdout)
