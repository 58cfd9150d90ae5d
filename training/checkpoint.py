"""Checkpoints: atomic writes, validated loads, and `load_run` for every tool that reads a trained run.

A checkpoint is a plain dict saved with `torch.save` and read back with `weights_only=True`, so it holds
only tensors and plain Python values (no pickled classes). Keys are listed in docs/architecture.md.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from gptlab_errors import UserError

FORMAT = "gptlab-checkpoint"
VERSION = 1
RUN_CHECKPOINTS = ("best.pt", "ckpt.pt")  # the order in which a run directory's checkpoints are picked


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)` and rename the result onto `path`, so `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, **payload: Any) -> None:
    """Write a checkpoint atomically. `payload` needs at least `model` (state dict) and `model_config`."""
    missing = {"model", "model_config"} - payload.keys()
    if missing:
        raise ValueError(f"save_checkpoint needs {sorted(missing)}")
    obj = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (best.pt first, then ckpt.pt) -> the checkpoint file."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in RUN_CHECKPOINTS:
            if (p / name).is_file():
                return p / name
        raise UserError(f"run directory {p} has no best.pt or ckpt.pt; train first or pass a checkpoint file")
    if p.is_file():
        return p
    raise UserError(f"no run directory or checkpoint at {p}; pass run=<run dir or .pt file>")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint file; a truncated or foreign file raises a one-line UserError."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpicklable content, ...
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{p} is not a readable gptlab checkpoint (truncated or foreign file: {reason})"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{p} is a torch file but not a gptlab checkpoint; pass a run trained by train.py")
    if ckpt.get("version", 0) > VERSION:
        raise UserError(f"{p} was written by a newer gptlab (checkpoint version {ckpt['version']}); upgrade")
    return ckpt


@dataclass
class Run:
    """A trained run loaded for use: the model in eval mode, its tokenizer and where it came from."""

    model: Any  # model.GPT
    tokenizer: Any  # data tokenizer (encode/decode/vocab_size/eot_id/name)
    meta: dict  # the data meta the tokenizer was built from
    config: dict  # the run's resolved config
    ckpt: dict  # the raw checkpoint (optimizer state etc.)
    ckpt_path: Path
    run_dir: Path
    step: int


def build_model(model_config: dict):
    """GPT from a stored config dict, ignoring keys this version does not know (older/newer runs)."""
    from model import GPT, GPTConfig

    known = {f.name for f in fields(GPTConfig)}
    return GPT(GPTConfig(**{k: v for k, v in model_config.items() if k in known}))


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run directory or checkpoint file: model (eval mode, on `device`), tokenizer, config."""
    from data import get_tokenizer

    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    if not isinstance(ckpt.get("model_config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{ckpt_path} has no model or model_config; it was not written by train.py")
    model = build_model(ckpt["model_config"])
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(
            f"{ckpt_path}: its weights do not match this gptlab version's model "
            f"({str(e).splitlines()[0][:100]}); train it again or use the gptlab that wrote it"
        ) from e
    model.to(device).eval()
    meta = ckpt.get("tokenizer") or {}
    if not meta:
        raise UserError(f"{ckpt_path} has no tokenizer metadata; it was not written by train.py")
    return Run(
        model=model,
        tokenizer=get_tokenizer(meta),
        meta=meta,
        config=ckpt.get("config") or {},
        ckpt=ckpt,
        ckpt_path=ckpt_path,
        run_dir=ckpt_path.parent,
        step=int(ckpt.get("step", 0)),
    )
