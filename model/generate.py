"""Token sampling and autoregressive generation, with or without a KV cache.

Both modes follow one context rule, so greedy decoding gives identical tokens with ``use_cache`` on or off:

* Schemes without absolute positions (none, rope, alibi, relative, t5): attention is a sliding window of
  ``W = min(window or block_size, block_size)`` keys. Up to ``block_size`` tokens this is plain causal attention
  (or the configured window); past it each query sees the last W tokens. The cache rolls (keeps W keys per
  layer); the no-cache reference runs the model with the same W-window mask on the last ``n_layer*(W-1)+1``
  tokens, which is exactly the receptive field of the next-token prediction, so its cost stays bounded.
* Absolute schemes (learned, sinusoidal): crop and re-fill. The context starts at ``s``; while
  ``len - s <= block_size`` tokens are appended; when a new token would overflow it, ``s`` jumps so the last
  ``max(1, block_size // 2)`` tokens remain, and (with the cache) they are re-encoded from position 0. A prompt
  longer than ``block_size`` starts with its last ``block_size`` tokens. The no-cache reference re-runs the model
  on the same context ``seq[:, s:]`` at every step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab_errors import UserError

from .kv_cache import KVCache


def check_sampling_args(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise UserError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if temperature is None or temperature < 0:
        raise UserError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k={top_k!r} must be a positive integer or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p={top_p!r} must be in (0, 1] or None")


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick the next token from logits (B, V) -> (B, 1).

    temperature 0 is greedy (argmax). Otherwise logits / temperature, then optionally keep the top_k largest,
    then optionally the smallest set of tokens whose probability sums to >= top_p (nucleus; the most likely
    token is always kept), and draw from the renormalised distribution with ``generator`` (default: the global
    torch RNG, so ``torch.manual_seed`` makes it repeatable).
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate_iter(
    model,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield each new token column (B, 1). See the module docstring for the context rule past block_size.

    The tokens live in one preallocated (B, T + max_new_tokens) buffer; a KV cache is made once and reused
    (``reset``) at every re-fill, with room for exactly the positions this call can feed it.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if idx.dim() != 2 or idx.shape[1] < 1:
        raise UserError(
            f"the prompt must be a (B, T) tensor with T >= 1 tokens, got shape {tuple(idx.shape)}"
        )
    cfg = model.config
    bs, L = cfg.block_size, cfg.n_layer
    absolute = model.pos.absolute
    W = bs if cfg.window is None else min(cfg.window, bs)  # sliding window for the relative schemes
    span = L * (W - 1) + 1  # receptive field of one prediction through L windowed layers
    keep = max(1, bs // 2)  # absolute schemes: tokens kept when the context is re-filled
    B, n = idx.shape
    seq = idx.new_empty(B, n + max_new_tokens)  # (B, T + new): prompt, then each token as it is sampled
    seq[:, :n] = idx
    start = max(0, n - bs)
    cache: KVCache | None = None
    if use_cache and max_new_tokens > 0:
        # absolute: at most block_size positions (fewer for a short run); relative: a rolling window of W
        cache = KVCache(L, capacity=min(bs, n - start + max_new_tokens - 1)) if absolute else KVCache(L, W)
    fresh = True  # the cache holds nothing yet: feed the whole context
    for step in range(max_new_tokens):
        if absolute:
            if (
                step > 0 and n - start > bs
            ):  # re-fill: keep the last `keep` tokens, re-encoded from position 0
                start = n - keep
                fresh = True
            if cache is None:
                h = model.hidden_states(seq[:, start:n])
            elif fresh:
                cache.reset()
                h = model.hidden_states(seq[:, start:n], cache=cache)
            else:
                h = model.hidden_states(seq[:, n - 1 : n], cache=cache)
        else:
            if cache is None:
                h = model.hidden_states(seq[:, max(0, n - span) : n], window=W)
            elif fresh:
                h = model.hidden_states(seq[:, max(0, n - span) : n], cache=cache, window=W)
            else:
                h = model.hidden_states(seq[:, n - 1 : n], cache=cache, window=W)
        fresh = False
        logits = model.lm_head(h[:, -1, :])  # (B, V)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        seq[:, n : n + 1] = nxt
        n += 1
        yield nxt
