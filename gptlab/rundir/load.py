"""Run, and one checkpoint file as a model, a tokenizer and a config; the weight checks every loader shares.

``Run`` is what every tool reads (open_run.load_run returns one; interop.hf builds one for a Hugging Face
model through ``build_model``). Nothing stored in the checkpoint is acted on beyond building the model and the
tokenizer: no file it names is read or written. Sits on ``model`` and ``data`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from gptlab.data import get_tokenizer
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig

from .checkpoint import load_checkpoint, model_state, non_finite
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


def load_file(ckpt_path: Path, device) -> Run:
    """A checkpoint file (best.pt, ckpt.pt or a snapshot) as a Run: model in eval mode on ``device``."""
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
