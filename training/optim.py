"""AdamW with weight decay on matrices only, and the warmup + decay learning-rate schedule."""

from __future__ import annotations

import inspect
import math

import torch

from .config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW where every parameter with dim >= 2 (weight matrices, embeddings) decays and the rest
    (norm gains, biases, ALiBi/T5 scalars) does not. Uses the fused kernel where the device has one."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in (
        "cuda",
        "cpu",
        "mps",
    )
    use_fused = fused_ok if cfg.fused == "auto" else bool(cfg.fused)
    if use_fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def lr_at(step: int, cfg: OptimConfig, max_iters: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to cfg.lr over warmup_iters,
    then cosine (or linear) decay to cfg.min_lr at lr_decay_iters (default max_iters), then flat."""
    if cfg.warmup_iters > 0 and step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    if cfg.decay == "constant":
        return cfg.lr
    decay_iters = cfg.lr_decay_iters or max_iters
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    if cfg.decay == "linear":
        coeff = 1.0 - progress
    else:
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)
