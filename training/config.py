"""Training and optimizer settings as dataclasses, mirrored field for field by configs/train and configs/optim."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gptlab_errors import UserError


@dataclass
class TrainConfig:
    max_iters: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    grad_clip: float = 1.0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    resume: Any = False  # False | True | "auto"
    ckpt_interval: int | None = None
    stop_after_iters: int | None = None
    sample_tokens: int = 300
    head_metrics_interval: int = 0
    num_threads: int | None = None

    def __post_init__(self):
        for name in ("max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.resume not in (True, False, "auto"):
            raise UserError(f"train.resume must be false, true or auto, got {self.resume!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"train.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.grad_clip < 0:
            raise UserError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None
    decay: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    fused: Any = "auto"  # "auto" | True | False

    def __post_init__(self):
        if self.decay not in ("cosine", "linear", "constant"):
            raise UserError(f"optim.decay must be cosine, linear or constant, got {self.decay!r}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise UserError(
                f"optim.lr must be > 0 and optim.min_lr in [0, lr]; got lr={self.lr}, min_lr={self.min_lr}"
            )
        if self.warmup_iters < 0:
            raise UserError(f"optim.warmup_iters must be >= 0, got {self.warmup_iters}")


def from_mapping(cls, values: dict, group: str):
    """Build dataclass `cls` from a config mapping; unknown keys get one line listing the valid ones."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown key(s) {unknown} in {group}; valid keys: {', '.join(known)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"bad value in {group}: {e}") from e
