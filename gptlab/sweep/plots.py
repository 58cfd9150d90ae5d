"""The sweep's PNG plots, drawn with matplotlib's object API (no pyplot, no global backend change).

- `val_loss_curves.png`: val loss against step;
- `val_loss_vs_wall_time.png`: the same curves against elapsed seconds;
- `val_loss_vs_params.png`: best val loss against parameter count (not drawn when the counts differ by under
  1%: the points would stand in a column and say nothing about size);
- `loss_vs_eval_length.png`: val loss at 1×, 2×, 4×, 8× the training block size.

A setting with one run is one line (or point) per run. A setting with several finished seeds is one line, the
mean over its seeds, in a band of its 95% interval (Student t, `sweep.stats`): the curves at the evaluation
steps every seed reached (against the seeds' mean wall time at that step in the wall-time plot), an error bar
on the parameter plot.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gptlab.sweep.columns import Table
from gptlab.sweep.stats import estimate

PLOT_FILES = {
    "curves": "val_loss_curves.png",
    "wall": "val_loss_vs_wall_time.png",
    "params": "val_loss_vs_params.png",
    "length": "loss_vs_eval_length.png",
}
_STYLES = ["-", "--", "-.", ":"]
PARAMS_MIN_SPREAD = 0.01  # below this relative spread of parameter counts the params plot is not drawn


def params_spread(table: Table) -> tuple[int, int] | None:
    """(smallest, largest) parameter count of the runs that have one, or None when none has."""
    params = [r["params"] for r in table.rows if r["params"]]
    return (min(params), max(params)) if params else None


def skipped_plots(table: Table) -> dict[str, str]:
    """{plot key: why it is not drawn} for the plots that would show nothing."""
    spread = params_spread(table)
    if spread and (spread[1] - spread[0]) < PARAMS_MIN_SPREAD * spread[0]:
        lo, hi = spread
        return {
            "params": f"the parameter counts differ by under 1% ({lo:,} to {hi:,}), so the runs would stand "
            "in one column; compare their losses in the table"
        }
    return {}


def timing_caveat(table: Table) -> str:
    """Where the wall times and tokens/s come from, and that other jobs on the machine change them."""
    from gptlab.runtime.device import cpu_info

    devices = sorted({str(r.summary.get("device")) for r in table.runs if r.summary.get("device")})
    load = ""
    if hasattr(os, "getloadavg"):
        load = (
            f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores as this summary was written)"
        )
    return (
        "Wall time and tokens/s measure the machine as well as the model: other jobs running beside a run "
        f"slow it down{load}, and another machine gives other numbers. The runs ran on "
        f"{', '.join(devices) or 'an unrecorded device'}; this summary was written on {cpu_info()['model']}. "
        "Compare them only between runs made one at a time on one otherwise idle machine."
    )


def _figure(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _style(i: int) -> dict:
    """Colour and line style for the i-th run: 10 colours, then the next line style."""
    return {"color": f"C{i % 10}", "linestyle": _STYLES[(i // 10) % len(_STYLES)]}


def _save(fig, ax, path: Path, n_lines: int) -> None:
    if n_lines:
        ax.legend(fontsize=7 if n_lines > 8 else 9, loc="best")
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path)


def _groups(table: Table):
    """(index, label, runs, rows, pooled) per setting: pooled when it has two or more finished runs, which are
    then its only runs drawn; otherwise each of its runs is drawn alone."""
    for i, s in enumerate(table.settings):
        done = s.finished
        if len(done) >= 2:
            yield i, f"{s.label} (n={len(done)})", [r for r, _ in done], [row for _, row in done], True
        else:
            yield i, None, s.runs, s.rows, False


def _band(ax, xs, stats, label, i) -> None:
    means = [e.mean for e in stats]
    ax.plot(xs, means, marker="o", markersize=3, label=label, **_style(i))
    lows = [e.low if e.low is not None else e.mean for e in stats]
    highs = [e.high if e.high is not None else e.mean for e in stats]
    ax.fill_between(xs, lows, highs, color=f"C{i % 10}", alpha=0.2, linewidth=0)


def _points(run, x: str) -> dict:
    return {
        e["step"]: (e[x], e["val_loss"])
        for e in run.evals
        if e.get(x) is not None and e.get("val_loss") is not None and e.get("step") is not None
    }


def plot_curves(table: Table, path: Path, x: str = "step") -> None:
    """Val-loss curves of every setting overlaid; `x` is `step` or `elapsed_s` (wall time, with the caveat under it)."""
    wall = x == "elapsed_s"
    fig, ax = _figure(
        "Val loss vs wall time" if wall else "Val loss during training",
        "wall time (s)" if wall else "step",
        "val loss",
    )
    if wall:
        fig.supxlabel("\n".join(textwrap.wrap(timing_caveat(table), 130)), fontsize=7, color="0.3")
    n = 0
    for i, label, runs, rows, pooled in _groups(table):
        if pooled:
            per_run = [_points(r, x) for r in runs]
            steps = sorted(set.intersection(*(set(p) for p in per_run)))
            if steps:
                xs = [sum(p[s][0] for p in per_run) / len(per_run) for s in steps]
                _band(ax, xs, [estimate([p[s][1] for p in per_run]) for s in steps], label, i)
                n += 1
            continue
        for run, row in zip(runs, rows):
            pts = sorted(_points(run, x).values())
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=row["label"], **_style(i))
                n += 1
    _save(fig, ax, path, n)


def plot_vs_params(table: Table, path: Path) -> None:
    """Best val loss against parameter count, each point labelled (mean and 95% interval for seeds)."""
    fig, ax = _figure("Best val loss vs parameters", "parameters", "best val loss")
    params = [r["params"] for r in table.rows if r["params"]]
    if params and max(params) > 20 * min(params):
        ax.set_xscale("log")
    n = 0
    for i, label, _, rows, pooled in _groups(table):
        if pooled:
            e = estimate([row["best_val_loss"] for row in rows])
            p = next((row["params"] for row in rows if row["params"]), None)
            if p is not None and e.n:
                err = None if e.half is None else [[e.half], [e.half]]
                ax.errorbar([p], [e.mean], yerr=err, fmt="o", capsize=4, color=f"C{i % 10}", label=label)
                n += 1
            continue
        for row in rows:
            if row["params"] is None or row["best_val_loss"] is None:
                continue
            ax.scatter(
                [row["params"]],
                [row["best_val_loss"]],
                color=f"C{(i) % 10}",
                label=row["label"],
            )
            n += 1
    _save(fig, ax, path, n)


def plot_extrapolation(table: Table, path: Path) -> None:
    """Val loss at each evaluation length (in multiples of the training block size)."""
    fig, ax = _figure(
        "Length extrapolation: val loss vs evaluation length",
        "evaluation length / training block size",
        "val loss",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(table.multipliers, [f"{m}×" for m in table.multipliers])
    n = 0

    def past_1x(xs) -> str:
        only_1x = len(xs) == 1 and xs[0] == 1 and len(table.multipliers) > 1
        return " (n/a past 1×)" if only_1x else ""

    for i, label, _, rows, pooled in _groups(table):
        if pooled:
            stats = {m: estimate([row[f"val_loss_{m}x"] for row in rows]) for m in table.multipliers}
            xs = [m for m in table.multipliers if stats[m].n]
            if xs:
                _band(ax, xs, [stats[m] for m in xs], label + past_1x(xs), i)
                n += 1
            continue
        for row in rows:
            pts = [(m, row[f"val_loss_{m}x"]) for m in table.multipliers if row[f"val_loss_{m}x"] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=row["label"] + past_1x(xs), **_style(i))
                n += 1
    ax.axvline(1, color="grey", linewidth=0.8)
    _save(fig, ax, path, n)


def write_plots(table: Table, out_dir: Path) -> list[Path]:
    """Write the plots into `out_dir` (all but :func:`skipped_plots`, whose old copies are removed so no stale
    picture stays beside the new summary); returns the paths written."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in PLOT_FILES.items()}
    skipped = skipped_plots(table)
    draw = {
        "curves": lambda p: plot_curves(table, p, x="step"),
        "wall": lambda p: plot_curves(table, p, x="elapsed_s"),
        "params": lambda p: plot_vs_params(table, p),
        "length": lambda p: plot_extrapolation(table, p),
    }
    for key, path in paths.items():
        if key in skipped:
            path.unlink(missing_ok=True)
        else:
            draw[key](path)
    return [p for k, p in paths.items() if k not in skipped]
