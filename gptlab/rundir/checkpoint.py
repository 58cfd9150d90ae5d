"""Checkpoints: plain dicts written with ``torch.save`` and always read back with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (no pickled classes), so loading one can never run
code. Keys (docs/architecture.md): ``format``, ``version``, ``model`` (state dict), ``model_config``, and from
train.py ``optimizer``, ``scaler``, ``step``, ``best_val_loss``, ``rng``, ``loader``, ``config``, ``tokenizer``.

Saving refuses weights that are not finite (:class:`NonFiniteWeights`), so a diverged model can never replace
a good checkpoint, whoever asks for the save.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gptlab.errors import UserError

from .files import atomic_write

FORMAT = "gptlab-checkpoint"
VERSION = 1
CHECKPOINT_NAMES = ("best.pt", "ckpt.pt")  # the order in which a run directory's checkpoints are picked
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # added by torch.compile and DDP


class NonFiniteWeights(ValueError):
    """The weights hold NaN or inf; the checkpoint was not written."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first line, cut at a word boundary if it is long (never mid-word)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0] + " …"
    return line


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or inf."""
    return [
        k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()
    ]


def save_checkpoint(path: str | Path, **payload: Any) -> Path:
    """Write a checkpoint atomically; ``payload`` needs ``model`` (a state dict) and ``model_config``.

    Raises NonFiniteWeights (and writes nothing) when a weight is NaN or inf.
    """
    missing = {"model", "model_config"} - payload.keys()
    if missing:
        raise ValueError(f"save_checkpoint needs {sorted(missing)}")
    bad = non_finite(payload["model"])
    if bad:
        raise NonFiniteWeights(f"{len(bad)} weight tensor(s) are not finite (first: {bad[0]})")
    obj = {"format": FORMAT, "version": VERSION, **payload}
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (best.pt first, then ckpt.pt) -> the checkpoint file."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                return p / name
        raise UserError(f"run directory {p} has no best.pt or ckpt.pt; train first or pass a checkpoint file")
    if p.is_file():
        return p
    raise UserError(f"no run directory or checkpoint at {p}; pass run=<run dir or .pt file>")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint; a truncated, foreign or code-carrying file raises a one-line UserError."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickled objects weights_only refuses, ...
        raise UserError(f"{p} is not a readable gptlab checkpoint ({_why_unreadable(p, e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{p} is a torch file but not a gptlab checkpoint; pass a run trained by train.py")
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise UserError(
            f"{p} was written by a newer gptlab (checkpoint version {ckpt.get('version')}); upgrade"
        )
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_config"), dict):
        raise UserError(f"{p} has no model or model_config; it was not written by train.py")
    return ckpt


def _why_unreadable(path: Path, e: Exception) -> str:
    """Why torch.load refused a file, in the user's terms (torch's own text suggests weights_only=False)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "not a torch zip file: truncated, or not a checkpoint at all"
    if "Unsupported global" in str(e) or "weights_only" in str(e):
        return "it holds pickled Python objects, which could run code: refused (gptlab saves plain tensors)"
    return f"a damaged torch file: {first_line(e, 160)}"


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's model state dict with torch.compile / DDP wrapper prefixes removed."""
    out = {}
    for k, v in ckpt["model"].items():
        for prefix in WRAPPER_PREFIXES:
            k = k.removeprefix(prefix)
        out[k] = v
    return out
