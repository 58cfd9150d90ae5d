"""Settings: the runs of a sweep that differ only in `seed`, pooled; and the paired comparison with a baseline.

A setting is one value of every key that differs between the runs (`sweep.table.key_values`), `seed` left
out: `python train.py -m +experiment=positions seeds=3` gives 7 settings of 3 runs each, and so does a plain
`seed=0,1,2`, or two sweeps of different seeds merged by compare.py. Budget (max_iters, batch, grad_accum,
block) and data always count as keys, so runs of different budgets are never pooled, and settings of
different budgets are never paired.

The comparison pairs each setting with the baseline seed by seed (seed s of both saw the same batches in the
same order) and reports the mean difference of best val loss, its 95% interval, the paired t-test p and
Holm's adjusted p over all settings of the table (`sweep.stats`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gptlab.errors import UserError
from gptlab.sweep.columns import (
    BUDGET_KEYS,
    DATA_KEY,
    Table,
    _data_identity,
    _fmt_value,
    fmt_estimate,
    fmt_interval,
    fmt_params,
    label_of,
    short_key,
)
from gptlab.sweep.runs import RunRecord
from gptlab.sweep.stats import NO_INTERVAL, Estimate, Paired, estimate, holm, paired

METRIC = "best_val_loss"  # what the comparison pairs
ALPHA = 0.05
ONE_SETTING = "all runs"
COMPARISON_COLUMNS = [
    "setting",
    "baseline",
    "metric",
    "pairs",
    "seeds",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "verdict",
]
NOT_DISTINGUISHABLE = "not distinguishable at this budget"


@dataclass
class Setting:
    """The runs of one setting (seeds of the same configuration) and their table rows, by seed."""

    label: str
    values: dict  # setting key -> value (None: not known)
    runs: list[RunRecord] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def order(self) -> tuple:
        return min(r.order for r in self.runs)

    @property
    def finished(self) -> list[tuple[RunRecord, dict]]:
        return [(r, row) for r, row in zip(self.runs, self.rows) if r.finished]

    def estimate(self, column: str) -> Estimate:
        """The column over this setting's finished runs (those that have a number)."""
        return estimate([row.get(column) for _, row in self.finished])

    def by_seed(self, column: str) -> dict[int, float]:
        return {r.seed: row.get(column) for r, row in self.finished if r.seed is not None}

    def duplicate_seed(self) -> tuple[int, list[RunRecord]] | None:
        seen: dict[int, RunRecord] = {}
        for r, _ in self.finished:
            if r.seed is None:
                continue
            if r.seed in seen:
                return r.seed, [seen[r.seed], r]
            seen[r.seed] = r
        return None

    def budget(self) -> dict[str, str]:
        """Budget keys and data of the runs that wrote a config (the same in all of them: they are keys)."""
        r = next((r for r, _ in self.finished if r.config), next((r for r in self.runs if r.config), None))
        if r is None:
            return {}
        out = {k: _fmt_value(r.config_value(k)) for k in BUDGET_KEYS}
        out[DATA_KEY] = _data_identity(r) or "?"
        return out

    def first(self, column: str):
        return next((row.get(column) for row in self.rows if row.get(column) is not None), None)


def group_settings(runs: list[RunRecord], rows: dict, values: dict, keys: list[str]) -> list[Setting]:
    """Group `runs` by their values of `keys` (seed excluded), best setting first. A run that does not know
    some value (it crashed before writing its config) joins the first setting it agrees with."""
    settings: dict[tuple, Setting] = {}
    unknown = []
    for r in sorted(runs, key=lambda r: r.order):
        v = values[r.run_dir]
        ident = tuple(v[k] for k in keys)
        if None in ident:
            unknown.append(r)
            continue
        s = settings.setdefault(ident, Setting(label_of(v, keys) or ONE_SETTING, {k: v[k] for k in keys}))
        s.runs.append(r)
    for r in unknown:
        v = values[r.run_dir]
        match = next((s for s in settings.values() if all(v[k] in (None, s.values[k]) for k in keys)), None)
        if match is None:
            ident = tuple(v[k] for k in keys)
            match = settings.setdefault(ident, Setting(label_of(v, keys), {k: v[k] for k in keys}))
        match.runs.append(r)
    out = list(settings.values())
    for s in out:
        s.runs.sort(key=lambda r: (not r.finished, r.seed is None, r.seed or 0, r.order))
        s.rows = [rows[r.run_dir] for r in s.runs]

    def rank(s: Setting):
        best = s.estimate(METRIC).mean
        if best is None:  # no finished run: by what its unfinished runs reached
            seen = [row["best_val_loss"] for row in s.rows if row["best_val_loss"] is not None]
            return (1, min(seen, default=float("inf")), s.order)
        return (0, best, s.order)

    return sorted(out, key=rank)


# ---------------------------------------------------------------- the comparison


@dataclass
class Comparison:
    baseline: Setting
    rows: list[dict]  # COMPARISON_COLUMNS, one per other setting
    pairs: dict = field(default_factory=dict)  # setting label -> sweep.stats.Paired
    note: str | None = None  # why there is no comparison (or why the baseline is not the one asked for)
    metric: str = METRIC


def _tokens(spec: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", spec.strip()) if t]


def _matches(s: Setting, tokens: list[str]) -> bool:
    keys = list(s.values)
    for t in tokens:
        if "=" in t:
            k, v = t.split("=", 1)
            full = [key for key in keys if key == k or short_key(key, keys) == k]
            if not full or any(s.values[key] != v for key in full):
                return False
        elif t not in s.values.values():
            return False
    return True


def pick_baseline(settings: list[Setting], spec) -> Setting:
    """The setting `spec` names: its label (`position=rope, n_kv_head=4`), or enough `key=value` parts or bare
    values of it to name one setting. None: the first setting of the sweep (Hydra's first job) that finished
    a run."""
    if spec is None or (isinstance(spec, str) and not spec.strip()) or _fmt_value(spec) == ONE_SETTING:
        return min(settings, key=lambda s: (not s.finished, s.order))
    spec = _fmt_value(spec)
    found = [s for s in settings if s.label == spec] or [s for s in settings if _matches(s, _tokens(spec))]
    labels = "; ".join(s.label for s in settings)
    if not found:
        raise UserError(f"compare.baseline={spec} is not a setting of these runs; choose one of: {labels}")
    if len(found) > 1:
        raise UserError(
            f"compare.baseline={spec} matches {len(found)} settings ({'; '.join(s.label for s in found)}); "
            f'name one, e.g. compare.baseline="{found[0].label}"'
        )
    return found[0]


def pairing_problem(settings: list[Setting], baseline: Setting) -> str | None:
    """Why the settings cannot be paired with the baseline (budget or data differ, a seed twice), or None."""
    for s in settings:
        dup = s.duplicate_seed()
        if dup:
            seed, (a, b) = dup
            return f"`{s.label}` has two finished runs with seed {seed} ({a.run_dir}, {b.run_dir}); keep one of them"
    base = baseline.budget()
    for s in settings:
        if s is baseline:
            continue
        mine = s.budget()
        diff = [k for k in base if k in mine and mine[k] != base[k] and "?" not in (mine[k], base[k])]
        if diff:
            what = "data" if diff == [DATA_KEY] else "budgets"
            shown = ", ".join(
                f"{k} {mine[k]} vs {base[k]}" if k != DATA_KEY else "the data config" for k in diff
            )
            return f"`{s.label}` and the baseline `{baseline.label}` differ in {what} ({shown}): runs of different budgets or data cannot be paired"
    return None


def compare_settings(settings: list[Setting], spec=None, strict: bool = True) -> Comparison:
    """Pair every setting with the baseline (see the module docstring). Not strict: a bad `spec` falls back to
    the first setting and unpairable settings give no rows; the note says why."""
    note = None
    try:
        baseline = pick_baseline(settings, spec)
    except UserError as e:
        if strict:
            raise
        baseline = pick_baseline(settings, None)
        note = f"{e}; compared with the first setting, `{baseline.label}`, instead"
    problem = pairing_problem(settings, baseline)
    if problem:
        if strict:
            raise UserError(f"{problem}; compare runs of one budget and data, or pass --unpaired")
        return Comparison(baseline, [], note=f"no paired comparison: {problem}")
    others = [s for s in settings if s is not baseline]
    pairs = {s.label: paired(baseline.by_seed(METRIC), s.by_seed(METRIC)) for s in others}
    adjusted = holm([pairs[s.label].p for s in others])
    rows = [_comparison_row(s, baseline, pairs[s.label], p_holm) for s, p_holm in zip(others, adjusted)]
    return Comparison(baseline, rows, pairs, note)


def verdict(pair: Paired, p_holm: float | None) -> str:
    if pair.n == 0:
        return "no finished seed in common with the baseline"
    if pair.diff.low is None:
        return NO_INTERVAL
    if not pair.distinguishable:
        return NOT_DISTINGUISHABLE
    text = "lower than the baseline" if pair.diff.mean < 0 else "higher than the baseline"
    if p_holm is not None and p_holm > ALPHA:
        text += " (not after Holm's correction)"
    return text


def _comparison_row(s: Setting, baseline: Setting, pair: Paired, p_holm: float | None) -> dict:
    return {
        "setting": s.label,
        "baseline": baseline.label,
        "metric": METRIC,
        "pairs": pair.n,
        "seeds": " ".join(str(x) for x in pair.seeds),
        "mean_diff": pair.diff.mean,
        "std_diff": pair.diff.std,
        "ci_low": pair.diff.low,
        "ci_high": pair.diff.high,
        "p": pair.p,
        "p_holm": p_holm,
        "verdict": verdict(pair, p_holm),
    }


# ---------------------------------------------------------------- rows and markdown


def stat_columns(table: Table) -> list[str]:
    target = ["target_step", "target_tokens", "target_wall_s"] if table.has_target else []
    return ["best_val_loss", "final_val_loss", *table.ext_columns, "tokens_per_s", "wall_s", *target]


def setting_columns(table: Table) -> list[str]:
    cols = ["setting", *table.setting_keys, "runs", "finished", "seeds", "params", "kv_cache_bytes_per_token"]
    if table.has_target:
        cols.append("target_loss")
    for m in stat_columns(table):
        cols += [f"{m}_n", f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"]
    return [*cols, "note"]


def setting_row(s: Setting, table: Table) -> dict:
    finished = s.finished
    row = {"setting": s.label, **s.values, "runs": len(s.runs), "finished": len(finished)}
    row["seeds"] = " ".join(str(r.seed) for r, _ in finished if r.seed is not None)
    row["params"] = s.first("params")
    row["kv_cache_bytes_per_token"] = s.first("kv_cache_bytes_per_token")
    row["target_loss"] = s.first("target_loss")
    for m in stat_columns(table):
        e = s.estimate(m)
        row.update({f"{m}_n": e.n, f"{m}_mean": e.mean, f"{m}_std": e.std})
        row.update({f"{m}_ci_low": e.low, f"{m}_ci_high": e.high})
    row["note"] = "no finished run" if not finished else NO_INTERVAL if len(finished) == 1 else ""
    return row


def settings_markdown(table: Table) -> str:
    """One row per setting: its seeds pooled (mean ± half the 95% interval)."""
    ext_head = [f"val loss {m}×" for m in table.multipliers]
    head = ["setting", "seeds", "params", "best val", "sd", "95% CI", *ext_head, "tokens/s", "KV B/token"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    means = [s.estimate(METRIC).mean for s in table.settings]
    best = min((m for m in means if m is not None), default=None)
    for s, mean in zip(table.settings, means):
        e = s.estimate(METRIC)
        best_cell = "–" if mean is None else f"{mean:.4f}"
        if mean is not None and mean == best:
            best_cell = f"**{best_cell}**"
        n = len(s.finished)
        seeds = str(n) if n == len(s.runs) else f"{n} of {len(s.runs)} finished"
        ext = []
        for c in table.ext_columns:
            x = s.estimate(c)
            na = x.n == 0 and n > 0 and any(row["note"] for _, row in s.finished)
            ext.append("n/a" if na else fmt_estimate(x, ".4f"))
        kv = s.first("kv_cache_bytes_per_token")
        cells = [f"`{s.label}`", seeds, fmt_params(s.first("params")), best_cell]
        cells += ["–" if e.std is None else f"{e.std:.4f}", fmt_interval(e, ".4f"), *ext]
        cells += [fmt_estimate(s.estimate("tokens_per_s"), ",.0f"), "–" if kv is None else f"{kv:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    if table.has_target:
        out += "\n\n" + target_markdown(table)
    return out


def target_markdown(table: Table) -> str:
    """Time to train.target_loss per setting, over the seeds that reached it."""
    head = ["setting", "target val loss", "reached", "step", "tokens", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for s in table.settings:
        target = s.first("target_loss")
        step = s.estimate("target_step")
        cells = [f"`{s.label}`", "–" if target is None else f"{target:g}", f"{step.n} of {len(s.finished)}"]
        cells += [fmt_estimate(step, ",.0f"), fmt_estimate(s.estimate("target_tokens"), ",.0f")]
        wall = s.estimate("target_wall_s")
        cells.append(fmt_estimate(wall, ".1f") + (" s" if wall.n else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def comparison_markdown(table: Table) -> str:
    c: Comparison = table.comparison
    parts = [f"## Paired comparison with `{c.baseline.label}`", ""]
    if c.note:
        parts += [f"Note: {c.note}.", ""]
    if not c.rows:
        return "\n".join(parts).rstrip()
    parts += [
        "Best val loss minus the baseline's, seed by seed (the same seed trains on the same batches in the same "
        "order), averaged over the seeds both finished; 95% interval (Student t), paired t-test p and Holm's "
        f"adjusted p over the {len(c.rows)} setting{'s' if len(c.rows) != 1 else ''} below.",
        "",
    ]
    head = ["setting", "seeds paired", "Δ best val", "95% CI", "p (paired t)", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in c.rows:
        pair: Paired = c.pairs[row["setting"]]
        d = pair.diff
        ci = "–" if d.n == 0 else NO_INTERVAL if d.low is None else f"[{d.low:+.4f}, {d.high:+.4f}]"
        cells = [f"`{row['setting']}`", str(pair.n), "–" if d.mean is None else f"{d.mean:+.4f}", ci]
        cells += [_p(row["p"]), _p(row["p_holm"]), row["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    return "\n".join(parts)
