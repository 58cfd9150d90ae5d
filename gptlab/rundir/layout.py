"""RunDir: the files of one run directory and the rules for writing them (docs/architecture.md, "Runs").

    config.yaml      the run's resolved config (written once the start or resume is accepted)
    ckpt.pt          the latest checkpoint;  best.pt: the one with the lowest val loss
    metrics.jsonl    one JSON object per line (train / eval / heads rows), appended as the run goes
    summary.json     status (running, finished, failed, interrupted), step, losses, speed, overrides
    loss.png         the loss curves
    snapshots/       weights-only checkpoints at the steps train.snapshots keeps: step_000400.pt, ...
    .lock            held (flock) by the one process training in this directory

Every write is atomic or an append; every read tolerates a torn last line, and a summary or metrics field of
the wrong type (a hand-edited file) reads as absent, so no reader computes with it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .files import (
    DirLock,
    append_jsonl,
    atomic_write,
    read_json,
    read_jsonl,
    read_yaml,
    remove_stale_temps,
    write_json,
)

SNAPSHOT_NAME = re.compile(r"step_(\d+)\.pt")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _list_of(kind: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(isinstance(x, kind) for x in v)


# the fields readers compute with, and the values each may hold (a value of another type reads as absent)
SUMMARY_FIELDS: dict[str, Callable[[Any], bool]] = {
    **dict.fromkeys(("status", "error", "stop_reason", "device", "dtype", "init_from"), _is_str),
    **dict.fromkeys(("step", "max_iters", "params", "world_size"), _is_int),
    **dict.fromkeys(
        ("best_val_loss", "final_val_loss", "tokens_per_s", "wall_s", "kv_cache_bytes_per_token"), _is_number
    ),
    "overrides": _list_of(str),
    "resumes": _list_of(dict),
}
METRIC_FIELDS: dict[str, Callable[[Any], bool]] = {
    "kind": _is_str,
    "step": _is_int,
    **dict.fromkeys(
        ("train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "elapsed_s"), _is_number
    ),
    "heads": _list_of(dict),
}


def _typed(row: dict, fields: dict[str, Callable[[Any], bool]]) -> dict:
    return {k: v for k, v in row.items() if v is None or k not in fields or fields[k](v)}


def typed_summary(summary: dict) -> dict:
    """``summary`` without the known fields whose value has the wrong type (None stays: "not known yet")."""
    return _typed(summary, SUMMARY_FIELDS)


class RunDir:
    """One run directory. Paths: ``config``, ``ckpt``, ``best``, ``metrics``, ``summary``, ``loss_png``."""

    CONFIG, CKPT, BEST = "config.yaml", "ckpt.pt", "best.pt"
    METRICS, SUMMARY, LOSS_PNG, LOCK = "metrics.jsonl", "summary.json", "loss.png", ".lock"
    # what a run leaves behind; a fresh start with train.overwrite=true removes exactly these
    RUN_FILES = (CONFIG, CKPT, BEST, METRICS, SUMMARY, LOSS_PNG, "extrapolation.json", "wandb_id.txt")
    SNAPSHOTS = "snapshots"  # folder of weights-only snapshots, one file per kept step

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / self.CONFIG
        self.ckpt = self.path / self.CKPT
        self.best = self.path / self.BEST
        self.metrics = self.path / self.METRICS
        self.summary = self.path / self.SUMMARY
        self.loss_png = self.path / self.LOSS_PNG
        self.snapshots = self.path / self.SNAPSHOTS

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------ reading
    def existing_files(self) -> list[str]:
        """The run files present (a directory Hydra just made holds none of them)."""
        found = [name for name in self.RUN_FILES if (self.path / name).exists()]
        return found + ([self.SNAPSHOTS] if self.snapshot_steps() else [])

    def snapshot(self, step: int) -> Path:
        """The file of the snapshot at ``step``: ``snapshots/step_000400.pt``."""
        return self.snapshots / f"step_{int(step):06d}.pt"

    def snapshot_steps(self) -> list[int]:
        """The steps with a snapshot file, ascending (the file may still be damaged: loading says so)."""
        if not self.snapshots.is_dir():
            return []
        found = (SNAPSHOT_NAME.fullmatch(p.name) for p in self.snapshots.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def read_summary(self) -> dict:
        """summary.json as a dict; a field of the wrong type (hand-edited, or another program's) reads as absent."""
        return typed_summary(read_json(self.summary, {}))

    def read_config(self) -> dict:
        cfg = read_yaml(self.config)
        return cfg if isinstance(cfg, dict) else {}

    def read_metrics(self, kind: str | None = None) -> list[dict]:
        """metrics.jsonl's rows (of one ``kind``); a field of the wrong type reads as absent."""
        rows = [_typed(row, METRIC_FIELDS) for row in read_jsonl(self.metrics)]
        return rows if kind is None else [r for r in rows if r.get("kind") == kind]

    # ------------------------------------------------------------------------------------------ writing
    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def write_config(self, config: dict) -> None:
        import yaml

        atomic_write(self.config, yaml.safe_dump(config, sort_keys=False))

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.metrics, row)

    def truncate_metrics(self, step: int) -> None:
        """Keep only rows up to ``step`` (a resumed run logs each later step again); drops a torn line."""
        if not self.metrics.exists():
            return
        rows = [r for r in read_jsonl(self.metrics) if _is_int(r.get("step", 0)) and r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if text != self.metrics.read_text(encoding="utf-8", errors="replace"):
            atomic_write(self.metrics, text)

    def truncate_snapshots(self, step: int) -> None:
        """Drop snapshots after ``step`` (a resumed run takes them again) and temporaries a kill left there."""
        for s in self.snapshot_steps():
            if s > step:
                self.snapshot(s).unlink(missing_ok=True)
        if self.snapshots.is_dir():
            remove_stale_temps(self.snapshots)

    def remove_run_files(self) -> list[str]:
        """Delete every run file (a fresh start over an old run, asked for with train.overwrite=true)."""
        gone = self.existing_files()
        for name in gone:
            if name == self.SNAPSHOTS:
                self.truncate_snapshots(-1)
                try:
                    self.snapshots.rmdir()
                except OSError:  # the user's own files are in it
                    pass
            else:
                (self.path / name).unlink(missing_ok=True)
        return gone

    def discard_if_unused(self) -> bool:
        """Remove a run directory that holds no run file (a run refused or stopped while starting): Hydra's
        ``.hydra/`` and empty ``train.log``, the lock file, then the folder itself if nothing else is left in it.
        Call it holding the lock. Returns True when the folder is gone."""
        if self.existing_files() or not self.path.is_dir():
            return False
        shutil.rmtree(self.path / ".hydra", ignore_errors=True)
        log = self.path / "train.log"
        if log.is_file() and log.stat().st_size == 0:
            log.unlink()
        (self.path / self.LOCK).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # the user's own files are in it
            return False
        return True

    def lock(self, holder: str = "train.py") -> DirLock:
        """The exclusive lock a trainer holds on this directory (a second trainer gets one line)."""
        return DirLock(self.path / self.LOCK, holder, what="run directory")
