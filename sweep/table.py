"""One row per run: the overrides that differ, size, losses, speed, KV cache, length extrapolation.

`build_table(runs)` returns a `Table` (columns + rows of plain values) that `write_csv` and `to_markdown`
render. Rows are sorted: finished runs by best val loss, then the runs that did not finish.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.runs import RunRecord, parse_overrides

# Override keys that never describe the architecture or budget being compared.
IGNORED_KEYS = {
    "experiment",
    "train.resume",
    "wandb.group",
    "wandb.name",
    "wandb.mode",
    "wandb.project",
    "wandb.entity",
}
IGNORED_PREFIXES = ("hydra.", "hydra/")

METRIC_COLUMNS = [
    "params",
    "best_val_loss",
    "final_val_loss",
    "tokens_per_s",
    "wall_s",
    "kv_cache_bytes_per_token",
]


@dataclass
class Table:
    keys: list[str]  # the override keys whose values differ between runs
    multipliers: list[int]  # extrapolation lengths, in multiples of the training block size
    rows: list[dict]  # one per run: run, status, label, <keys>, METRIC_COLUMNS, val_loss_<m>x, note
    runs: list[RunRecord]  # same order as rows

    @property
    def columns(self) -> list[str]:
        ext = [f"val_loss_{m}x" for m in self.multipliers]
        return ["run", "status", *self.keys, *METRIC_COLUMNS, *ext, "note"]


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """Override keys (from any run) whose resolved value is not the same in every run, in first-seen order."""
    keys: list[str] = []
    for r in runs:
        for k in parse_overrides(r.overrides):
            if k in keys or k in IGNORED_KEYS or k.startswith(IGNORED_PREFIXES):
                continue
            keys.append(k)
    return [k for k in keys if len({_fmt_value(r.config_value(k)) for r in runs}) > 1]


def _fmt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def short_key(key: str, keys: list[str]) -> str:
    """`model.position` -> `position`, unless another key ends the same way."""
    last = key.rsplit(".", 1)[-1]
    clash = sum(1 for k in keys if k.rsplit(".", 1)[-1] == last) > 1
    return key if clash else last


def run_label(run: RunRecord, keys: list[str], root_names: dict[Path, str] | None = None) -> str:
    """A short legend label: `position=alibi, n_kv_head=1`, or the run's folder name if nothing differs."""
    if keys:
        return ", ".join(f"{short_key(k, keys)}={_fmt_value(run.config_value(k))}" for k in keys)
    return (root_names or {}).get(run.run_dir, run.run_dir.name)


def _status_text(run: RunRecord) -> str:
    if run.status in ("finished", "incomplete"):
        return run.status
    step, max_iters = run.value("step"), run.summary.get("max_iters")
    if step is not None and max_iters:
        return f"{run.status} (step {step}/{max_iters})"
    return run.status


def _extrapolation_cells(run: RunRecord, multipliers: list[int]) -> tuple[dict, list[str]]:
    cells, notes = {}, []
    results = {r["multiplier"]: r for r in (run.extrapolation or {}).get("results", [])}
    for m in multipliers:
        r = results.get(m)
        cells[f"val_loss_{m}x"] = r.get("loss") if r else None
        if r and r.get("loss") is None and r.get("reason") and r["reason"] not in notes:
            notes.append(r["reason"])
    if run.extrapolation and run.extrapolation.get("error"):
        notes.append(run.extrapolation["error"])
    return cells, notes


def build_table(runs: list[RunRecord], multipliers: list[int] = (1, 2, 4, 8)) -> Table:
    """The comparison table of `runs` (each may carry `.extrapolation` results)."""
    multipliers = list(multipliers)
    keys = differing_keys(runs)
    names = relative_names([r.run_dir for r in runs])

    def order(r: RunRecord):
        best = r.value("best_val_loss")
        return (not r.finished, best if best is not None else math.inf, str(r.run_dir))

    runs = sorted(runs, key=order)
    rows = []
    for r in runs:
        row = {"run": names[r.run_dir], "status": _status_text(r), "label": run_label(r, keys, names)}
        for k in keys:
            row[k] = _fmt_value(r.config_value(k))
        for c in METRIC_COLUMNS:
            row[c] = r.value(c)
        cells, notes = _extrapolation_cells(r, multipliers)
        row.update(cells)
        if r.error:
            notes.insert(0, str(r.error))
        row["note"] = "; ".join(notes)
        rows.append(row)
    return Table(keys=keys, multipliers=multipliers, rows=rows, runs=runs)


def relative_names(dirs: list[Path]) -> dict[Path, str]:
    """Run folders named relative to their common parent (keeping the sweep's name when merging sweeps)."""
    if not dirs:
        return {}
    resolved = [d.resolve() for d in dirs]
    common = Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0].parent
    return {d: str(p.relative_to(common)) or p.name for d, p in zip(dirs, resolved)}


def display_names(names: list[str]) -> list[str]:
    """Shorter run names for the markdown table: the `a=1,b=2` parts of a folder name (Hydra's
    override_dirname) that every run shares are dropped, e.g. `model.position=alibi,train.max_iters=20`
    -> `model.position=alibi`. Falls back to the full names if that would make two runs look alike."""
    split = []
    for n in names:
        head, _, tail = n.rpartition("/")
        split.append((head, tail.split(",")))
    common = set.intersection(*(set(parts) for _, parts in split)) if split else set()
    short = []
    for head, parts in split:
        kept = ",".join(p for p in parts if p not in common)
        short.append(f"{head}/{kept}" if head and kept else kept or head)
    return short if all(short) and len(set(short)) == len(short) else list(names)


def write_csv(table: Table, path: str | Path) -> None:
    """Raw numbers (empty cell = not available); the note column says why."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=table.columns, extrasaction="ignore")
        w.writeheader()
        for row in table.rows:
            w.writerow({c: "" if row.get(c) is None else row[c] for c in table.columns})


# ---------------------------------------------------------------- markdown


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def fmt_params(n: Any) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def fmt_seconds(s: Any) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:02.0f} s"


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown; the best finished run's best val loss in bold, n/a reasons as notes."""
    ext_head = [f"val loss {m}×" for m in table.multipliers]
    head = ["run", "status", *(short_key(k, table.keys) for k in table.keys)]
    head += ["params", "best val", "final val", "tokens/s", "wall", "KV B/token", *ext_head]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    finished = [r for r in table.rows if r["status"] == "finished" and r["best_val_loss"] is not None]
    best = min((r["best_val_loss"] for r in finished), default=None)
    notes = []
    shown = dict(zip((r["run"] for r in table.rows), display_names([r["run"] for r in table.rows])))
    for row in table.rows:
        best_cell = _num(row["best_val_loss"], ".4f")
        if best is not None and row["status"] == "finished" and row["best_val_loss"] == best:
            best_cell = f"**{best_cell}**"
        ext = []
        for m in table.multipliers:
            v = row[f"val_loss_{m}x"]
            ext.append("n/a" if v is None and row["status"] == "finished" and row["note"] else _num(v, ".4f"))
        cells = [f"`{shown[row['run']]}`", row["status"], *(row[k] for k in table.keys)]
        cells += [
            fmt_params(row["params"]),
            best_cell,
            _num(row["final_val_loss"], ".4f"),
            _num(row["tokens_per_s"], ",.0f"),
            fmt_seconds(row["wall_s"]),
            _num(row["kv_cache_bytes_per_token"], ",.0f"),
            *ext,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        if row["note"]:
            notes.append(f"- `{shown[row['run']]}`: {row['note']}")
    out = "\n".join(lines)
    if notes:
        out += "\n\nNotes:\n\n" + "\n".join(notes)
    return out
