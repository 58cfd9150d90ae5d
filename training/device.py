"""Device and precision choice: cuda, then mps, then cpu; bf16 autocast where it pays; TF32 on."""

from __future__ import annotations

import contextlib

import torch

from gptlab_errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu. A named device that is not there raises a one-line UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} asked for, but this machine has no CUDA GPU; use device=cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r} asked for, but MPS is not available here; use device=cpu or auto")
    return dev


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA GPUs that support it, float32 elsewhere (on CPU bf16 autocast is not a
    clear win for small models: see bench/train_bench.py)."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context for the forward pass (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_tf32() -> None:
    """Let float32 matmuls use TF32 tensor cores on Ampere+ GPUs (harmless elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
