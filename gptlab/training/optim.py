"""The optimizer (AdamW, or Muon + AdamW) and the warmup + decay learning-rate schedule.

``build_optimizer`` owns which parameter goes where:

* ``optim.name=adamw``: AdamW on everything; weight decay on every parameter with dim >= 2 (weight matrices,
  embeddings, position tables), none on norm gains, biases and ALiBi/T5 scalars.
* ``optim.name=muon``: ``torch.optim.Muon`` on the hidden weight matrices, i.e. every Linear weight inside
  ``model.blocks`` (attention q/k/v/o, the MLP's fc/proj or gate/up/proj), with ``optim.muon_weight_decay``;
  AdamW, split as above, on the rest: token embedding, output head (tied or not), position parameters,
  norms (qk_norm included) and biases. Muon orthogonalises each matrix's momentum (Newton-Schulz), which
  only makes sense for a matrix that maps one hidden space to another, hence the split.

Both are stepped as one optimizer (``MuonAdamW``): one ``step``, one ``zero_grad``, one ``param_groups``
list for the schedule and the gradient scaler, and one ``state_dict`` holding both states, so checkpoints and
bit-exact resume work as with AdamW alone. ``set_lr`` gives each group its learning rate: the schedule's
``lr_at`` for AdamW's groups, the same curve scaled by ``muon_lr / lr`` for Muon's (its group's
``lr_scale``, saved with its state).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .config import OptimConfig


def _adamw(params: list[nn.Parameter], cfg: OptimConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on the parameters with dim >= 2 only; the fused kernel where the device has one."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
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


def muon_params(model: nn.Module) -> list[nn.Parameter]:
    """The hidden weight matrices Muon trains: every Linear weight inside ``model.blocks``."""
    out, seen = [], set()
    for block in model.blocks:
        for mod in block.modules():
            if isinstance(mod, nn.Linear) and mod.weight.requires_grad and id(mod.weight) not in seen:
                seen.add(id(mod.weight))
                out.append(mod.weight)
    return out


class MuonAdamW:
    """Muon on the hidden matrices and AdamW on the rest, stepped, zeroed, scheduled and saved as one.

    ``param_groups`` is Muon's groups followed by AdamW's (the same dicts, so setting a group's lr sets the
    optimizer's); ``state_dict()`` is ``{"muon": ..., "adamw": ...}``. Enough of torch's Optimizer interface
    for the loop and ``torch.amp.GradScaler`` (which then reads its overflow flag on the host: Muon has no
    fused overflow check).
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None):
        loss = self.muon.step(closure)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise KeyError(f"a Muon + AdamW state has the keys muon and adamw, this one {sorted(state)}")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.AdamW | MuonAdamW:
    """The optimizer ``cfg.name`` asks for, with the parameter split of the module docstring."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adamw":
        return _adamw(params, cfg, device_type)
    hidden = muon_params(model)
    ids = {id(p) for p in hidden}
    muon = torch.optim.Muon(
        [{"params": hidden, "lr_scale": cfg.muon_lr / cfg.lr}],
        lr=cfg.muon_lr,
        weight_decay=cfg.muon_weight_decay,
        momentum=cfg.muon_momentum,
        nesterov=cfg.muon_nesterov,
        ns_steps=cfg.muon_ns_steps,
        adjust_lr_fn=cfg.muon_adjust_lr,
    )
    return MuonAdamW(muon, _adamw([p for p in params if id(p) not in ids], cfg, device_type))


def set_lr(optimizer, step: int, cfg: OptimConfig, max_iters: int) -> float:
    """Set every group's learning rate for optimizer step ``step``: ``lr_at`` times the group's ``lr_scale``
    (1 for AdamW, muon_lr / lr for Muon). Returns ``lr_at`` (the logged lr)."""
    lr = lr_at(step, cfg, max_iters)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


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
