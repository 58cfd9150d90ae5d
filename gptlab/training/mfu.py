"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak dense FLOP/s."""

from __future__ import annotations

import torch

# Peak dense (no sparsity) FLOP/s by device name substring and dtype, from the vendors' data sheets.
PEAK_FLOPS = [
    # (substring of torch.cuda.get_device_name(), {dtype: FLOP/s})
    ("H200", {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}),
    ("H100 PCIe", {torch.bfloat16: 756e12, torch.float16: 756e12, torch.float32: 51e12}),
    ("H100", {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}),  # SXM
    ("A100", {torch.bfloat16: 312e12, torch.float16: 312e12, torch.float32: 19.5e12}),
    ("L40S", {torch.bfloat16: 362e12, torch.float16: 362e12, torch.float32: 91.6e12}),
    ("A10", {torch.bfloat16: 125e12, torch.float16: 125e12, torch.float32: 31.2e12}),
    ("L4", {torch.bfloat16: 121e12, torch.float16: 121e12, torch.float32: 30.3e12}),
    ("RTX 4090", {torch.bfloat16: 165e12, torch.float16: 165e12, torch.float32: 82.6e12}),
    ("RTX 3090", {torch.bfloat16: 71e12, torch.float16: 71e12, torch.float32: 35.6e12}),
    ("V100", {torch.float16: 125e12, torch.float32: 15.7e12}),
    ("T4", {torch.float16: 65e12, torch.float32: 8.1e12}),
]


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of `device` at `dtype`, or None when the device is not in the table (CPU, MPS)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS:
        if key in name:
            return table.get(dtype) or table.get(torch.float32)
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of peak achieved; None when the peak is unknown."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / peak
