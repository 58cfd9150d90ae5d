"""Head metrics over training: from metrics.jsonl "heads" rows, or measured on a series of checkpoints."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np

from gptlab.errors import UserError
from gptlab.open_run import load_run
from gptlab.rundir.files import read_jsonl


def read_head_rows(metrics_path: str | Path) -> list[dict]:
    """The `{"kind": "heads", "step", "heads": [...]}` rows of a metrics.jsonl, in step order."""
    rows = [r for r in read_jsonl(metrics_path) if r.get("kind") == "heads" and r.get("heads")]
    return sorted(rows, key=lambda r: r["step"])


def stack_over_steps(rows: list[dict], metric: str) -> tuple[list[int], np.ndarray]:
    """`(steps, values (n_steps, n_layer, n_head))` of one metric from heads rows (NaN where missing)."""
    L = 1 + max(h["layer"] for r in rows for h in r["heads"])
    H = 1 + max(h["head"] for r in rows for h in r["heads"])
    vals = np.full((len(rows), L, H), np.nan)
    for s, r in enumerate(rows):
        for h in r["heads"]:
            v = h.get(metric)
            if v is not None:
                vals[s, h["layer"], h["head"]] = v
    return [int(r["step"]) for r in rows], vals


def snapshot_checkpoints(pattern: str, device="cpu") -> list[dict]:
    """Measure `interp.tracking.head_metrics_snapshot` on every checkpoint matching the glob `pattern` (a run's
    snapshots: "runs/x/snapshots/*.pt"); an unreadable file is skipped with a note."""
    from .tracking import head_metrics_snapshot

    paths = sorted(glob.glob(str(Path(pattern).expanduser())))
    if not paths:
        raise UserError(f"no checkpoint files match steps.checkpoints={pattern!r}")
    rows = []
    for p in paths:
        try:
            run = load_run(p, device=device)
        except UserError as e:  # a damaged file among many (a snapshot torn by a kill): skip it, say so
            print(f"note: skipped {p}: {e}", file=sys.stderr)
            continue
        rows.append(
            {"kind": "heads", "step": run.step, "heads": head_metrics_snapshot(run.model, run.meta, device)}
        )
    return sorted(rows, key=lambda r: r["step"])
