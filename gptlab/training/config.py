"""train.py's config as dataclasses: ``RunConfig`` (configs/config.yaml) and its sections, field for field.

    RunConfig.from_mapping(config)   the run's typed config from the composed (or saved) config, a dict:
                                     model: GPTConfig, data: DataConfig, train: TrainConfig,
                                     optim: OptimConfig, wandb: WandbConfig, seed, init_from

Built once per run (training.session.run_config) with ``schema.from_mapping``, which checks every key and
every value's type, so ``optim.lr=abc`` gets "optim.lr must be a number, got 'abc'" rather than a TypeError
later; each dataclass checks its own ranges. The run directory and checkpoints keep the plain dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from gptlab.data import DataConfig
from gptlab.errors import UserError
from gptlab.model import GPTConfig
from gptlab.schema import at_least as _at_least
from gptlab.schema import from_mapping

from .snapshots import check_count, parse_snapshots


@dataclass
class TrainConfig:
    RENAMED: ClassVar[dict] = {"num_threads": "threads"}  # configs saved under the old name still load

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
    deterministic: bool = False  # deterministic kernels where torch has them (bit-exact GPU resumes)
    resume: Any = False  # False | True | "auto"
    overwrite: bool = False  # start over in a run directory that already holds a run
    ckpt_interval: int | None = None
    stop_after_iters: int | None = None
    sample_tokens: int = 300
    head_metrics_interval: int = 0
    snapshots: Any = "none"  # none | log | every:N (gptlab/training/snapshots.py)
    snapshots_max: int = 100
    threads: int | None = None  # torch CPU threads; None = runtime.device.threads_for's rule
    target_loss: float | None = None  # record when val loss first reaches it (summary.json: time_to_target)

    def __post_init__(self):
        for name in ("max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval"):
            _at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("ckpt_interval", "stop_after_iters", "threads"):
            if getattr(self, name) is not None:
                _at_least(f"train.{name}", getattr(self, name), 1, "or null")
        _at_least("train.sample_tokens", self.sample_tokens, 0)
        _at_least("train.head_metrics_interval", self.head_metrics_interval, 0, "(0 = off)")
        _at_least("train.snapshots_max", self.snapshots_max, 1)
        check_count(parse_snapshots(self.snapshots), self.max_iters, self.snapshots_max, self.snapshots)
        if self.resume not in (True, False, "auto"):
            raise UserError(f"train.resume must be false, true or auto, got {self.resume!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"train.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.grad_clip < 0:
            raise UserError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.target_loss is not None and not (math.isfinite(self.target_loss) and self.target_loss > 0):
            raise UserError(
                f"train.target_loss must be a positive number (a val loss to reach) or null, got {self.target_loss}"
            )


OPTIMIZERS = ("adamw", "muon")
MUON_ADJUST_LR = ("original", "match_rms_adamw")  # torch.optim.Muon's adjust_lr_fn
MUON_NS_DTYPES = ("auto", "bfloat16", "float32")  # Newton-Schulz precision (training.optim.ns_dtype_for)


@dataclass
class OptimConfig:
    name: str = (
        "adamw"  # adamw | muon (Muon for the blocks' matrices, AdamW for the rest: gptlab/training/optim.py)
    )
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
    # name=muon only: torch.optim.Muon's settings; its lr follows the schedule scaled by muon_lr / lr
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5
    muon_weight_decay: float = 0.0
    muon_adjust_lr: str = "original"  # one of MUON_ADJUST_LR
    muon_ns_dtype: str = "auto"  # one of MUON_NS_DTYPES; auto: bfloat16 unless float32 is measured 2x faster

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise UserError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if self.decay not in ("cosine", "linear", "constant"):
            raise UserError(f"optim.decay must be cosine, linear or constant, got {self.decay!r}")
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "eps"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"optim.{name} must be a finite number, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise UserError(
                f"optim.lr must be > 0 and optim.min_lr in [0, lr]; got lr={self.lr}, min_lr={self.min_lr}"
            )
        if self.weight_decay < 0:
            raise UserError(f"optim.weight_decay must be >= 0 (0 = off), got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eps <= 0:
            raise UserError(f"optim.eps must be > 0, got {self.eps}")
        _at_least("optim.warmup_iters", self.warmup_iters, 0)
        if self.lr_decay_iters is not None:
            _at_least("optim.lr_decay_iters", self.lr_decay_iters, 1, "or null")
            if self.decay != "constant" and self.lr_decay_iters < self.warmup_iters:
                raise UserError(
                    f"optim.lr_decay_iters={self.lr_decay_iters} ends the decay before the warmup "
                    f"(optim.warmup_iters={self.warmup_iters}) does; raise it, or set it to null (= train.max_iters)"
                )
        if self.fused not in ("auto", True, False):
            raise UserError(f"optim.fused must be auto, true or false, got {self.fused!r}")
        if not self.muon_lr > 0:
            raise UserError(f"optim.muon_lr must be > 0, got {self.muon_lr}")
        if not 0 <= self.muon_momentum < 1:
            raise UserError(f"optim.muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if not 1 <= self.muon_ns_steps < 100:  # torch's Muon refuses 100 or more
            raise UserError(f"optim.muon_ns_steps must be an integer in 1..99, got {self.muon_ns_steps}")
        if self.muon_weight_decay < 0:
            raise UserError(f"optim.muon_weight_decay must be >= 0, got {self.muon_weight_decay}")
        if self.muon_ns_dtype not in MUON_NS_DTYPES:
            raise UserError(
                f"optim.muon_ns_dtype must be one of {', '.join(MUON_NS_DTYPES)}, got {self.muon_ns_dtype!r}"
            )
        if self.muon_adjust_lr not in MUON_ADJUST_LR:
            raise UserError(
                f"optim.muon_adjust_lr must be one of {', '.join(MUON_ADJUST_LR)}, got {self.muon_adjust_lr!r}"
            )


@dataclass
class WandbConfig:
    mode: str = "disabled"  # disabled | offline | online
    project: str | None = "gptlab"
    entity: str | None = None
    group: str | None = None
    name: str | None = None  # null: the run directory's name

    def __post_init__(self):
        if self.mode not in ("disabled", "offline", "online"):
            raise UserError(f"wandb.mode must be disabled, offline or online, got {self.mode!r}")


@dataclass
class RunConfig:
    """configs/config.yaml, typed. ``model.vocab_size`` may be None: the prepared data's vocabulary."""

    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = field(default=1337, metadata={"expected": "a non-negative integer"})
    init_from: str | None = None  # an HF hub id or directory: the model section is the pretrained one
    extra: dict = field(default_factory=dict)  # other top-level keys: compare (sweep/), +key=... additions

    def __post_init__(self):
        if self.seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_mapping(cls, config: Mapping) -> RunConfig:
        """Every section checked (unknown keys, types, ranges), before anything is written. Other top-level
        keys are kept in ``extra``, unchecked: ``compare`` belongs to the sweep summary (gptlab/sweep/callback.py),
        and cli.py lets ``+key=...`` add a key (a note on the run, kept in config.yaml)."""
        names = [f.name for f in fields(cls) if f.name != "extra"]
        extra = {k: v for k, v in config.items() if k not in names}
        run = from_mapping(cls, {k: v for k, v in config.items() if k in names})
        run.extra = extra
        return run
