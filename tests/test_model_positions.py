"""Position schemes against their papers' formulas and independent naive implementations."""

import functools
import math

import helpers
import pytest
import torch

from gptlab.errors import UserError
from gptlab.model import GPT, POSITIONS, GPTConfig
from gptlab.model.positions import (
    SINUSOIDAL_SCALE,
    RotaryPosition,
    alibi_slopes,
    rotate_half,
    sinusoidal_table,
    t5_bucket,
)

tiny = functools.partial(helpers.tiny, n_layer=1, std=0.3)


# ---------------------------------------------------------------------------------------------- rope
def test_rope_score_depends_only_on_offset():
    rope = RotaryPosition(GPTConfig(n_embd=64, n_head=4))
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):  # query at position m, key at position n
        qm = rope.rotate(q.view(1, 1, 1, 16), torch.tensor([m]))
        kn = rope.rotate(k.view(1, 1, 1, 16), torch.tensor([n]))
        return float((qm * kn).sum())

    for offset in (0, 1, 5, 13):
        s = [score(p + offset, p) for p in (0, 3, 50, 400)]
        assert max(s) - min(s) < 1e-4, (offset, s)
    assert abs(score(5, 0) - score(6, 0)) > 1e-3  # and it does depend on the offset
    # rotation keeps the norm, and position 0 is the identity
    x = torch.randn(1, 1, 3, 16)
    torch.testing.assert_close(rope.rotate(x, torch.tensor([0, 0, 0])), x)
    torch.testing.assert_close(rope.rotate(x, torch.tensor([1, 7, 99])).norm(dim=-1), x.norm(dim=-1))


def test_rope_half_split_pairing_formula():
    """Dim i pairs with i + hs/2 and turns by angle pos * theta^(-2i/hs) (GPT-NeoX / HF Llama convention)."""
    hs, theta, p = 8, 10000.0, 3
    rope = RotaryPosition(GPTConfig(n_embd=32, n_head=4, rope_theta=theta))
    x = torch.randn(hs)
    out = rope.rotate(x.view(1, 1, 1, hs), torch.tensor([p])).view(hs)
    for i in range(hs // 2):
        a = p * theta ** (-2 * i / hs)
        x1, x2 = x[i], x[i + hs // 2]
        assert abs(out[i] - (x1 * math.cos(a) - x2 * math.sin(a))) < 1e-5
        assert abs(out[i + hs // 2] - (x2 * math.cos(a) + x1 * math.sin(a))) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_rotate_is_the_rotate_half_formula_bit_for_bit(dtype):
    """rotate computes x * cos + rotate_half(x) * sin with a roll and a sign-flipped sin (one op instead of
    three): the same bits, forward and backward, in float32 and bfloat16, from the table and from positions."""
    rope = RotaryPosition(GPTConfig(n_embd=128, n_head=4))
    x = torch.randn(3, 4, 20, 32).to(dtype).transpose(1, 2).contiguous().transpose(1, 2)  # (B, h, T, hs) view
    g = torch.randn(x.shape).to(dtype)
    for start in (0, 7):
        cos, sin = rope.cos_sin(torch.arange(start, start + 20))
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref = a * cos.to(dtype) + rotate_half(a) * sin.to(dtype)
        for out in (rope.rotate(b, None, start=start), rope.rotate(b, torch.arange(start, start + 20))):
            assert torch.equal(out, ref)
        ref.backward(g)
        rope.rotate(b, None, start=start).backward(g)
        assert torch.equal(a.grad, b.grad)


# ---------------------------------------------------------------------------------------------- sinusoidal
def test_sinusoidal_table_matches_vaswani_formula():
    d, n = 10, 50
    pe = sinusoidal_table(torch.arange(n), d)
    for pos in range(n):
        for i in range(d):
            ang = pos / 10000 ** ((i - i % 2) / d)
            ref = math.sin(ang) if i % 2 == 0 else math.cos(ang)
            assert abs(pe[pos, i].item() - ref) < 1e-5


def test_sinusoidal_model_adds_the_table():
    m = tiny("sinusoidal")
    idx = torch.randint(0, 37, (1, 6))
    _, cache = m.run_with_cache(idx, ["blocks.0.hook_resid_pre"])
    ref = m.tok_emb(idx) + SINUSOIDAL_SCALE * sinusoidal_table(torch.arange(6), 32)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], ref)
    # the added table has the token embeddings' init scale: RMS 0.02 per dimension
    added = SINUSOIDAL_SCALE * sinusoidal_table(torch.arange(512), 32)
    assert added.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-3)


# ---------------------------------------------------------------------------------------------- alibi
def test_alibi_slopes_paper_values():
    assert alibi_slopes(8) == pytest.approx([1 / 2**i for i in range(1, 9)])
    assert alibi_slopes(16)[:2] == pytest.approx([2**-0.5, 2**-1.0])
    # non-power of two (6): the 4-head slopes, then every other slope of the 8-head sequence
    assert alibi_slopes(6) == pytest.approx([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8])
    assert len(alibi_slopes(12)) == 12


# ---------------------------------------------------------------------------------------------- t5
def test_t5_buckets_match_reference_mapping():
    transformers = pytest.importorskip("transformers")
    t5 = transformers.models.t5.modeling_t5.T5Attention
    rel = -torch.arange(0, 600)  # key_pos - query_pos, keys in the past
    for nb, md in ((32, 128), (16, 64), (8, 20)):
        ref = t5._relative_position_bucket(rel, bidirectional=False, num_buckets=nb, max_distance=md)
        assert torch.equal(t5_bucket(-rel, nb, md), ref)
    # by hand, 32 buckets / 128: exact below 16, then 16 + floor(log(n/16) / log(8) * 16), 31 from 128 on
    b = t5_bucket(torch.tensor([0, 1, 15, 16, 20, 32, 64, 127, 128, 1000]), 32, 128)
    assert b.tolist() == [0, 1, 15, 16, 17, 21, 26, 31, 31, 31]


# ---------------------------------------------------------------------------------------------- naive attention
def naive_attention(q, k, v, bias_fn=None, key_rel=None, value_rel=None):
    """Loop over (i, j) for one head: e_ij = q_i.(k_j + aK_ij)/sqrt(d) + bias, z_i = sum_j p_ij (v_j + aV_ij)."""
    T, d = q.shape
    z = torch.zeros(T, d)
    for i in range(T):
        e = []
        for j in range(i + 1):
            kk = k[j] + (key_rel(i, j) if key_rel else 0)
            e.append(q[i] @ kk / math.sqrt(d) + (bias_fn(i, j) if bias_fn else 0))
        p = torch.softmax(torch.stack(e), 0)
        for j in range(i + 1):
            z[i] += p[j] * (v[j] + (value_rel(i, j) if value_rel else 0))
    return z


def hooked(m, idx):
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"]
    _, c = m.run_with_cache(idx, names, attn_impl=m.config.attn_impl)
    return [c[n][0] for n in names]  # q, k, v (h, T, hs); z (T, h, hs)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("values", [True, False])
def test_shaw_relative_matches_naive(values, impl):
    clip = 3
    m = tiny("relative", rel_clip=clip, rel_values=values, attn_impl=impl)
    q, k, v, z = hooked(m, torch.randint(0, 37, (1, 8)))
    aK, aV = m.pos.key[0].detach(), (m.pos.value[0].detach() if values else None)
    for h in range(4):
        ref = naive_attention(
            q[h], k[h], v[h],
            key_rel=lambda i, j: aK[min(i - j, clip)],
            value_rel=(lambda i, j: aV[min(i - j, clip)]) if values else None,
        )  # fmt: skip
        torch.testing.assert_close(z[:, h], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_alibi_matches_naive(impl):
    m = tiny("alibi", n_head=8, n_embd=32, attn_impl=impl)
    q, k, v, z = hooked(m, torch.randint(0, 37, (1, 7)))
    for h in range(8):
        slope = 2.0 ** -(h + 1)
        ref = naive_attention(q[h], k[h], v[h], bias_fn=lambda i, j, s=slope: -s * (i - j))
        torch.testing.assert_close(z[:, h], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_t5_bias_matches_naive(impl):
    m = tiny("t5", t5_buckets=8, t5_max_distance=12, attn_impl=impl)
    q, k, v, z = hooked(m, torch.randint(0, 37, (1, 14)))
    table = m.pos.bias.weight.detach()  # (buckets, heads)
    for h in range(4):
        b = lambda i, j, h=h: table[int(t5_bucket(torch.tensor(i - j), 8, 12)), h]  # noqa: E731
        torch.testing.assert_close(
            z[:, h], naive_attention(q[h], k[h], v[h], bias_fn=b), rtol=1e-4, atol=1e-5
        )


# ---------------------------------------------------------------------------------------------- lengths
def test_learned_positions_refuse_longer_than_block_size():
    m = tiny("learned")
    assert m.max_seq_len == 16
    with pytest.raises(UserError, match="block_size=16"):
        m(torch.randint(0, 37, (1, 17)))


@pytest.mark.parametrize("position", [p for p in POSITIONS if p != "learned"])
def test_other_schemes_run_past_block_size(position):
    m = tiny(position)
    assert m.max_seq_len is None
    logits, _ = m(torch.randint(0, 37, (1, 40)))
    assert logits.shape == (1, 40, 37) and torch.isfinite(logits).all()


def test_rope_cached_table_matches_direct_formula_and_survives_inference_mode():
    rope = RotaryPosition(GPTConfig(n_embd=64, n_head=4))
    x = torch.randn(1, 2, 5, 16)
    for start in (0, 3, 300, 5000):  # the table grows as needed
        direct = rope.rotate(x, torch.arange(start, start + 5))
        torch.testing.assert_close(rope.rotate(x, torch.arange(start, start + 5), start=start), direct)
    m = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=1, n_head=4, n_embd=32))
    idx = torch.randint(0, 37, (2, 16))
    with torch.inference_mode():  # e.g. an eval or a sample during training
        m(idx)
    _, loss = m(idx, idx)
    loss.backward()  # would fail if an inference-mode table were reused under autograd
    assert m.tok_emb.weight.grad is not None
