"""FlexAttention (``torch.nn.attention.flex_attention``): a fused kernel for every score bias and window.

sdpa runs fused only without a bias: ALiBi, T5, Shaw keys and sliding windows hand it a dense (T, T) mask, so
its memory grows as T^2 and the flash kernel is lost. FlexAttention compiles the bias into the kernel instead:

* ``score_mod(score, b, h, q_idx, kv_idx)``: each position scheme writes its own (``PositionScheme
  .flex_score_mod``): ALiBi ``- slope[h] * (q_idx - kv_idx)``, T5 a (T, nh) table of the bias of each
  distance, Shaw keys a (B, nh, T, rel_clip+1) tensor of ``q_i . a^K_d / sqrt(hs)`` looked up by distance;
* a block mask (``create_block_mask``) for causal attention, and the sliding window: ``kv <= q`` and
  ``q - kv < window``. The kernel skips the (128 x 128) blocks that are fully masked, so a window also saves
  compute, and nothing of size T x T is ever stored.

Where it runs (``flex_attend``): on CUDA through ``torch.compile(flex_attention)`` (the fused Triton kernel, also
from an eager model; inside a compiled model the outer compile lowers it). Elsewhere the unfused reference
implementation torch ships (it materialises the scores, so it is for checking, not speed), forward only:
torch has no FlexAttention backward on CPU or MPS, so training with ``attn_impl=flex`` needs a CUDA GPU.

Which features a torch version has is decided once, here, at import: FlexAttention itself and ``enable_gqa``
come with torch 2.5 (the project's minimum); gradients into tensors a ``score_mod`` captures (T5's learned
table, Shaw's key table) came with torch 2.6. A missing feature is one UserError line (``check_flex``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from gptlab.errors import UserError

# gradients through tensors captured by a score_mod (learned biases): torch >= 2.6 (pytorch/pytorch#137452)
LEARNED_BIAS_GRAD = torch.__version__ >= "2.6"  # TorchVersion compares as versions, not strings
# devices with a FlexAttention backward (CPU and MPS run the forward only)
BACKWARD_DEVICES = ("cuda",)


def check_flex(
    device: torch.device, needs_grad: bool, learned_bias: bool, position: str, dropout: bool
) -> None:
    """Raise one UserError line where this torch cannot run what was asked of attn_impl=flex."""
    if dropout:
        raise UserError(
            "attn_impl=flex has no dropout on the attention weights; set model.dropout=0 or use attn_impl=sdpa "
            "(or auto, which trains with sdpa when dropout is on)"
        )
    if needs_grad and device.type not in BACKWARD_DEVICES:
        raise UserError(
            f"attn_impl=flex cannot train on {device.type}: torch's FlexAttention has no backward there; use "
            "attn_impl=sdpa (or auto) on this device, train on a CUDA GPU, or run inference under torch.no_grad()"
        )
    if needs_grad and learned_bias and not LEARNED_BIAS_GRAD:
        raise UserError(
            f"attn_impl=flex cannot train position={position} with torch {torch.__version__}: gradients into "
            "its learned bias need torch >= 2.6; upgrade torch or use attn_impl=sdpa (or auto)"
        )


# attn_impl=auto, without gradients: shorter sequences take sdpa (see flex_is_best)
FLEX_MIN_INFERENCE_T = 1024


def flex_is_best(
    device: torch.device, T: int, has_bias: bool, windowed: bool, needs_grad: bool, learned_bias: bool
) -> bool:
    """attn_impl=auto's choice for a full causal forward of T tokens: flex where sdpa cannot fuse and flex pays.

    On CUDA, for a score bias or an active window (sdpa would get a dense (T, T) mask, and for T5 and Shaw keys
    a (T, T) bias gradient too), when training, or in inference from FLEX_MIN_INFERENCE_T tokens on. A shorter
    inference call (a sampling prompt) keeps sdpa: its mask is small, and each new length would cost flex a
    compile (seconds) for a call of milliseconds. Never where this torch cannot train the bias (torch < 2.6).
    """
    if device.type != "cuda" or not (has_bias or windowed):
        return False
    if needs_grad:
        return not (learned_bias and not LEARNED_BIAS_GRAD)
    return T >= FLEX_MIN_INFERENCE_T


def causal_mask_mod(window: int | None) -> Callable:
    """mask_mod for queries and keys at the same positions: key j is visible to query i iff
    j <= i (and i - j < window)."""

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    def windowed(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    return causal if window is None else windowed


def _build_block_mask(T: int, window: int | None, device: torch.device) -> BlockMask:
    return create_block_mask(causal_mask_mod(window), None, None, T, T, device=device)


@functools.lru_cache(maxsize=16)
def _cached_block_mask(T: int, window: int | None, device: torch.device) -> BlockMask:
    # built outside inference mode, so a mask first made while sampling can later be used for training
    with torch.inference_mode(False):
        return _build_block_mask(T, window, device)


def block_mask(T: int, window: int | None, device: torch.device) -> BlockMask:
    """The (T, T) causal (+ window) block mask, shared by every layer and batch (broadcast over B and heads).

    Eager: built once per (T, window, device) and cached. Under torch.compile the construction is traced into
    the graph instead (a cache lookup would break it in two)."""
    if torch.compiler.is_compiling():
        return _build_block_mask(T, window, device)
    return _cached_block_mask(T, window, device)


@functools.cache
def _compiled_flex() -> Callable:
    """flex_attention compiled once for CUDA (a new shape or score_mod recompiles; shapes are static)."""
    return torch.compile(flex_attention, dynamic=False)


def flex_attend(
    q: Tensor, k: Tensor, v: Tensor, score_mod: Callable | None, window: int | None, enable_gqa: bool
) -> Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, nkv, T, hs) at the same positions -> (B, nh, T, hs).

    ``score_mod`` adds the position scheme's bias (None: none); ``window`` limits each query to that many keys.
    Callers check support first (``check_flex``)."""
    mask = block_mask(q.shape[2], window, q.device)
    if q.device.type == "cuda" and not torch.compiler.is_compiling():
        kernel = _compiled_flex()  # fused even when the model around it runs eagerly
    else:  # inside a compiled model: lowered by the outer compile; on CPU: the reference
        kernel = flex_attention
    return kernel(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=enable_gqa)
