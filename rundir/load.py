"""load_run: a trained run (its directory or a checkpoint file) as a model, a tokenizer and a config.

Every tool that reads a run (sample.py, heads.py, sweeps, export) goes through here. Nothing stored in the
checkpoint is acted on beyond building the model and the tokenizer: no file it names is read or written.

A Hugging Face model directory (a ``config.json`` and no checkpoint) or a hub id (``gpt2``, ``org/name``: not a
local path) is handed to ``interop.hf`` — imported only then, the one place this module reaches upward — so
every tool reads pretrained models too (``python heads.py run=gpt2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from data import get_tokenizer
from gptlab_errors import UserError
from model import GPT, GPTConfig

from .checkpoint import CHECKPOINT_NAMES, load_checkpoint, model_state, non_finite, resolve_checkpoint


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


def is_hf_source(path: str | Path) -> bool:
    """A Hugging Face model directory (config.json, no checkpoint), or a string shaped like a hub id that is no
    local path (its first part not a local folder either, so a mistyped ``runs/x`` never goes to the hub)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return (p / "config.json").is_file() and not any((p / n).is_file() for n in CHECKPOINT_NAMES)
    s = str(path)
    return (
        not p.exists()
        and HUB_ID.fullmatch(s) is not None
        and not s.endswith((".pt", ".json", ".safetensors", ".bin"))
        and not Path(s.split("/")[0]).exists()
    )


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run directory (best.pt, else ckpt.pt) or a checkpoint file: model in eval mode on ``device``.

    An HF model directory or a hub id loads through interop.hf (``Run.step`` 0, ``Run.ckpt`` empty).
    """
    if is_hf_source(path):
        from interop.hf import load_hf_run

        return load_hf_run(str(path), device)
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    model = build_model(ckpt["model_config"], model_state(ckpt), ckpt_path)
    model.to(device).eval()
    meta = ckpt.get("tokenizer")
    if not isinstance(meta, dict) or not meta:
        raise UserError(f"{ckpt_path} has no tokenizer metadata; it was not written by train.py")
    config = ckpt.get("config")
    return Run(
        model=model,
        tokenizer=get_tokenizer(meta),
        meta=meta,
        config=config if isinstance(config, dict) else {},
        ckpt=ckpt,
        ckpt_path=ckpt_path,
        run_dir=ckpt_path.parent,
        step=int(ckpt.get("step", 0)),
    )
