"""MLPs and the pre-norm transformer Block (the norms: model/norms.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .config import GPTConfig
from .hooks import HookPoint
from .kv_cache import KVCache
from .norms import make_norm
from .positions import PositionScheme


def relu_squared(h: Tensor) -> Tensor:
    """ReLU(h)^2 (So et al. 2021, Primer)."""
    return F.relu(h).square()


# The ungated MLPs' activations by config name (GELU: Hendrycks & Gimpel 2016).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU
    # the tanh approximation GPT-2 was trained with
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu2": relu_squared,
}


class MLP(nn.Module):
    """fc -> activation -> proj, activation one of ACTIVATIONS (gelu, gelu_tanh, relu2)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.act = ACTIVATIONS[cfg.mlp]
        self.fc = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.proj.residual_proj = True  # type: ignore[assignment]  # a flag; torch's stubs: tensors/modules only
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)  # (B, T, H)
        h = self.act(h)
        return self.drop(self.proj(h))  # (B, T, C)


class SwiGLU(nn.Module):
    """proj(silu(gate(x)) * up(x)) (Shazeer 2020), the Llama MLP."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.up = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.proj.residual_proj = True  # type: ignore[assignment]  # a flag; torch's stubs: tensors/modules only
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))  # (B, T, C)


def make_mlp(cfg: GPTConfig) -> nn.Module | None:
    if cfg.mlp == "none":
        return None
    return SwiGLU(cfg) if cfg.mlp == "swiglu" else MLP(cfg)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (no MLP, ln_2 = mlp = None for mlp='none').

    Hook points: hook_resid_pre, hook_attn_out, hook_mlp_out (not fired without an MLP), hook_resid_post.
    """

    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer)
        self.mlp = make_mlp(cfg)
        self.ln_2 = make_norm(cfg) if self.mlp is not None else None
        self.hook_resid_pre = HookPoint()  # (B, T, C)
        self.hook_attn_out = HookPoint()  # (B, T, C)
        self.hook_mlp_out = HookPoint()  # (B, T, C)
        self.hook_resid_post = HookPoint()  # (B, T, C)

    def forward(
        self,
        x: Tensor,
        pos: PositionScheme,
        q0: int = 0,
        cache: KVCache | None = None,
        window: int | None = None,
        impl: str | None = None,
    ) -> Tensor:
        x = self.hook_resid_pre(x)  # (B, T, C)
        x = x + self.hook_attn_out(self.attn(self.ln_1(x), pos, q0, cache, window, impl))
        if self.mlp is not None:
            assert self.ln_2 is not None  # made with the MLP
            x = x + self.hook_mlp_out(self.mlp(self.ln_2(x)))
        return self.hook_resid_post(x)
