"""load_run: a trained run (its directory or a checkpoint file) as a model, a tokenizer and a config.

Every tool that reads a run (sample.py, heads.py, sweeps, export) goes through here. A checkpoint file is read by
``rundir.load``; a Hugging Face model directory (a ``config.json`` and no checkpoint) or a hub id (``gpt2``,
``org/name``: not a local path) is handed to ``interop.hf`` — imported only then — so every tool reads
pretrained models too (``python heads.py run=gpt2``). This module sits above both loaders.

``step=`` picks another state of a run directory (``load_run(run, step=...)``, the one place that resolves it):
``best`` (best.pt), ``last`` (ckpt.pt) or a step number, which loads the snapshot kept at that step
(``train.snapshots``), or the nearest kept one with a note. A damaged snapshot is skipped with a note.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gptlab.errors import UserError
from gptlab.rundir.checkpoint import CHECKPOINT_NAMES, resolve_checkpoint
from gptlab.rundir.layout import RunDir
from gptlab.rundir.load import Run, load_file

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# the folders the lab's runs live in: a run= under one of them is a local path, never a hub org
LOCAL_ROOTS = ("runs", "multirun", "outputs", "exports", "sweeps")


def looks_local(path: str | Path) -> bool:
    """A ``run=`` that can only mean a local path: it starts with ``.``, ``/`` or ``~``, has more parts than a
    hub id (``org/name``), starts with a folder where runs live (``runs/…``), or its first part exists here."""
    s = str(path)
    first = s.replace("\\", "/").split("/")[0]
    return (
        s.startswith((".", "/", "~"))
        or s.count("/") > 1
        or "\\" in s
        or ("/" in s and (first in LOCAL_ROOTS or Path(first).exists()))
    )


def is_hf_source(path: str | Path) -> bool:
    """A Hugging Face model directory (config.json, no checkpoint), or a string shaped like a hub id that is no
    local path (:func:`looks_local`: so a mistyped ``runs/x`` says "no run directory", never "hub offline")."""
    p = Path(path).expanduser()
    if p.is_dir():
        return (p / "config.json").is_file() and not any((p / n).is_file() for n in CHECKPOINT_NAMES)
    s = str(path)
    return (
        not p.exists()
        and HUB_ID.fullmatch(s) is not None
        and not s.endswith((".pt", ".json", ".safetensors", ".bin"))
        and not looks_local(s)
    )


def load_run(path: str | Path, device: str | torch.device = "cpu", step: int | str | None = None) -> Run:
    """Load a run directory (best.pt, else ckpt.pt) or a checkpoint file: model in eval mode on ``device``.

    ``step`` (a run directory only): ``"best"``, ``"last"`` or a step number (the snapshot kept there, else the
    nearest kept one; ``Run.notes`` says so). An HF model directory or a hub id loads through interop.hf
    (``Run.step`` 0, ``Run.ckpt`` empty).
    """
    if step is not None:
        return _load_step(path, device, parse_step(step))
    if is_hf_source(path):
        from gptlab.interop.hf import load_hf_run

        return load_hf_run(str(path), device)
    return load_file(resolve_checkpoint(path), device)


def parse_step(step: int | str) -> int | str:
    """``step=`` as ``"best"``, ``"last"`` or a step number >= 0; anything else is one line."""
    if isinstance(step, str) and step.strip().lower() in ("best", "last"):
        return step.strip().lower()
    if isinstance(step, str) and step.strip().isdigit():
        return int(step.strip())
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return step
    raise UserError(f"step={step!r} must be a step number (0, 1, 2, ...), best or last")


def kept_steps_text(steps: list[int]) -> str:
    """``0, 1, 2, 4, ..., 1024, 1500 (13 steps)``: the kept steps, shortened when there are many."""
    if len(steps) <= 10:
        return ", ".join(map(str, steps))
    return (
        ", ".join(map(str, steps[:5]))
        + ", ..., "
        + ", ".join(map(str, steps[-3:]))
        + f" ({len(steps)} steps)"
    )


def _load_step(path: str | Path, device, step: int | str) -> Run:
    p = Path(path).expanduser()
    if not p.is_dir():
        if p.is_file():
            raise UserError(
                f"step= picks a state of a run directory; pass run=<run directory> (not {p.name}) with it"
            )
        if is_hf_source(path):
            raise UserError(
                f"step= picks a state of a run trained here; {path} is a pretrained model with one state"
            )
        resolve_checkpoint(p)  # the usual one line for a path that is not there
    rd = RunDir(p)
    if step in ("best", "last"):
        f = rd.best if step == "best" else rd.ckpt
        if not f.is_file():
            other = "step=last (ckpt.pt)" if step == "best" else "step=best (best.pt)"
            raise UserError(f"{p} has no {f.name}; try {other} or a kept step number")
        return load_file(f, device)
    assert isinstance(step, int)  # parse_step gave a number, or best or last (handled above)
    kept = rd.snapshot_steps()
    if not kept:
        raise UserError(
            f"{p} keeps no snapshots (train it with train.snapshots=log to keep them); "
            "step=best or step=last load best.pt or ckpt.pt"
        )
    if step > kept[-1]:
        raise UserError(
            f"step={step} is beyond the snapshots of {p}: kept steps are {kept_steps_text(kept)}; "
            "step=last loads ckpt.pt"
        )
    notes = []
    for s in sorted(kept, key=lambda k: (abs(k - step), k)):
        try:
            run = load_file(rd.snapshot(s), device)
        except UserError as e:
            why = str(e).replace(f"{rd.snapshot(s)} ", "")
            notes.append(f"skipped the damaged snapshot {rd.snapshot(s)} ({why})")
            continue
        if s != step:
            notes.append(
                f"step {step} is not kept; using the nearest kept step, {s} (kept: {kept_steps_text(kept)})"
            )
        run.notes = notes
        return run
    raise UserError(
        f"every snapshot in {rd.snapshots} is damaged; step=best or step=last load best.pt or ckpt.pt"
    )
