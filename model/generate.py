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

import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab.errors import UserError

from .kv_cache import KVCache, StaticKVCache


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


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompiledDecoder:
    """generate_iter's one-token step through a StaticKVCache, compiled once (``fullgraph``, static shapes).

    ``mode`` is torch.compile's: ``reduce-overhead`` records the step as a CUDA graph and replays it (what a
    batch-1 decode on a GPU needs: the step is a few hundred tiny kernels whose launches cost more than their
    math); ``default`` compiles without graphs (CPU). The ring and the compiled code are kept per model
    (``decoder_for``), so later calls with the same batch and dtype reuse both without recompiling.
    """

    def __init__(self, model, size: int, mode: str):
        self.ring = StaticKVCache(model.config.n_layer, size)
        self.cudagraphs = mode == "reduce-overhead"
        self.step = torch.compile(
            model.decode_step, mode=None if mode == "default" else mode, fullgraph=True, dynamic=False
        )

    def load(self, cache: KVCache) -> None:
        self.ring.load(cache)
        self.token = self.ring.input_buffer()  # (B, 1): the step's input, always the same tensor

    def __call__(self, idx: Tensor, window: int | None) -> Tensor:
        """Logits (B, V) of the token after idx (B, 1); valid until the next call (CUDA graphs reuse them)."""
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        self.token.copy_(idx)
        return self.step(self.token, self.ring, window)


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(size, mode): decoder}


def decoder_for(model, size: int, compile: bool | str, device: torch.device) -> CompiledDecoder:
    """The model's compiled decoder for a ring of ``size``; compile=True picks reduce-overhead (CUDA graphs)
    on CUDA and default elsewhere, a string names the torch.compile mode."""
    if compile is True:
        mode = "reduce-overhead" if device.type == "cuda" else "default"
    elif compile in COMPILE_MODES:
        mode = compile
    else:
        raise UserError(
            f"compile={compile!r} is not known; use false, true or one of {', '.join(COMPILE_MODES)}"
        )
    mine = _DECODERS.setdefault(model, {})
    if (size, mode) not in mine:
        mine[(size, mode)] = CompiledDecoder(model, size, mode)
    return mine[(size, mode)]


def cache_capacity(model) -> int:
    """Most positions one sample's KV cache keeps (the context rule of the module docstring).

    Absolute schemes (learned, sinusoidal) crop and re-fill at block_size; the others roll a window of
    ``W = min(window or block_size, block_size)`` keys.
    """
    cfg = model.config
    if model.pos.absolute:
        return cfg.block_size
    return cfg.block_size if cfg.window is None else min(cfg.window, cfg.block_size)


def cache_positions(model, prompt_len: int, steps: int) -> int:
    """Positions one sample's KV cache holds at its largest during a generation of ``steps`` tokens.

    The prompt and every produced token but the last are fed through the model; the cache keeps at most
    ``cache_capacity(model)`` of them.
    """
    if steps == 0:
        return 0
    return min(prompt_len + steps - 1, cache_capacity(model))


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
    compile: bool | str = False,
) -> Iterator[Tensor]:
    """Yield each new token column (B, 1). See the module docstring for the context rule past block_size.

    The tokens live in one preallocated (B, T + max_new_tokens) buffer; a KV cache is made once and reused
    (``reset``) at every re-fill, with room for exactly the positions this call can feed it. ``compile``
    (with the cache): the prompt runs eagerly at full width, every later token through a compiled
    fixed-shape step (``CompiledDecoder``); the same tokens, up to float rounding in the fused kernels.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if idx.dim() != 2 or idx.shape[1] < 1:
        raise UserError(
            f"the prompt must be a (B, T) tensor with T >= 1 tokens, got shape {tuple(idx.shape)}"
        )
    cfg = model.config
    bs, L = cfg.block_size, cfg.n_layer
    absolute = model.pos.absolute
    W = cache_capacity(model)  # relative schemes: the sliding window; absolute: block_size (crop and re-fill)
    win = None if absolute else W  # the window argument of every forward
    span = L * (W - 1) + 1  # receptive field of one prediction through L windowed layers
    keep = max(1, bs // 2)  # absolute schemes: tokens kept when the context is re-filled
    B, n = idx.shape
    seq = idx.new_empty(B, n + max_new_tokens)  # (B, T + new): prompt, then each token as it is sampled
    seq[:, :n] = idx
    start = max(0, n - bs)
    cache: KVCache | None = None
    decoder: CompiledDecoder | None = None
    if use_cache and max_new_tokens > 0:
        # absolute: at most block_size positions (fewer for a short run); relative: a rolling window of W
        cache = KVCache(L, capacity=min(bs, n - start + max_new_tokens - 1)) if absolute else KVCache(L, W)
        if compile:
            decoder = decoder_for(model, W, compile, idx.device)
    fresh = True  # the cache holds nothing yet: feed the whole context
    for step in range(max_new_tokens):
        if absolute and step > 0 and n - start > bs:  # re-fill: keep the last `keep` tokens, from position 0
            start, fresh = n - keep, True
        if cache is None or fresh:  # the whole context (absolute: seq[start:]; relative: the receptive field)
            if cache is not None:
                cache.reset()
            h = model.hidden_states(
                seq[:, start if absolute else max(0, n - span) : n], cache=cache, window=win
            )
            logits = model.unembed(h[:, -1, :])  # (B, V)
            if decoder is not None:
                assert cache is not None  # a decoder is made only with a cache
                decoder.load(cache)
        elif decoder is not None:
            logits = decoder(seq[:, n - 1 : n], win)
        else:
            h = model.hidden_states(seq[:, n - 1 : n], cache=cache, window=win)
            logits = model.unembed(h[:, -1, :])  # (B, V)
        fresh = False
        nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        seq[:, n : n + 1] = nxt
        n += 1
        yield nxt
