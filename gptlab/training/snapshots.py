"""``train.snapshots``: weights-only copies of the model at chosen steps, kept in ``<run>/snapshots/``.

    none       keep none (the default)
    log        steps 0, 1, 2, 4, 8, ... (powers of two) and the final step: ~log2(max_iters) + 2 files
    every:N    steps 0, N, 2N, ... and the final step

Step s is the model after s optimizer steps (step 0: the initial weights). A snapshot holds the weights, the
model config, the tokenizer metadata, the run's config and the step (no optimizer state: a third of ckpt.pt's
size with AdamW), so ``load_run`` reads it like any checkpoint. Files are written atomically through
``RunDir.snapshot(step)``; a resume first drops the snapshots after its checkpoint's step (rundir.layout),
then takes them again as it reaches them, so the kept steps are those of a straight run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gptlab.errors import UserError

_EVERY = re.compile(r"every:(\d+)")


@dataclass(frozen=True)
class SnapshotSchedule:
    """Which steps keep a snapshot: ``kind`` none | log | every (``every`` = N)."""

    kind: str = "none"
    every: int = 0

    def due(self, step: int, max_iters: int) -> bool:
        if self.kind == "none" or step < 0 or step > max_iters:
            return False
        if step == max_iters:
            return True
        if self.kind == "log":
            return step == 0 or step & (step - 1) == 0
        return step % self.every == 0

    def steps(self, max_iters: int) -> list[int]:
        """Every step this schedule keeps in a run of ``max_iters`` steps, ascending."""
        if self.kind == "none":
            return []
        if self.kind == "log":
            out = [0] + [1 << k for k in range(max(max_iters, 1).bit_length()) if 1 << k <= max_iters]
        else:
            out = list(range(0, max_iters + 1, self.every))
        return sorted(set(out) | {max_iters})


def parse_snapshots(spec) -> SnapshotSchedule:
    """``train.snapshots`` as a schedule; anything else than none / log / every:N is one line."""
    text = "none" if spec is None or spec is False else str(spec).strip().lower()
    if text in ("none", "log"):
        return SnapshotSchedule(text)
    m = _EVERY.fullmatch(text)
    if m and int(m.group(1)) >= 1:
        return SnapshotSchedule("every", int(m.group(1)))
    raise UserError(
        f"train.snapshots must be none, log or every:N with N a positive integer (e.g. every:100), got {spec!r}"
    )


def check_count(schedule: SnapshotSchedule, max_iters: int, max_count: int, spec) -> int:
    """The number of snapshots a run of ``max_iters`` keeps; over ``max_count`` is one line."""
    n = len(schedule.steps(max_iters))
    if n > max_count:
        per = -(-max_iters // max(max_count - 1, 1))
        raise UserError(
            f"train.snapshots={spec} keeps {n} snapshots over {max_iters} steps, more than "
            f"train.snapshots_max={max_count}; use train.snapshots=every:{per} or log, or raise train.snapshots_max"
        )
    return n


def describe(schedule: SnapshotSchedule, max_iters: int, nbytes: int) -> str:
    """One line: how many snapshots at which steps, and what they cost on disk."""
    steps = schedule.steps(max_iters)
    shown = ", ".join(map(str, steps)) if len(steps) <= 8 else (
        ", ".join(map(str, steps[:5])) + ", ..., " + ", ".join(map(str, steps[-2:]))
    )  # fmt: skip
    mb, total = nbytes / 1e6, nbytes * len(steps) / 1e6
    return (
        f"snapshots: {len(steps)} at steps {shown} (weights only, about {mb:.1f} MB each, "
        f"{total:.{1 if total < 10 else 0}f} MB in all)"
    )
