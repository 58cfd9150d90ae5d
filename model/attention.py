"""Causal self-attention: MHA, GQA and MQA in one module, fused (sdpa, flex) or written out (explicit).

``n_kv_head`` alone chooses the variant: n_head (MHA), a divisor of n_head (GQA), 1 (MQA). The K and V
projections really are ``n_kv_head * hs`` wide; query head h reads key/value head ``h // (n_head // n_kv_head)``
(the grouping of Hugging Face Llama's ``repeat_kv``).

Three paths with the same weights and the same numbers (``attn_impl``; ``auto`` picks one per call):

* ``sdpa``: ``F.scaled_dot_product_attention``. With no score bias and no active window it is called with
  ``is_causal=True`` and no mask tensor, so PyTorch may pick a fused kernel (flash / memory-efficient) whose
  memory does not grow as T^2. A score bias (alibi, t5, relative keys) or a window is passed as ``attn_mask``.
* ``flex``: FlexAttention (model/flex.py): the scheme's bias as a ``score_mod`` and causal + window as a block
  mask, fused on CUDA for every scheme. It serves full causal forwards (training, evaluation, the prompt of a
  fresh KV cache); a cached step with fewer queries than keys runs sdpa, whose mask and bias are then only
  (Tq, Tk): one row per new token, where flex would recompile for every cache length.
* ``explicit``: softmax(q k^T / sqrt(hs) + bias + mask) v written out; the only path that fires
  ``hook_pattern``.

``qk_norm=True`` puts an RMSNorm on each head's queries and keys (over head_dim, one learnable (hs,) gain for
q and one for k, shared by the heads, as in Qwen3), after the projections and before the position
scheme, so every path, the KV cache and ``hook_q``/``hook_k`` see the normalised (and rotated) q and k.

``auto`` = flex on CUDA where the scheme has a score bias or the window is active (what sdpa cannot fuse) and
flex pays (``model.flex.flex_is_best``), sdpa everywhere else: on a CPU auto is always sdpa. The Shaw value
term needs the probabilities, which neither fused kernel returns: ``position=relative`` with
``rel_values=True`` always runs the explicit math.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GPTConfig
from .flex import check_flex, flex_attend, flex_is_best
from .hooks import HookPoint
from .kv_cache import KVCache, StaticKVCache
from .norms import RMSNorm
from .positions import PositionScheme


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, nkv, T, hs) -> (B, nkv * n_rep, T, hs): each kv head serves n_rep consecutive query heads."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def causal_mask(q0: int, Tq: int, k0: int, Tk: int, window: int | None, device) -> Tensor:
    """Bool (Tq, Tk): query at position q0+i may see key at k0+j iff j-pos <= i-pos (and within the window)."""
    qp = torch.arange(q0, q0 + Tq, device=device)[:, None]
    kp = torch.arange(k0, k0 + Tk, device=device)[None, :]
    allowed = kp <= qp
    if window is not None:
        allowed = allowed & (kp > qp - window)
    return allowed


class CausalSelfAttention(nn.Module):
    """One attention layer. Hook points: hook_q, hook_k, hook_v, hook_pattern (explicit only), hook_z."""

    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.impl = cfg.attn_impl
        self.position = cfg.position
        self.window = cfg.window
        self.dropout = cfg.dropout
        C, hs = cfg.n_embd, cfg.head_dim
        self.q_proj = nn.Linear(C, self.n_head * hs, bias=cfg.bias)
        self.k_proj = nn.Linear(C, self.n_kv_head * hs, bias=cfg.bias)  # smaller than q for GQA/MQA
        self.v_proj = nn.Linear(C, self.n_kv_head * hs, bias=cfg.bias)
        self.o_proj = nn.Linear(self.n_head * hs, C, bias=cfg.bias)
        self.o_proj.residual_proj = True  # type: ignore[assignment]  # scaled (or zero) init (gpt.init_weights); stubs: tensors/modules only
        # qk_norm: RMSNorm of each head's q and k over head_dim, one (hs,) gain each, shared by the heads
        self.q_norm = RMSNorm(hs, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hs, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.hook_q = HookPoint()  # (B, nh, T, hs), after qk_norm and the position scheme
        self.hook_k = HookPoint()  # (B, nkv, T, hs)
        self.hook_v = HookPoint()  # (B, nkv, T, hs)
        self.hook_pattern = HookPoint()  # (B, nh, Tq, Tk), explicit path only
        self.hook_z = HookPoint()  # (B, T, nh, hs), each head's output before o_proj

    def forward(
        self,
        x: Tensor,
        pos: PositionScheme,
        q0: int = 0,
        cache: KVCache | StaticKVCache | None = None,
        window: int | None = None,
        impl: str | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). q0: position of x's first token (with a StaticKVCache: one token at the
        ring's position, q0 unused); window/impl override the config."""
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_dim
        window = self.window if window is None else window
        impl = impl or self.impl
        ring = cache if isinstance(cache, StaticKVCache) else None
        # position tensors only for schemes that read them (score bias / value term); rotate uses q0
        relative = pos.has_score_bias or pos.has_value_term
        q_pos: Tensor | None  # (T,) query positions, for the schemes that read them
        if ring is not None:  # one token at ring.pos, a device tensor (no host number: compilable)
            q_pos, start = ring.pos, None
        else:
            q_pos, start = (torch.arange(q0, q0 + T, device=x.device) if relative else None), q0  # (T,)

        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if self.q_norm is not None and self.k_norm is not None:  # per head, before the position scheme
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)  # back to v's (autocast) dtype
        q, k = pos.rotate(q, q_pos, start=start), pos.rotate(k, q_pos, start=start)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)

        explicit = impl == "explicit" or pos.needs_probs
        allowed, is_causal = None, False  # allowed: bool (Tq, Tk) mask; None = every key is visible
        k_pos: Tensor | None  # (Tk,) key positions, for the schemes that read them
        if ring is not None:  # every slot of the ring; the mask says which hold visible keys
            k, v, k_pos = ring.update(self.layer, k, v)  # (B, nkv, size, hs), (size,)
            path, allowed = ("explicit" if explicit else "sdpa"), ring.visible(window)
        else:
            k0 = q0
            if isinstance(cache, KVCache):  # (a StaticKVCache took the branch above)
                k, v, k0 = cache.update(self.layer, k, v)  # (B, nkv, Tk, hs), keys from position k0
            Tk = k.shape[2]
            k_pos = torch.arange(k0, k0 + Tk, device=x.device) if relative else None  # (Tk,)
            need_causal = q0 < k0 + Tk - 1  # some key lies in the future of the first query
            need_window = window is not None and (q0 + T - 1) - k0 >= window
            if explicit:
                path = "explicit"
            else:
                path = "flex" if self._takes_flex(impl, q, pos, q0, k0, Tk, need_window) else "sdpa"
            if path == "flex":
                window = window if need_window else None
            elif path == "sdpa" and need_causal and not need_window and not pos.has_score_bias and q0 == k0:
                is_causal = True  # fused: no T x T tensor
            elif need_causal or need_window:
                allowed = causal_mask(q0, T, k0, Tk, window if need_window else None, x.device)

        bias = None  # flex adds the bias inside its kernel; the other paths get it as a tensor
        if path != "flex" and pos.has_score_bias:
            assert q_pos is not None and k_pos is not None  # built for every scheme with a score bias
            bias = pos.score_bias(self.layer, q, q_pos, k_pos)  # (1|B, nh, Tq, Tk)
        if path == "flex":
            y = flex_attend(q, k, v, pos.flex_score_mod(self.layer, q), window, enable_gqa=nkv != nh)
        elif path == "explicit":
            y = self._explicit(q, k, v, bias, allowed, pos, q_pos, k_pos)
        else:
            y = self._sdpa(q, k, v, bias, allowed, is_causal)
        y = self.hook_z(y.transpose(1, 2))  # (B, T, nh, hs)
        y = self.o_proj(y.reshape(B, T, nh * hs))  # (B, T, C)
        return self.resid_drop(y) if self.training else y  # dropout is the identity in eval mode

    # ----------------------------------------------------------------------------------------------
    def _takes_flex(
        self, impl: str, q: Tensor, pos: PositionScheme, q0: int, k0: int, Tk: int, windowed: bool
    ) -> bool:
        """Whether this call runs FlexAttention: impl flex or auto, and a full causal forward (the keys are
        this call's own tokens); auto only where flex is the better kernel (model/flex.py, flex_is_best)."""
        if impl == "sdpa" or q0 != k0 or q.shape[2] != Tk:
            return False
        needs_grad = q.requires_grad and torch.is_grad_enabled()
        dropout = self.training and self.dropout > 0  # flex has no attention dropout
        if impl == "flex":
            check_flex(q.device, needs_grad, pos.learned_bias, self.position, dropout)
            return True
        return not dropout and flex_is_best(
            q.device, q.shape[2], pos.has_score_bias, windowed, needs_grad, pos.learned_bias
        )

    def _explicit(self, q, k, v, bias, allowed, pos, q_pos, k_pos):
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, nh, Tk, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, nh, Tq, Tk)
        if bias is not None:
            att = att + bias
        if allowed is not None:  # + 0 / -inf: masked_fill(~allowed, -inf) for finite scores, a free backward
            blocked = torch.zeros(allowed.shape, dtype=att.dtype, device=att.device)
            att = att + blocked.masked_fill_(~allowed, float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(q.dtype)
        att = self.hook_pattern(att)
        att = self.attn_drop(att)
        y = att @ v  # (B, nh, Tq, hs)
        extra = pos.value_term(self.layer, att, q_pos, k_pos) if pos.has_value_term else None
        return y if extra is None else y + extra

    def _sdpa(self, q, k, v, bias, allowed, is_causal):
        mask = allowed  # bool: True = may attend
        if bias is not None:
            mask = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
        dp = self.dropout if self.training else 0.0
        # GQA/MQA: sdpa reads kv head h // (nh / nkv) itself (torch >= 2.5, the project's minimum)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dp,
            is_causal=is_causal,
            enable_gqa=self.n_kv_head != self.n_head,
        )
