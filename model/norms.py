"""The two norms: LayerNorm (torch's) and RMSNorm, and ``make_norm``, the choice ``model.norm`` makes.

Their own module because both the blocks (pre-norms, final norm) and attention (``qk_norm``) use them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import GPTConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 (Zhang & Sennrich 2019;
    as in Llama)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The residual stream's norm (width n_embd): ``model.norm`` picks LayerNorm or RMSNorm."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
