"""The sweep's tables: one row per run, one per setting (its seeds pooled), and the paired comparison.

`build_table(runs)` returns a `Table`: the keys whose values differ between runs, one row of plain values per
run, and the runs grouped into settings (`sweep.settings`: runs that differ only in `seed` are seeds of one
setting). `write_csvs` and `to_markdown` render it. Runs are listed beneath their setting: settings by mean
best val loss, each setting's finished runs by seed, then the runs that did not finish.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from gptlab.rundir.files import atomic_write
from gptlab.sweep.columns import (
    BUDGET_KEYS,
    DATA_KEY,
    IGNORED_KEYS,
    IGNORED_PREFIXES,
    METRIC_COLUMNS,
    SEED_KEY,
    Table,
    _data_identity,
    _fmt_value,
    _num,
    fmt_params,
    fmt_seconds,
    label_of,
    short_key,
)
from gptlab.sweep.runs import RunRecord, parse_overrides
from gptlab.sweep.settings import (
    COMPARISON_COLUMNS,
    compare_settings,
    comparison_markdown,
    group_settings,
    setting_columns,
    setting_row,
    settings_markdown,
)

# ---------------------------------------------------------------- keys and values


def key_values(runs: list[RunRecord]) -> tuple[list[str], dict[Path, dict[str, str | None]]]:
    """The keys whose values differ between runs, and each run's value of each (None: the run does not say,
    e.g. it crashed before writing its config). Keys: the overrides (first-seen order), then the seed, the
    budget keys and the data when the runs' configs disagree on them."""
    candidates: list[str] = []
    for r in runs:
        for k in parse_overrides(r.overrides):
            if k in candidates or k in IGNORED_KEYS or k.startswith(IGNORED_PREFIXES):
                continue
            candidates.append(k)
    candidates += [k for k in (SEED_KEY, *BUDGET_KEYS, DATA_KEY) if k not in candidates]

    names: dict[str, set] = {}  # data name -> identities seen under it
    for r in runs:
        ident = _data_identity(r)
        if ident is not None:
            names.setdefault(str(r.config["data"].get("name")), set()).add(ident)

    def value(r: RunRecord, k: str) -> str | None:
        if k == DATA_KEY and _data_identity(r) is not None:
            name = str(r.config["data"].get("name"))
            if len(names[name]) == 1:
                return name  # the name says it all
            return f"{name} ({hashlib.sha1(_data_identity(r).encode()).hexdigest()[:6]})"
        return _fmt_value(r.config_value(k)) if r.known(k) else None

    values = {r.run_dir: {k: value(r, k) for k in candidates} for r in runs}
    keys = [k for k in candidates if len({v[k] for v in values.values() if v[k] is not None}) > 1]
    return keys, {d: {k: v[k] for k in keys} for d, v in values.items()}


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """Keys (overrides of any run, budget, data) whose resolved value is not the same in every run."""
    return key_values(runs)[0]


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


def _target_cells(run: RunRecord) -> dict:
    t = run.time_to_target
    return {
        "target_loss": t.get("target_loss"),
        "target_step": t.get("step"),
        "target_tokens": t.get("tokens"),
        "target_wall_s": t.get("wall_s"),
    }


def build_table(
    runs: list[RunRecord],
    multipliers: list[int] = (1, 2, 4, 8),
    baseline: str | None = None,
    strict: bool = True,
    pair: bool = True,
) -> Table:
    """The tables of `runs` (each may carry `.extrapolation` results). `baseline` picks the setting the
    comparison pairs against (None: the first of the sweep); `strict` raises a UserError for a baseline that
    is no setting or settings that cannot be paired, otherwise the comparison says why in its note.
    `pair=False`: no comparison."""
    multipliers = list(multipliers)
    keys, values = key_values(runs)
    names = relative_names([r.run_dir for r in runs])
    setting_keys = [k for k in keys if k != SEED_KEY]
    rows = {}
    for r in runs:
        row = {"run": names[r.run_dir], "status": _status_text(r)}
        row["label"] = label_of(values[r.run_dir], keys) or names[r.run_dir]
        row.update(values[r.run_dir])
        for c in METRIC_COLUMNS:
            row[c] = r.value(c)
        cells, notes = _extrapolation_cells(r, multipliers)
        row.update(cells)
        row.update(_target_cells(r))
        if r.error:
            notes.insert(0, str(r.error))
        row["note"] = "; ".join(notes)
        rows[r.run_dir] = row
    settings = group_settings(runs, rows, values, setting_keys)
    ordered = [r for s in settings for r in s.runs]
    for s in settings:
        for r in s.runs:
            rows[r.run_dir]["setting"] = s.label
    table = Table(keys, multipliers, [rows[r.run_dir] for r in ordered], ordered, settings)
    if pair and len(settings) > 1:
        table.comparison = compare_settings(settings, baseline, strict)
    return table


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


# ---------------------------------------------------------------- csv


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    f = io.StringIO()
    w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return f.getvalue()


def write_runs_csv(table: Table, path: str | Path) -> None:
    """One row per run, raw numbers (empty cell = not available; the note column says why)."""
    atomic_write(path, _csv_text(table.columns, table.rows))


def write_settings_csv(table: Table, path: str | Path) -> None:
    """One row per setting: n, mean, std and 95% interval of each metric over its finished seeds."""
    columns = setting_columns(table)
    atomic_write(path, _csv_text(columns, [setting_row(s, table) for s in table.settings]))


def write_comparison_csv(table: Table, path: str | Path) -> None:
    """One row per setting against the baseline: paired difference, interval, p, Holm's p, verdict."""
    rows = table.comparison.rows if table.comparison is not None else []
    atomic_write(path, _csv_text(COMPARISON_COLUMNS, rows))


# ---------------------------------------------------------------- markdown


def _target_text(row: dict) -> str:
    if row.get("target_loss") is None:
        return "–"
    if row.get("target_step") is None:
        return "not reached" if row["status"] == "finished" else "–"
    return f"step {row['target_step']:,} ({fmt_seconds(row['target_wall_s'])})"


def runs_markdown(table: Table) -> str:
    """The runs as GitHub markdown; the best finished run's best val loss in bold, n/a reasons as notes."""
    ext_head = [f"val loss {m}×" for m in table.multipliers]
    head = ["run", "status", *(short_key(k, table.keys) for k in table.keys)]
    head += ["params", "best val", "final val", "tokens/s", "wall", "KV B/token", *ext_head]
    if table.has_target:
        head.append(f"to val {_target_value(table)}")
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
        cells = [f"`{shown[row['run']]}`", row["status"], *(_cell(row[k]) for k in table.keys)]
        cells += [
            fmt_params(row["params"]),
            best_cell,
            _num(row["final_val_loss"], ".4f"),
            _num(row["tokens_per_s"], ",.0f"),
            fmt_seconds(row["wall_s"]),
            _num(row["kv_cache_bytes_per_token"], ",.0f"),
            *ext,
        ]
        if table.has_target:
            cells.append(_target_text(row))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        if row["note"]:
            notes.append(f"- `{shown[row['run']]}`: {row['note']}")
    out = "\n".join(lines)
    if notes:
        out += "\n\nNotes:\n\n" + "\n".join(notes)
    return out


def _cell(v: str | None) -> str:
    return "?" if v is None else v


def _target_value(table: Table) -> str:
    targets = sorted({r["target_loss"] for r in table.rows if r.get("target_loss") is not None})
    return ", ".join(f"{t:g}" for t in targets)


def to_markdown(table: Table) -> str:
    """Every table of the summary: settings (with seeds), the paired comparison, then the runs."""
    parts = []
    if table.seeded:
        parts += ["## Settings", "", settings_markdown(table), ""]
    if table.comparison is not None:
        parts += [comparison_markdown(table), ""]
    if parts:
        parts += ["## Runs", ""]
    parts.append(runs_markdown(table))
    return "\n".join(parts)
