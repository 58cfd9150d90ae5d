"""The gptlab GPT model: ``from gptlab.model import GPT, GPTConfig`` (in the checkout also ``from model import ...``). See docs/model.md."""

from .config import ATTN_IMPLS, MLPS, NORMS, POSITIONS, GPTConfig
from .gpt import GPT, init_weights
from .hooks import HookPoint
from .kv_cache import KVCache

__all__ = [
    "GPT",
    "GPTConfig",
    "HookPoint",
    "KVCache",
    "init_weights",
    "POSITIONS",
    "NORMS",
    "MLPS",
    "ATTN_IMPLS",
]
