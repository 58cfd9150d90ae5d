"""Position schemes, one small class each, behind one interface.

A scheme can act at up to four places; each method returns ``None`` (or its input) where it does nothing:

* ``embed(pos)``            -> (T, C) added to the token embeddings          (learned, sinusoidal)
* ``rotate(x, pos)``        -> x rotated by position, applied to q and k     (rope)
* ``score_bias(l, q, qp, kp)`` -> additive attention-score bias (.., nh, Tq, Tk) (alibi, t5, relative keys)
* ``value_term(l, p, qp, kp)`` -> (B, nh, Tq, hs) added to the attention output (relative values)

and a scheme with a score bias also gives it in FlexAttention's form, ``flex_score_mod(l, q)`` -> a function
``score_mod(score, b, h, q_idx, kv_idx)`` that adds the same bias inside the fused kernel (model/flex.py).

``pos``, ``qp``, ``kp`` are 1-D long tensors of absolute token positions (queries and keys), so the same code
serves a full forward, a KV-cached step and a rolling cache. Every bias depends only on ``qp - kp`` except the
absolute embeddings.

References: Vaswani et al. 2017 (sinusoidal), Radford et al. 2019 (learned), Su et al. 2021 (RoPE),
Press et al. 2022 (ALiBi), Shaw et al. 2018 (relative), Raffel et al. 2020 (T5 buckets).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn


class SchemeConfig(Protocol):
    """What a position scheme reads of the model's config (``GPTConfig`` has all of it). Named here, not
    imported: config.py reads this module's registry, and this module needs nothing else of config.py."""

    @property
    def position(self) -> str: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_head(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def rope_theta(self) -> float: ...
    @property
    def rel_clip(self) -> int: ...
    @property
    def rel_values(self) -> bool: ...
    @property
    def t5_buckets(self) -> int: ...
    @property
    def t5_max_distance(self) -> int: ...


class PositionScheme(nn.Module):
    """Base class: does nothing (also the ``none`` scheme, NoPE: causality is the only position signal)."""

    absolute = False  # True: positions are absolute indices (generation crops and re-fills, see gpt.py)
    max_len: int | None = None  # longest sequence the scheme supports (None = any)
    needs_probs = False  # True: the attention probabilities are needed (value term), no fused kernel
    learned_bias = False  # True: the score bias has parameters (FlexAttention trains them from torch 2.6)

    @property
    def has_score_bias(self) -> bool:
        """Whether score_bias is overridden (attention then builds the position tensors and calls it)."""
        return type(self).score_bias is not PositionScheme.score_bias

    @property
    def has_value_term(self) -> bool:
        """Whether value_term is overridden (it may still return None, e.g. Shaw with rel_values=False)."""
        return type(self).value_term is not PositionScheme.value_term

    def embed(self, pos: Tensor) -> Tensor | None:
        return None

    def rotate(self, x: Tensor, pos: Tensor | None, start: int | None = None) -> Tensor:
        """x (B, h, T, hs) at positions pos (T,); ``start`` (= pos[0] as an int, pos contiguous) lets a scheme
        reuse cached tables without reading the tensor. Attention always passes ``start`` and passes
        ``pos=None`` for schemes without a score bias or value term."""
        return x

    def score_bias(self, layer: int, q: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        return None

    def value_term(self, layer: int, probs: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        return None

    def flex_score_mod(self, layer: int, q: Tensor) -> Callable | None:
        """score_bias as a FlexAttention ``score_mod(score, b, h, q_idx, kv_idx)`` (None: no bias).

        For a full causal forward: queries q (B, nh, T, hs) and the keys sit at the same positions, so the
        distance is ``q_idx - kv_idx`` (every bias here depends on the distance only). ``score`` arrives
        scaled by 1/sqrt(hs), as the explicit path's q k^T / sqrt(hs) before its bias is added. The kernel
        also evaluates it on masked (future) entries, so indices must stay in range for negative distances.
        Every scheme that overrides score_bias overrides this too (tests/test_model_flex.py checks).
        """
        return None


class NoPosition(PositionScheme):
    """``none`` (NoPE, Kazemnejad et al. 2023): no explicit position information."""

    def __init__(self, cfg: SchemeConfig | None = None):
        super().__init__()


# ---------------------------------------------------------------------------------------------- absolute
class LearnedPosition(PositionScheme):
    """``learned``: a trained (block_size, C) table added to the token embeddings (GPT-2)."""

    absolute = True

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.max_len = cfg.block_size
        self.emb = nn.Embedding(cfg.block_size, cfg.n_embd)

    def embed(self, pos: Tensor) -> Tensor:
        return self.emb(pos)  # (T, C); GPT checks the length against max_len first


def sinusoidal_table(pos: Tensor, dim: int) -> Tensor:
    """Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim))."""
    i2 = torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32)  # the even indices 2i
    inv = torch.exp(-math.log(10000.0) * i2 / dim)  # (ceil(dim/2),)
    ang = pos.to(torch.float32)[:, None] * inv[None, :]  # (T, ceil(dim/2))
    pe = torch.zeros(pos.numel(), dim, device=pos.device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : dim // 2])
    return pe  # (T, dim)


SINUSOIDAL_SCALE = 0.02 * math.sqrt(2)  # table RMS per dimension = 0.02, the token embeddings' init std


class SinusoidalPosition(PositionScheme):
    """``sinusoidal``: fixed sin/cos table (interleaved even=sin, odd=cos), computed for any length.

    The table is added scaled by ``SINUSOIDAL_SCALE`` so that its per-dimension RMS (0.707 unscaled) equals the
    0.02 standard deviation of the token embeddings at init, as learned positions are. Vaswani et al. instead
    multiply the token embeddings by sqrt(n_embd); unscaled, the table drowns the token signal of a GPT-2
    style init and the model does not learn (seen in the positions sweep: stuck at the unigram loss).
    """

    absolute = True

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.dim = cfg.n_embd

    def embed(self, pos: Tensor) -> Tensor:
        return SINUSOIDAL_SCALE * sinusoidal_table(pos, self.dim)


# ---------------------------------------------------------------------------------------------- rotary
def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (half-split pairing: dim i rotates with dim i + hs/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryPosition(PositionScheme):
    """``rope`` (Su et al.): rotate q and k by position-dependent angles.

    Pairing convention: half-split, as in GPT-NeoX and Hugging Face Llama (``rotate_half``): dimension ``i``
    rotates with ``i + hs/2`` at frequency ``theta^(-2i/hs)``. Llama weights therefore map with no permutation
    (the original paper's interleaved pairs (2i, 2i+1) would need one). Tables are computed on the fly, so any
    length works.
    """

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.head_dim, self.theta = cfg.head_dim, cfg.rope_theta
        self._table: tuple[Tensor, Tensor] | None = (
            None  # cos, _signed sin for positions 0..n-1 (not a buffer)
        )

    def cos_sin(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin tables (T, hs) in float32 (computed here, so model.to(bfloat16) cannot degrade them)."""
        hs = self.head_dim
        inv_freq = self.theta ** (-torch.arange(0, hs, 2, device=pos.device, dtype=torch.float32) / hs)
        freqs = pos.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, hs)
        return emb.cos(), emb.sin()

    @staticmethod
    def _signed(sin: Tensor) -> Tensor:
        """sin with its first half negated: rotate_half(x) * sin == x.roll(hs/2) * _signed(sin), bit for bit
        (a sign flip is exact), in one op where rotate_half takes three."""
        half = sin.shape[-1] // 2
        return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def _cached(self, start: int, T: int, device) -> tuple[Tensor, Tensor]:
        """Rows start..start+T-1 of float32 cos and ``_signed`` sin tables that grow (doubling) as longer
        sequences arrive."""
        t = self._table
        if (  # none yet, too short, elsewhere, or made under inference_mode (unusable for autograd later)
            t is None
            or t[0].shape[0] < start + T
            or t[0].device != device
            or (t[0].is_inference() and not torch.is_inference_mode_enabled())
        ):
            n = max(2 * (start + T), 256)
            cos, sin = self.cos_sin(torch.arange(n, device=device))
            t = self._table = (cos, self._signed(sin))
        cos, signed = t
        return cos[start : start + T], signed[start : start + T]

    def rotate(self, x: Tensor, pos: Tensor | None, start: int | None = None) -> Tensor:
        """x * cos + rotate_half(x) * sin, computed as x * cos + x.roll(hs/2) * _signed(sin) (the same numbers)."""
        T = x.shape[-2]
        if start is None:
            assert pos is not None, "rotate needs the positions or their start"
            cos, sin = self.cos_sin(pos)  # (T, hs) each
            signed = self._signed(sin)
        else:
            cos, signed = self._cached(start, T, x.device)
        cos, signed = cos.to(x.dtype), signed.to(x.dtype)
        return x * cos + x.roll(self.head_dim // 2, dims=-1) * signed  # (B, h, T, hs)


# ---------------------------------------------------------------------------------------------- biases
def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi head slopes (Press et al. 2022).

    For n a power of two: the geometric sequence starting at 2^(-8/n) with that ratio (8 heads: 1/2 .. 1/256).
    Otherwise the authors' rule: take the slopes of the closest smaller power of two p, then add every other
    slope of the 2p sequence until there are n.
    """

    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return pow2(n_head)
    p = 2 ** math.floor(math.log2(n_head))
    return pow2(p) + pow2(2 * p)[0::2][: n_head - p]


class AlibiPosition(PositionScheme):
    """``alibi``: score bias -slope_h * (i - j) for query i, key j <= i; no parameters."""

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.slopes = alibi_slopes(cfg.n_head)  # a list, not a buffer: stays float32 under model.to(dtype)

    def slope_tensor(self, device) -> Tensor:
        """The slopes (nh,) as a float32 tensor on ``device``."""
        return torch.tensor(self.slopes, device=device, dtype=torch.float32)

    def score_bias(self, layer, q, q_pos, k_pos):
        slopes = self.slope_tensor(q.device)  # (nh,)
        dist = (q_pos[:, None] - k_pos[None, :]).to(torch.float32)  # (Tq, Tk), >= 0 where visible
        return (-slopes[:, None, None] * dist)[None].to(q.dtype)  # (1, nh, Tq, Tk)

    def flex_score_mod(self, layer, q):
        slopes = self.slope_tensor(q.device)  # (nh,)

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx)

        return alibi


def t5_bucket(distance: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5's unidirectional (causal) bucket of ``distance = query_pos - key_pos`` (negative -> 0).

    The first num_buckets/2 distances get their own bucket; larger ones share log-spaced buckets up to
    max_distance; everything further lands in the last bucket (Raffel et al. 2020, mesh-tensorflow).
    """
    n = distance.clamp(min=0)
    exact = num_buckets // 2
    is_small = n < exact
    # log-spaced part; clamp to 1 first so log(0) is never taken (those entries use the exact branch)
    nf = n.clamp(min=1).to(torch.float32)
    large = exact + (torch.log(nf / exact) / math.log(max_distance / exact) * (num_buckets - exact)).to(
        torch.long
    )
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, n, large)


class T5Position(PositionScheme):
    """``t5``: one learned scalar per (bucket, head), shared by all layers, added to the scores."""

    learned_bias = True

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.num_buckets = cfg.t5_buckets
        self.max_distance = cfg.t5_max_distance
        self.bias = nn.Embedding(cfg.t5_buckets, cfg.n_head)

    def score_bias(self, layer, q, q_pos, k_pos):
        b = t5_bucket(q_pos[:, None] - k_pos[None, :], self.num_buckets, self.max_distance)  # (Tq, Tk)
        return self.bias(b).permute(2, 0, 1)[None].to(q.dtype)  # (1, nh, Tq, Tk)

    def flex_score_mod(self, layer, q):
        dist = torch.arange(q.shape[2], device=q.device)  # every distance 0..T-1 a query can see
        # float32 even under autocast: the kernel adds it to float32 scores and accumulates its gradient there
        by_dist = self.bias(t5_bucket(dist, self.num_buckets, self.max_distance)).float()  # (T, nh)

        def t5(score, b, h, q_idx, kv_idx):
            return score + by_dist[(q_idx - kv_idx).clamp(min=0), h]

        return t5


class ShawRelativePosition(PositionScheme):
    """``relative`` (Shaw et al. 2018): learned embeddings of the clipped distance min(i - j, rel_clip).

    Per layer, shared by the heads: a key table a^K (rel_clip+1, hs) adds q_i . a^K_{d(i,j)} / sqrt(hs) to the
    scores; with ``rel_values`` a value table a^V adds sum_j p_ij a^V_{d(i,j)} to the output. Causal attention
    only sees d >= 0, so the tables hold rel_clip+1 rows (the paper's 2k+1 minus the unused future half).
    """

    learned_bias = True

    def __init__(self, cfg: SchemeConfig):
        super().__init__()
        self.clip = cfg.rel_clip
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.needs_probs = cfg.rel_values
        self.key = nn.ParameterList(
            [nn.Parameter(torch.zeros(cfg.rel_clip + 1, cfg.head_dim)) for _ in range(cfg.n_layer)]
        )
        self.value = (
            nn.ParameterList(
                [nn.Parameter(torch.zeros(cfg.rel_clip + 1, cfg.head_dim)) for _ in range(cfg.n_layer)]
            )
            if cfg.rel_values
            else None
        )

    def index(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return (q_pos[:, None] - k_pos[None, :]).clamp(0, self.clip)  # (Tq, Tk)

    def score_bias(self, layer, q, q_pos, k_pos):
        idx = self.index(q_pos, k_pos)  # (Tq, Tk)
        qa = q @ self.key[layer].to(q.dtype).t()  # (B, nh, Tq, clip+1)
        B, nh, Tq, _ = qa.shape
        return qa.gather(-1, idx[None, None].expand(B, nh, Tq, -1)) * self.scale  # (B, nh, Tq, Tk)

    def flex_score_mod(self, layer, q):
        # the bias is q-dependent: q_i . a^K_d for the rel_clip+1 distances d, looked up per (i, j) in the kernel
        qa = (q @ self.key[layer].to(q.dtype).t()).float() * self.scale  # (B, nh, T, clip+1), linear in T
        clip = self.clip

        def shaw_keys(score, b, h, q_idx, kv_idx):
            return score + qa[b, h, q_idx, (q_idx - kv_idx).clamp(0, clip)]

        return shaw_keys

    def value_term(self, layer, probs, q_pos, k_pos):
        if self.value is None:
            return None
        idx = self.index(q_pos, k_pos)  # (Tq, Tk)
        B, nh, Tq, Tk = probs.shape
        per_dist = probs.new_zeros(B, nh, Tq, self.clip + 1)
        per_dist.scatter_add_(-1, idx[None, None].expand(B, nh, Tq, Tk), probs)  # prob mass per distance
        return per_dist @ self.value[layer].to(probs.dtype)  # (B, nh, Tq, hs)


# The registry of position schemes: the names `model.position` accepts (model.config.POSITIONS is its keys).
# Adding a scheme is one class above and one line here.
SCHEMES: dict[str, type[PositionScheme]] = {
    "none": NoPosition,
    "learned": LearnedPosition,
    "sinusoidal": SinusoidalPosition,
    "rope": RotaryPosition,
    "alibi": AlibiPosition,
    "relative": ShawRelativePosition,
    "t5": T5Position,
}


def build_position(cfg: SchemeConfig) -> PositionScheme:
    """The position scheme named by ``cfg.position``."""
    return SCHEMES[cfg.position](cfg)
