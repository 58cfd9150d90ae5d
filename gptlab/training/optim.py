"""The optimizer (AdamW, or Muon + AdamW) and the warmup + decay learning-rate schedule.

``build_optimizer`` owns which parameter goes where:

* ``optim.name=adamw``: AdamW on everything; weight decay on every parameter with dim >= 2 (weight matrices,
  embeddings, position tables), none on norm gains, biases and ALiBi/T5 scalars.
* ``optim.name=muon``: ``torch.optim.Muon`` on the hidden weight matrices, i.e. every Linear weight inside
  ``model.blocks`` (attention q/k/v/o, the MLP's fc/proj or gate/up/proj), with ``optim.muon_weight_decay``;
  AdamW, split as above, on the rest: token embedding, output head (tied or not), position parameters,
  norms (qk_norm included) and biases. Muon orthogonalises each matrix's momentum (Newton-Schulz), which
  only makes sense for a matrix that maps one hidden space to another, hence the split.

``BatchedMuon`` is torch's Muon with its update computed for many matrices at once: the Newton-Schulz
iterations run on one stack per matrix shape (the tiny model's 24 matrices have 3 shapes: 45 batched products
per step instead of 360 single ones), the same bfloat16 arithmetic, the same state (``momentum_buffer`` per
matrix) and the same numbers (tests/test_train_parts.py holds it to torch's).

Both are stepped as one optimizer (``MuonAdamW``): one ``step``, one ``zero_grad``, one ``param_groups``
list for the schedule and the gradient scaler, and one ``state_dict`` holding both states, so checkpoints and
bit-exact resume work as with AdamW alone. ``set_lr`` gives each group its learning rate: the schedule's
``lr_at`` for AdamW's groups, the same curve scaled by ``muon_lr / lr`` for Muon's (its group's
``lr_scale``, saved with its state).
"""

from __future__ import annotations

import functools
import inspect
import math
import time

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


def newton_schulz(
    updates: list[torch.Tensor],
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype = torch.bfloat16,
) -> list[torch.Tensor]:
    """Each matrix of ``updates`` orthogonalised as torch's Muon does it: in ``dtype`` (torch's: bfloat16),
    transposed when it has more rows than columns, divided by its Frobenius norm (at least ``eps``), then
    ``steps`` times X <- a X + (b A + c A A) X with A = X X^T; returned in the input's shape, in ``dtype``.
    Matrices of one shape go through the iterations as one (n, rows, cols) stack."""
    a, b, c = coefficients
    out: list[torch.Tensor | None] = [None] * len(updates)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, u in enumerate(updates):
        by_shape.setdefault(tuple(u.shape), []).append(i)
    for (rows, cols), idx in by_shape.items():
        x = torch.stack([updates[i] for i in idx]).to(dtype)  # (n, rows, cols)
        tall = rows > cols
        if tall:
            x = x.mT
        x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        if tall:
            x = x.mT
        for j, i in enumerate(idx):
            out[i] = x[j]
    return out  # type: ignore[return-value]  # every slot filled above


NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
NS_FLOAT32_GAIN = 2.0  # auto leaves torch's bfloat16 only for a float32 at least this many times as fast


def ns_dtype_for(shapes: list[torch.Size], device: torch.device | str) -> str:
    """``optim.muon_ns_dtype=auto``: bfloat16 (torch's Muon) unless, on a CPU, one Newton-Schulz iteration on
    matrices of these shapes runs at least NS_FLOAT32_GAIN times as fast in float32, as where bf16 products are
    emulated (about 25x slower than float32 on an AVX2 path; 0.5x float32's time with AVX512-BF16/AMX). Timed
    here, best of two after a warm-up, in the thread count set for the run: a choice by this CPU's speed, not a
    flag. GPUs keep bfloat16."""
    if torch.device(device).type != "cpu" or not shapes:
        return "bfloat16"
    return _ns_dtype_measured(tuple(tuple(s) for s in shapes), torch.get_num_threads())


@functools.cache
def _ns_dtype_measured(shapes: tuple[tuple[int, ...], ...], threads: int) -> str:
    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(s, generator=gen) for s in shapes]
    times: dict[str, list[float]] = {name: [] for name in NS_DTYPES}
    for _ in range(3):  # interleaved; the first of each is the warm-up
        for name, dtype in NS_DTYPES.items():
            t0 = time.perf_counter()
            newton_schulz(mats, (3.4445, -4.7750, 2.0315), 1, 1e-7, dtype)
            times[name].append(time.perf_counter() - t0)
    bf16, fp32 = (min(times[name][1:]) for name in NS_DTYPES)
    return "float32" if fp32 * NS_FLOAT32_GAIN <= bf16 else "bfloat16"


def _adjusted_lr(lr: float, rule: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning rate (torch's ``adjust_lr_fn``): original ``lr * sqrt(max(1, rows / cols))``,
    match_rms_adamw ``lr * 0.2 * sqrt(max(rows, cols))``."""
    rows, cols = shape[:2]
    if rule is None or rule == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class BatchedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` (its settings, checks, state and update) with the Newton-Schulz iterations of all its
    matrices of one shape run as one batch (``newton_schulz``): fewer, larger products, the same numbers.

    ``ns_dtype`` (bfloat16, torch's, or float32) is kept in each param group, so a checkpoint carries it and a
    resume goes on in the precision the run started with (a group saved without it ran torch's bfloat16)."""

    def __init__(self, params, ns_dtype: str = "bfloat16", **kwargs):
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {', '.join(NS_DTYPES)}, got {ns_dtype!r}")
        super().__init__(params, **kwargs)
        self.defaults["ns_dtype"] = ns_dtype
        for group in self.param_groups:
            group.setdefault("ns_dtype", ns_dtype)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, momentum, decay = float(group["lr"]), group["momentum"], group["weight_decay"]
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
            dtype = NS_DTYPES[group.get("ns_dtype", "bfloat16")]
            orthogonal = newton_schulz(
                updates, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype
            )
            for p, o in zip(params, orthogonal, strict=True):
                p.mul_(1 - lr * decay)
                p.add_(o, alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


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
    ns_dtype = cfg.muon_ns_dtype
    if ns_dtype == "auto":
        ns_dtype = ns_dtype_for([p.shape for p in hidden], device_type)
    muon = BatchedMuon(
        [{"params": hidden, "lr_scale": cfg.muon_lr / cfg.lr}],
        ns_dtype=ns_dtype,
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
