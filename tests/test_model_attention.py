"""Attention: causality, sdpa == explicit, GQA/MQA against an independent MHA, parameter counts, fused path."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import perturb, tiny

from gptlab.model import POSITIONS

KV = {"mha": 4, "gqa": 2, "mqa": 1}
WINDOWS = [None, 3]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kv", list(KV))
@pytest.mark.parametrize("position", [*POSITIONS, "relative-keys-only"])
def test_causal_and_sdpa_matches_explicit(position, kv, window):
    extra = {"rel_values": False} if position == "relative-keys-only" else {}
    m = perturb(tiny(position.split("-")[0], KV[kv], window, **extra))
    T, j = 12, 7
    idx = torch.randint(0, 37, (2, T))
    idx2 = idx.clone()
    idx2[:, j] = (idx[:, j] + 1) % 37
    with torch.no_grad():
        a, _ = m(idx, attn_impl="sdpa")
        b, _ = m(idx2, attn_impl="sdpa")
        e, _ = m(idx, attn_impl="explicit")
    # changing token j never changes logits before j ...
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=1e-6)
    # ... but it does change position j itself (the test can see a change)
    assert (a[:, j] - b[:, j]).abs().max() > 1e-3
    # the fused and the written-out path agree
    torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_window_limits_what_a_position_sees():
    """With window w (1 layer), logits at i depend only on tokens i-w+1 .. i."""
    m = perturb(tiny("rope", 4, window=3, n_layer=1))
    idx = torch.randint(0, 37, (1, 12))
    idx2 = idx.clone()
    idx2[:, 4] = (idx[:, 4] + 1) % 37
    with torch.no_grad():
        a, _ = m(idx)
        b, _ = m(idx2)
    diff = (a - b).abs().amax(-1)[0]  # (T,)
    assert torch.all(diff[:4] < 1e-6) and torch.all(diff[4:7] > 1e-4) and torch.all(diff[7:] < 1e-6)


def plain_mha(x, wq, wk, wv, wo, n_head):
    """Textbook multi-head causal attention, written independently of model/attention.py."""
    B, T, C = x.shape
    hs = C // n_head
    outs = []
    for h in range(n_head):
        sl = slice(h * hs, (h + 1) * hs)
        q, k, v = x @ wq[sl].t(), x @ wk[sl].t(), x @ wv[sl].t()  # (B, T, hs)
        s = q @ k.transpose(1, 2) / math.sqrt(hs)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        outs.append(torch.softmax(s, -1) @ v)
    return torch.cat(outs, -1) @ wo.t()


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_gqa_with_all_kv_heads_is_plain_mha(impl):
    m = perturb(tiny("none", n_kv_head=4, attn_impl=impl))
    attn = m.blocks[0].attn
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        ours = attn(x, m.pos)
        ref = plain_mha(x, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_gqa_shares_kv_heads_like_repeated_mha(impl):
    """GQA (4 q heads, 2 kv heads) equals MHA whose K/V weights repeat each kv head for 2 consecutive q heads."""
    g = perturb(tiny("none", n_kv_head=2, attn_impl=impl))
    attn = g.blocks[0].attn
    hs = 8
    rep = lambda w: w.view(2, hs, 32).repeat_interleave(2, dim=0).reshape(32, 32)  # noqa: E731
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        ours = attn(x, g.pos)
        ref = plain_mha(
            x, attn.q_proj.weight, rep(attn.k_proj.weight), rep(attn.v_proj.weight), attn.o_proj.weight, 4
        )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv", [4, 2, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_param_count_formula(kv, bias):
    C, H, L, V, T = 32, 4, 2, 37, 16
    hs = C // H
    m = tiny("learned", kv, bias=bias, mlp="gelu", norm="layernorm", tie_embeddings=True)
    attn = C * H * hs + 2 * C * kv * hs + H * hs * C + (bias * (H * hs + 2 * kv * hs + C))
    mlp = 2 * C * 4 * C + bias * (4 * C + C)
    norms = 2 * (C + bias * C)
    expected = V * C + T * C + L * (attn + mlp + norms) + (C + bias * C)
    assert m.num_params() == expected
    assert m.num_params(non_embedding=True) == expected - V * C - T * C
    assert m.blocks[0].attn.k_proj.weight.shape == (kv * hs, C)
    assert m.blocks[0].attn.v_proj.weight.shape == (kv * hs, C)


def test_kv_cache_bytes_formula_and_real_cache():
    m = tiny("rope", n_kv_head=2)
    expected = 2 * 2 * 2 * 8 * 4  # 2 * n_layer * n_kv_head * head_dim * 4 bytes
    assert m.kv_cache_bytes_per_token() == expected
    assert m.kv_cache_bytes_per_token(torch.bfloat16) == expected // 2
    from gptlab.model import KVCache

    cache = KVCache(2)
    with torch.no_grad():
        m(torch.randint(0, 37, (3, 10)), cache=cache)
    assert cache.bytes() == 3 * 10 * expected


def test_flops_per_token_formula():
    m = tiny("rope", n_kv_head=2, tie_embeddings=False)
    C, H, L, V, kvw = 32, 4, 2, 37, 16
    linear = L * (C * C + 2 * C * kvw + C * C + 2 * 4 * C * C) + V * C
    assert m.flops_per_token(16) == 6 * linear + 12 * L * H * (C // H) * 16


def test_sdpa_fast_path_is_fused(monkeypatch):
    """No bias and no window: sdpa gets is_causal=True and no mask tensor (no T x T memory)."""
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append((attn_mask, is_causal))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    for position in ("none", "learned", "sinusoidal", "rope"):
        for kv in (4, 1):
            calls.clear()
            m = tiny(position, kv)
            with torch.no_grad():
                m(torch.randint(0, 37, (1, 12)))
            assert calls and all(mask is None and causal for mask, causal in calls), position


def test_attention_patterns_match_hooked_q_k():
    m = perturb(tiny("alibi", n_kv_head=2))
    idx = torch.randint(0, 37, (2, 9))
    pat = m.attention_patterns(idx)
    assert pat.shape == (2, 2, 4, 9, 9)
    torch.testing.assert_close(pat.sum(-1), torch.ones(2, 2, 4, 9))
    assert torch.all(pat.triu(1) == 0)
    # recompute layer 1's pattern from its hooked q, k and the ALiBi formula
    _, cache = m.run_with_cache(idx, ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k"])
    q, k = cache["blocks.1.attn.hook_q"], cache["blocks.1.attn.hook_k"].repeat_interleave(2, dim=1)
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / 4) for h in range(4)])
    i = torch.arange(9)
    s = q @ k.transpose(-1, -2) / math.sqrt(8) - slopes[:, None, None] * (i[:, None] - i[None, :])
    s = s.masked_fill(i[None, :] > i[:, None], float("-inf"))
    torch.testing.assert_close(pat[1], torch.softmax(s, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 3])
def test_explicit_attention_masks_as_masked_fill_bit_for_bit(dtype, window):
    """The explicit path adds a 0 / -inf mask: the outputs and the gradients of q, k, v are masked_fill's (the
    softmax written out with scores.masked_fill(~allowed, -inf)), bit for bit, in float32 and bfloat16."""
    from gptlab.model.attention import causal_mask

    m = tiny("rope", 2, window, attn_impl="explicit")
    attn, pos, T = m.blocks[0].attn, m.pos, 10
    allowed = causal_mask(0, T, 0, T, window, "cpu")
    q, k, v = (torch.randn(2, n, T, 8).to(dtype) for n in (4, 2, 2))
    g = torch.randn(2, 4, T, 8).to(dtype)
    grads = []
    for written_out in (False, True):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        if written_out:
            ke, ve = kk.repeat_interleave(2, dim=1), vv.repeat_interleave(2, dim=1)
            att = (qq @ ke.transpose(-2, -1)) * (1.0 / math.sqrt(8))
            att = F.softmax(att.masked_fill(~allowed, float("-inf")).float(), dim=-1).to(dtype)
            y = att @ ve
        else:
            y = attn._explicit(qq, kk, vv, None, allowed, pos, None, None)
        y.backward(g)
        grads.append((y.detach(), qq.grad, kk.grad, vv.grad))
    for ours, ref in zip(*grads):
        assert torch.equal(ours, ref)
