"""The columns of the sweep's tables: which config keys tell runs apart, how a cell is written, and the
``Table`` that sweep.table fills and sweep.settings pools and pairs (both import it; it imports neither).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gptlab.sweep.runs import RunRecord
from gptlab.sweep.stats import NO_INTERVAL, Estimate

# Override keys that never describe the architecture or budget being compared.
IGNORED_KEYS = {
    "experiment",
    "train.resume",
    "wandb.group",
    "wandb.name",
    "wandb.mode",
    "wandb.project",
    "wandb.entity",
    "compare.baseline",
}
IGNORED_PREFIXES = ("hydra.", "hydra/")
SEED_KEY = "seed"
# What a run's number depends on besides its architecture: always checked in the resolved configs (even
# when no run overrode them), so runs of different budgets or data are never pooled or paired.
BUDGET_KEYS = ("train.max_iters", "train.batch_size", "train.grad_accum", "model.block_size")
DATA_KEY = "data"
DATA_IGNORED = ("out_dir", "num_proc")  # where the prepared files go and how fast: not what they hold

METRIC_COLUMNS = [
    "params",
    "best_val_loss",
    "final_val_loss",
    "tokens_per_s",
    "wall_s",
    "kv_cache_bytes_per_token",
]
TARGET_COLUMNS = ["target_loss", "target_step", "target_tokens", "target_wall_s"]


@dataclass
class Table:
    keys: list[str]  # the keys whose values differ between runs (`seed` among them when seeds differ)
    multipliers: list[int]  # extrapolation lengths, in multiples of the training block size
    rows: list[dict]  # one per run: run, status, label, setting, <keys>, METRIC_COLUMNS, val_loss_<m>x, note
    runs: list[RunRecord]  # same order as rows
    settings: list = field(default_factory=list)  # sweep.settings.Setting, best first
    comparison: Any = None  # sweep.settings.Comparison, or None with fewer than two settings

    @property
    def setting_keys(self) -> list[str]:
        return [k for k in self.keys if k != SEED_KEY]

    @property
    def has_target(self) -> bool:
        return any(r.get("target_loss") is not None for r in self.rows)

    @property
    def ext_columns(self) -> list[str]:
        return [f"val_loss_{m}x" for m in self.multipliers]

    @property
    def columns(self) -> list[str]:
        target = TARGET_COLUMNS if self.has_target else []
        return ["run", "status", "setting", *self.keys, *METRIC_COLUMNS, *self.ext_columns, *target, "note"]

    @property
    def seeded(self) -> bool:
        """Whether some setting has more than one run (a sweep with seeds)."""
        return any(len(s.runs) > 1 for s in self.settings)


def _fmt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _data_identity(run: RunRecord) -> str | None:
    data = run.config.get("data")
    if not isinstance(data, dict):
        return None
    kept = {k: v for k, v in data.items() if k not in DATA_IGNORED}
    return json.dumps(kept, sort_keys=True, default=str)


def short_key(key: str, keys: list[str]) -> str:
    """`model.position` -> `position`, unless another key ends the same way."""
    last = key.rsplit(".", 1)[-1]
    clash = sum(1 for k in keys if k.rsplit(".", 1)[-1] == last) > 1
    return key if clash else last


def label_of(values: dict[str, str | None], keys: list[str]) -> str:
    """`position=alibi, n_kv_head=1` from a run's (or setting's) values of `keys`."""
    return ", ".join(f"{short_key(k, keys)}={'?' if values.get(k) is None else values[k]}" for k in keys)


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


def fmt_estimate(e: Estimate, fmt: str) -> str:
    """`2.1430 ± 0.0120` (the ± is half the 95% interval), the value alone for one seed, `–` for none."""
    if e.n == 0:
        return "–"
    if e.half is None:
        return format(e.mean, fmt)
    return f"{format(e.mean, fmt)} ± {format(e.half, fmt)}"


def fmt_interval(e: Estimate, fmt: str) -> str:
    if e.n == 0:
        return "–"
    if e.low is None:
        return NO_INTERVAL
    return f"[{format(e.low, fmt)}, {format(e.high, fmt)}]"
