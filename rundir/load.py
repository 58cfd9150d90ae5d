"""load_run: a trained run (its directory or a checkpoint file) as a model, a tokenizer and a config.

Every tool that reads a run (sample.py, heads.py, sweeps, export) goes through here. Nothing stored in the
checkpoint is acted on beyond building the model and the tokenizer: no file it names is read or written.

A Hugging Face model directory (a ``config.json`` and no checkpoint) or a hub id (``gpt2``, ``org/name``: not a
local path) is handed to ``interop.hf`` — imported only then, the one place this module reaches upward — so
every tool reads pretrained models too (``python heads.py run=gpt2``).

``step=`` picks another state of a run directory (``load_run(run, step=...)``, the one place that resolves it):
``best`` (best.pt), ``last`` (ckpt.pt) or a step number, which loads the snapshot kept at that step
(``train.snapshots``), or the nearest kept one with a note. A damaged snapshot is skipped with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from data import get_tokenizer
from gptlab_errors import UserError
from model import GPT, GPTConfig

from .checkpoint import CHECKPOINT_NAMES, load_checkpoint, model_state, non_finite, resolve_checkpoint
from .layout import RunDir


@dataclass
class Run:
    """A trained run loaded for use: the model in eval mode, its tokenizer and where it came from."""

    model: GPT
    tokenizer: Any  # data tokenizer: encode / decode / vocab_size / eot_id / name
    meta: dict  # the data meta the tokenizer was built from
    config: dict  # the run's resolved config
    ckpt: dict  # the raw checkpoint (optimizer state etc.)
    ckpt_path: Path
    run_dir: Path
    step: int
    snapshot: bool = False  # a weights-only snapshot (train.snapshots), not best.pt / ckpt.pt
    notes: list[str] = field(default_factory=list)  # what step= resolution did (nearest step, skipped files)


def model_config(stored: dict) -> GPTConfig:
    """GPTConfig from a stored dict, ignoring keys this version does not know (older or newer runs)."""
    known = {f.name for f in fields(GPTConfig)}
    return GPTConfig(**{k: v for k, v in stored.items() if k in known})


def shape_mismatch(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``state`` differs from the expected names and shapes, or None."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} tensor(s) of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(expected[k])} in the model)"
        )
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    return "; ".join(parts) or None


def check_weights(
    stored_config: dict,
    state: dict[str, torch.Tensor],
    source: Path | str,
    why: str = "the file is damaged or was written by another gptlab version",
) -> GPTConfig:
    """The GPTConfig of ``stored_config``, once ``state`` has exactly its tensors, shapes and finite values
    (checked on the meta device: nothing real is allocated); one line naming ``source`` and ``why`` if not."""
    cfg = model_config(stored_config)
    with torch.device("meta"):  # shapes only: a crafted config cannot make us allocate a huge model
        expected = {k: v.shape for k, v in GPT(cfg).state_dict().items()}
    problem = shape_mismatch(expected, state)
    if problem:
        raise UserError(
            f"{source}: the weights do not match the model its config describes ({problem}); {why}"
        )
    bad = non_finite(state)
    if bad:
        raise UserError(
            f"{source} holds non-finite weights ({bad[0]}: NaN or inf); use an earlier checkpoint"
        )
    return cfg


def build_model(stored_config: dict, state: dict[str, torch.Tensor], source: Path) -> GPT:
    """The GPT of ``stored_config`` with the weights ``state`` (checked before any real allocation)."""
    model = GPT(check_weights(stored_config, state, source))
    model.load_state_dict(state)
    return model


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
        from interop.hf import load_hf_run

        return load_hf_run(str(path), device)
    return _load_file(resolve_checkpoint(path), device)


def _load_file(ckpt_path: Path, device) -> Run:
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    model = build_model(ckpt["model_config"], model_state(ckpt), ckpt_path)
    model.to(device).eval()
    meta = ckpt.get("tokenizer")
    if not isinstance(meta, dict) or not meta:
        raise UserError(f"{ckpt_path} has no tokenizer metadata; it was not written by train.py")
    config = ckpt.get("config")
    is_snapshot = ckpt.get("snapshot") is True
    run_dir = ckpt_path.parent
    if is_snapshot and run_dir.name == RunDir.SNAPSHOTS:
        run_dir = run_dir.parent
    return Run(
        model=model,
        tokenizer=get_tokenizer(meta),
        meta=meta,
        config=config if isinstance(config, dict) else {},
        ckpt=ckpt,
        ckpt_path=ckpt_path,
        run_dir=run_dir,
        step=int(ckpt.get("step", 0)),
        snapshot=is_snapshot,
    )


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
        return _load_file(f, device)
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
            run = _load_file(rd.snapshot(s), device)
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
