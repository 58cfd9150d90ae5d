"""One optimizer step and what it needs: ``StepState`` (model, optimizer, scaler, loader, step counter, NaN
guard) and ``train_step``. Nothing here knows the run directory, the summary, wandb or the terminal
(training.session.Session holds those around a StepState), so a benchmark or a test builds a StepState from
a model, an optimizer and a loader and calls ``train_step`` on it (bench/gpu_bench.py, tests).

Order of one optimizer step: set the learning rate, run ``grad_accum`` micro-batches (forward under autocast,
backward through the gradient scaler; DDP syncs gradients on the last one only), unscale, clip, step. The
loss, the gradient norm and the NaN check stay on the device (``last``, ``divergence``), so the host never
waits for the device inside a step; the loop reads them at log, evaluation and checkpoint steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from gptlab.runtime.device import autocast, grad_scaler

from .config import OptimConfig, TrainConfig
from .optim import set_lr


class Diverged(Exception):
    """The loss (or a weight) stopped being finite."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")


class Divergence:
    """The first step whose loss was not finite, tracked on the device and read only at sync points."""

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        new = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(new, torch.full_like(self.step, step), self.step)
        self.value = torch.where(new, loss.detach().float(), self.value)

    def check(self) -> None:
        step = int(self.step)
        if step >= 0:
            raise Diverged(step, float(self.value))


@dataclass(kw_only=True)
class StepState:
    """What ``train_step`` reads and advances. Left out: ``model`` is ``raw_model``, ``scaler`` is the one
    ``runtime.device.grad_scaler`` picks for ``dtype`` (float16 only), ``divergence`` a fresh guard."""

    raw_model: torch.nn.Module  # the GPT itself: its parameters are clipped, its state is checkpointed
    optimizer: Any  # training.optim.build_optimizer's: torch's AdamW, or MuonAdamW
    loader: Any  # .next() -> (x, y) on the device (data.BatchLoader)
    train: TrainConfig  # grad_accum, grad_clip, and max_iters (where the learning-rate schedule ends)
    optim: OptimConfig  # the learning-rate schedule
    device: torch.device
    dtype: torch.dtype = torch.float32
    model: torch.nn.Module | None = None  # what the forward pass calls: raw_model, compiled and/or in DDP
    scaler: torch.amp.GradScaler | None = None
    step: int = 0  # optimizer steps taken so far (a resumed run starts at its checkpoint's)
    divergence: Divergence | None = None
    last: dict = field(default_factory=dict)  # the last step's loss, grad norm (device tensors) and lr

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.model is None:
            self.model = self.raw_model
        if self.scaler is None:
            self.scaler = grad_scaler(self.device, self.dtype)
        if self.divergence is None:
            self.divergence = Divergence(self.device)

    @property
    def ddp(self) -> bool:
        """The model is wrapped in DDP: gradients are averaged over ranks, on the last micro-batch only."""
        return isinstance(self.model, DistributedDataParallel)


def train_step(s: StepState) -> None:
    """One optimizer step; leaves the loss and gradient norm on the device in ``s.last``."""
    tcfg = s.train
    lr = set_lr(s.optimizer, s.step, s.optim, tcfg.max_iters)
    loss_sum = torch.zeros((), device=s.device)
    for micro in range(tcfg.grad_accum):
        x, y = s.loader.next()
        if s.ddp:
            s.model.require_backward_grad_sync = micro == tcfg.grad_accum - 1
        with autocast(s.device, s.dtype):
            _, loss = s.model(x, y)
        s.scaler.scale(loss / tcfg.grad_accum).backward()
        loss_sum += loss.detach()
    grad_norm = None
    if tcfg.grad_clip > 0:
        s.scaler.unscale_(s.optimizer)  # clip the true gradients (a no-op without float16)
        grad_norm = torch.nn.utils.clip_grad_norm_(s.raw_model.parameters(), tcfg.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    train_loss = loss_sum / tcfg.grad_accum
    s.divergence.update(train_loss, s.step)
    s.last = {"loss": train_loss, "grad_norm": grad_norm, "lr": lr}
    s.step += 1
