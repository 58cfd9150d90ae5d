"""Config validation, init, loss, training on one batch, module names, hook points."""

import math

import pytest
import torch

from gptlab.errors import UserError
from gptlab.model import GPT, MLPS, NORMS, GPTConfig
from gptlab.model.config import swiglu_hidden


def cfg(**kw):
    base = dict(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32)
    base.update(kw)
    return GPTConfig(**base)


# ---------------------------------------------------------------------------------------------- config
def test_documented_defaults():
    c = GPTConfig()
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_kv_head, c.n_embd) == (
        65,
        256,
        6,
        6,
        None,
        384,
    )
    assert (c.position, c.norm, c.mlp, c.attn_impl, c.window, c.tie_embeddings) == (
        "rope", "layernorm", "gelu", "auto", None, True,
    )  # fmt: skip
    assert c.hidden_dim == 4 * 384 and swiglu_hidden(384) == 1024


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(n_embd=30), "not divisible by model.n_head"),
        (dict(n_kv_head=3), "must divide model.n_head"),
        (dict(n_embd=20, n_head=4, position="rope"), "even head size"),
        (dict(position="xpos"), "choose one of: none, learned, sinusoidal, rope, alibi, relative, t5"),
        (dict(norm="batchnorm"), "choose one of: layernorm, rmsnorm"),
        (dict(mlp="moe"), "choose one of: gelu, gelu_tanh, swiglu, relu2, none"),
        (dict(attn_impl="flash"), "choose one of: auto, sdpa, flex, explicit"),
        (dict(window=0), "window"),
        (dict(dropout=1.0), "dropout"),
        (dict(n_layer=0), "n_layer"),
    ],
)
def test_bad_configs_fail_with_one_line(kw, match):
    with pytest.raises(UserError, match=match) as e:
        cfg(**kw)
    assert "\n" not in str(e.value)


def test_odd_head_dim_is_fine_without_rope():
    GPT(cfg(n_embd=12, n_head=4, position="alibi"))  # head size 3 is fine for every scheme but rope
    with pytest.raises(UserError, match="even head size"):
        cfg(n_embd=12, n_head=4, position="rope")


def test_from_dict_round_trip_and_unknown_key():
    c = cfg(position="t5", n_kv_head=2)
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(UserError, match="unknown model config field"):
        GPTConfig.from_dict({**c.to_dict(), "n_heads": 3})


# ---------------------------------------------------------------------------------------------- init, loss
def test_init_statistics_and_tying():
    c = cfg(n_layer=8, n_embd=64, bias=True)
    m = GPT(c)
    assert m.lm_head.weight is m.tok_emb.weight
    w = m.blocks[0].attn.q_proj.weight
    assert abs(w.std().item() - 0.02) < 0.002
    for blk in m.blocks:
        for proj in (blk.attn.o_proj, blk.mlp.proj):
            assert abs(proj.weight.std().item() - 0.02 / math.sqrt(2 * 8)) < 0.0008
            assert torch.all(proj.bias == 0)
        assert torch.all(blk.ln_1.weight == 1) and torch.all(blk.ln_1.bias == 0)
    untied = GPT(cfg(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_params() == GPT(cfg()).num_params() + 37 * 32


@pytest.mark.parametrize("position", ["learned", "rope", "alibi", "t5", "relative"])
def test_loss_at_init_is_log_vocab(position):
    V = 200
    m = GPT(cfg(vocab_size=V, position=position))
    idx, tgt = torch.randint(0, V, (4, 16)), torch.randint(0, V, (4, 16))
    logits, loss = m(idx, tgt)
    assert logits.shape == (4, 16, V)
    assert abs(loss.item() - math.log(V)) < 0.1
    # the loss is the mean token cross-entropy, and -1 targets are ignored
    ref = -torch.log_softmax(logits, -1).gather(-1, tgt[..., None]).mean()
    torch.testing.assert_close(loss, ref)
    t = tgt.clone()
    t[:, :8] = -1
    _, half = m(idx, t)
    torch.testing.assert_close(
        half, -torch.log_softmax(logits[:, 8:], -1).gather(-1, tgt[:, 8:, None]).mean()
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2),
        dict(position="learned", mlp="gelu", bias=True),
        dict(position="alibi", mlp="none", n_kv_head=1),
    ],
)
def test_small_model_overfits_one_batch(kw):
    m = GPT(cfg(vocab_size=20, block_size=12, n_layer=2, **kw))
    idx = torch.randint(0, 20, (4, 13))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(120):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2, loss.item()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("mlp", MLPS)
def test_every_norm_and_mlp_builds_and_backprops(norm, mlp):
    m = GPT(cfg(norm=norm, mlp=mlp, dropout=0.1)).train()
    _, loss = m(torch.randint(0, 37, (2, 8)), torch.randint(0, 37, (2, 8)))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert (m.blocks[0].mlp is None) == (mlp == "none")


def test_rmsnorm_and_mlps_match_formulas():
    m = GPT(cfg(norm="rmsnorm", mlp="relu2"))
    x = torch.randn(2, 5, 32)
    ln = m.blocks[0].ln_1
    with torch.no_grad():
        ln.weight.normal_()
        torch.testing.assert_close(ln(x), x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * ln.weight)
        mlp = m.blocks[0].mlp
        torch.testing.assert_close(mlp(x), torch.relu(x @ mlp.fc.weight.t()) ** 2 @ mlp.proj.weight.t())


# ---------------------------------------------------------------------------------------------- hooks
def test_module_names_and_hook_shapes():
    m = GPT(cfg(n_kv_head=2)).eval()
    names = dict(m.named_modules())
    for n in (
        "tok_emb",
        "pos",
        "ln_f",
        "lm_head",
        "blocks.1.ln_1",
        "blocks.1.attn",
        "blocks.1.ln_2",
        "blocks.1.mlp",
    ):
        assert n in names
    B, T, C = 2, 7, 32
    logits, cache = m.run_with_cache(torch.randint(0, 37, (B, T)))
    expect = {
        "hook_resid_pre": (B, T, C),
        "attn.hook_q": (B, 4, T, 8),
        "attn.hook_k": (B, 2, T, 8),
        "attn.hook_v": (B, 2, T, 8),
        "attn.hook_pattern": (B, 4, T, T),
        "attn.hook_z": (B, T, 4, 8),
        "hook_attn_out": (B, T, C),
        "hook_mlp_out": (B, T, C),
        "hook_resid_post": (B, T, C),
    }
    for l in range(2):
        for suffix, shape in expect.items():
            assert cache[f"blocks.{l}.{suffix}"].shape == shape, suffix
    # the residual stream adds up: resid_post = resid_pre + attn_out + mlp_out
    c0 = lambda s: cache[f"blocks.0.{s}"]  # noqa: E731
    torch.testing.assert_close(
        c0("hook_resid_post"), c0("hook_resid_pre") + c0("hook_attn_out") + c0("hook_mlp_out")
    )
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], c0("hook_resid_post"))
    # attn_out is o_proj applied to z
    attn = m.blocks[0].attn
    torch.testing.assert_close(c0("hook_attn_out"), attn.o_proj(c0("attn.hook_z").reshape(B, T, C)))
    with pytest.raises(UserError, match="unknown hook point"):
        m.run_with_cache(torch.zeros(1, 2, dtype=torch.long), ["blocks.9.hook_z"])


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_zero_ablating_a_head_via_hook_z(impl):
    m = GPT(cfg(attn_impl=impl)).eval()
    idx = torch.randint(0, 37, (2, 9))
    _, cache = m.run_with_cache(idx, ["blocks.1.attn.hook_z", "blocks.1.hook_resid_pre"])
    z = cache["blocks.1.attn.hook_z"].clone()

    def ablate(module, inp, out):
        out = out.clone()
        out[:, :, 2] = 0
        return out

    logits, _ = m.run_with_hooks(idx, fwd_hooks=[("blocks.1.attn.hook_z", ablate)])
    # independent recomputation of the last block with head 2's z zeroed
    blk = m.blocks[1]
    z[:, :, 2] = 0
    with torch.no_grad():
        x = cache["blocks.1.hook_resid_pre"] + blk.attn.o_proj(z.reshape(2, 9, 32))
        x = x + blk.mlp(blk.ln_2(x))
        ref = m.lm_head(m.ln_f(x))
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert (logits - m(idx)[0]).abs().max() > 1e-4  # the ablation changed the output
    assert not m.blocks[1].attn.hook_z._forward_hooks  # hooks are removed afterwards


def test_hook_points_count_their_hooks_and_fire_every_kind():
    """A hook point fires forward, pre and backward hooks registered on it; removing (even twice) undoes it."""
    m = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16))
    point = m.hook_points()["blocks.0.hook_resid_post"]
    seen = []
    h1 = point.register_forward_hook(lambda mod, inp, out: seen.append("fwd"))
    h2 = point.register_forward_pre_hook(lambda mod, inp: seen.append("pre"))
    h3 = point.register_full_backward_hook(lambda mod, gin, gout: seen.append("bwd"))
    assert point.n_hooks == 3
    idx = torch.randint(0, 17, (1, 8))
    _, loss = m(idx, idx)
    loss.backward()
    assert seen == ["pre", "fwd", "bwd"]
    for h in (h1, h2, h3, h1):  # removing one twice must not lower the count twice
        h.remove()
    assert point.n_hooks == 0
    seen.clear()
    m(idx)
    assert seen == []
    # a replacement returned by a forward hook is used downstream
    with point.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out)):
        logits, _ = m(idx)
    assert point.n_hooks == 0
    ref = m.lm_head(m.ln_f(torch.zeros(1, 8, 16)))
    torch.testing.assert_close(logits, ref)
