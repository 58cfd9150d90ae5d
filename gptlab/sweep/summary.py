"""Write a sweep's summary: summary.md, summary.csv (one row per setting), runs.csv (one per run),
comparison.csv (each setting paired with the baseline) and the plots, from run directories on disk.

Used by the Hydra callback at the end of a multirun and by compare.py; both give the same files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gptlab.rundir.files import atomic_write
from gptlab.sweep.extrapolate import DEFAULT_MULTIPLIERS, DEFAULT_WINDOWS, extrapolate_run, read_cache
from gptlab.sweep.plots import PLOT_FILES, skipped_plots, timing_caveat, write_plots
from gptlab.sweep.runs import RunRecord, collect_runs
from gptlab.sweep.table import (
    build_table,
    to_markdown,
    write_comparison_csv,
    write_runs_csv,
    write_settings_csv,
)

CSV_FILES = {"settings": "summary.csv", "runs": "runs.csv", "comparison": "comparison.csv"}


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
    baseline: str | None = None,
    strict: bool = True,
    pair: bool = True,
) -> Path:
    """Collect the runs under `dirs`, write summary.md, the CSV files and the plots into `out_dir`
    (default: the only dir given), and return the path of summary.md. `baseline`, `strict`, `pair`: the
    paired comparison (sweep.table.build_table); not strict, its problem is logged as one warning line."""
    dirs = [Path(d) for d in dirs]
    if out_dir is None:
        if len(dirs) != 1:
            raise ValueError("out_dir is needed when merging several sweep directories")
        out_dir = dirs[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(dirs)
    if strict and pair:  # a bad baseline, settings that cannot be paired: one line before any evaluation
        build_table(runs, multipliers, baseline=baseline, strict=True)
    if extrapolate:
        attach_extrapolation(runs, multipliers, windows, device, cached_only, log)
    table = build_table(runs, multipliers, baseline=baseline, strict=strict, pair=pair)
    if table.comparison is not None and table.comparison.note:
        log(f"warning: {table.comparison.note}")
    write_settings_csv(table, out_dir / CSV_FILES["settings"])
    write_runs_csv(table, out_dir / CSV_FILES["runs"])
    comparison_csv = out_dir / CSV_FILES["comparison"]
    if table.comparison is not None and table.comparison.rows:
        write_comparison_csv(table, comparison_csv)
    elif comparison_csv.exists():
        comparison_csv.unlink()  # a stale comparison of an earlier summary would mislead
    write_plots(table, out_dir)
    md = out_dir / "summary.md"
    atomic_write(md, _document(table, dirs, extrapolate, windows))
    return md


def _document(table, dirs: list[Path], extrapolate: bool, windows: int) -> str:
    counts: dict[str, int] = {}
    for r in table.runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    seeds = sorted({len(s.runs) for s in table.settings})
    per = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    grouping = (
        f" {len(table.settings)} setting{'s' if len(table.settings) != 1 else ''} × {per} seeds."
        if table.seeded
        else " One seed per setting: no intervals (n=1); add seeds=3 to train each setting with 3 seeds."
    )
    parts = [
        "# Sweep summary",
        "",
        f"Runs from {', '.join(f'`{d}`' for d in dirs)}: {len(table.runs)} ({status}).{grouping} "
        "Rebuild with `python compare.py " + " ".join(str(d) for d in dirs) + "`.",
        "",
        to_markdown(table),
        "",
        f"Timing: {timing_caveat(table)}",
        "",
        (
            "Settings: the mean over a setting's finished seeds ± half its 95% interval (Student t, n − 1 "
            "degrees of freedom); sd: standard deviation over seeds; summary.csv has n, mean, sd and the "
            "interval of every column, runs.csv every run, comparison.csv the paired comparison. "
            if table.seeded
            else ""
        )
        + "Columns: the overrides that differ between runs; parameters; best and last val loss; training "
        "tokens/s (the run's average; first step, evaluation and checkpoints not counted) and wall time; "
        "KV-cache bytes per token (float32); "
        + (
            f"val loss at k× the training block size (mean over all positions of {windows} fixed val "
            "windows, the same start offsets for every length; `python -m gptlab.sweep.extrapolate`)."
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
    """Print the tables of a summary.md (from its first table or section to the column notes)."""
    text = Path(md_path).read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith(("|", "## "))), None)
    if start is None:
        return
    end = next((i for i, line in enumerate(text) if line.startswith(("Columns:", "Settings:"))), len(text))
    print("\n".join(text[start:end]).rstrip(), file=stream or sys.stdout)
