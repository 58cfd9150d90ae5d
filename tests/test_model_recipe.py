"""The modern-recipe switches against formulas written here: qk_norm, logit_softcap, relu2, zero_init_proj,
untied embeddings; cached generation and the head metrics on models that use them."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_model_attention import perturb
from test_model_attention import tiny as attention_tiny  # vocab 37, block 16, 2 layers, 4 heads, width 32
from test_model_generate import tiny as generate_tiny  # vocab 29, block 8, perturbed weights

from gptlab.errors import UserError
from gptlab.model import GPT, POSITIONS, GPTConfig
from gptlab.model.generate import sample_next

KV = {"mha": 4, "gqa": 2, "mqa": 1}


# ---------------------------------------------------------------------------------------------- qk_norm
def rms_norm(x, gain, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


def rope_by_hand(x, theta):
    """x (B, h, T, hs) at positions 0..T-1: dim i < hs/2 pairs with i + hs/2, angle p * theta^(-2i/hs)."""
    T, hs = x.shape[-2:]
    half = hs // 2
    ang = torch.arange(T, dtype=x.dtype)[:, None] * theta ** (-2 * torch.arange(half, dtype=x.dtype) / hs)
    c, s = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def layer_by_hand(attn, x, cfg, qk_norm=True):
    """One attention layer in float64: project, RMSNorm each head's q and k over head_dim with their gains,
    rotate (rope), causal softmax(q k^T / sqrt(hs)) v with query head h reading KV head h // (nh / nkv), o_proj."""
    B, T, C = x.shape
    nh, nkv, hs = cfg.n_head, cfg.kv_heads, cfg.head_dim
    W = {n: getattr(attn, n).weight.detach().double() for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    x = x.double()
    q = (x @ W["q_proj"].T).view(B, T, nh, hs).transpose(1, 2)
    k = (x @ W["k_proj"].T).view(B, T, nkv, hs).transpose(1, 2)
    v = (x @ W["v_proj"].T).view(B, T, nkv, hs).transpose(1, 2)
    if qk_norm:
        q = rms_norm(q, attn.q_norm.weight.detach().double(), cfg.norm_eps)
        k = rms_norm(k, attn.k_norm.weight.detach().double(), cfg.norm_eps)
    if cfg.position == "rope":
        q, k = rope_by_hand(q, cfg.rope_theta), rope_by_hand(k, cfg.rope_theta)
    out = torch.zeros(B, T, nh, hs, dtype=torch.float64)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for h in range(nh):
        kv = h // (nh // nkv)
        s = (q[:, h] @ k[:, kv].transpose(1, 2) / math.sqrt(hs)).masked_fill(future, float("-inf"))
        out[:, :, h] = torch.softmax(s, -1) @ v[:, kv]
    return out.reshape(B, T, C) @ W["o_proj"].T


@pytest.mark.parametrize("impl", ["sdpa", "explicit", "flex"])
@pytest.mark.parametrize("kv", list(KV))
@pytest.mark.parametrize("position", ["none", "rope"])
def test_qk_norm_layer_matches_the_formula(position, kv, impl):
    m = perturb(attention_tiny(position, KV[kv], qk_norm=True, attn_impl=impl))  # gains away from 1 too
    attn, cfg = m.blocks[0].attn, m.config
    x = torch.randn(2, 9, cfg.n_embd)
    with torch.no_grad():  # flex runs forward-only on a CPU
        y = attn(x, m.pos).double()
    torch.testing.assert_close(y, layer_by_hand(attn, x, cfg), atol=1e-5, rtol=1e-5)
    assert (y - layer_by_hand(attn, x, cfg, qk_norm=False)).abs().max() > 1e-2  # the norm changes the output


@pytest.mark.parametrize("kv,window", [(4, None), (2, 3), (1, None)])
@pytest.mark.parametrize("position", POSITIONS)
def test_qk_norm_paths_agree_for_every_scheme(position, kv, window):
    """sdpa == explicit == flex, and causality, for every position scheme x MHA/GQA/MQA with qk_norm."""
    m = perturb(attention_tiny(position, kv, window, qk_norm=True))
    idx = torch.randint(0, 37, (2, 12))
    idx2 = idx.clone()
    idx2[:, 7] = (idx[:, 7] + 1) % 37
    with torch.no_grad():
        a, b = m(idx, attn_impl="sdpa")[0], m(idx2, attn_impl="sdpa")[0]
        for impl in ("explicit", "flex"):
            torch.testing.assert_close(m(idx, attn_impl=impl)[0], a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7] - b[:, 7]).abs().max() > 1e-3


def test_qk_norm_parameters_and_hooks():
    m = GPT(
        GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, qk_norm=True, n_kv_head=2)
    )
    names = {n: p.shape for n, p in m.named_parameters() if "_norm" in n}
    assert names == {f"blocks.{l}.attn.{w}_norm.weight": (8,) for l in (0, 1) for w in "qk"}
    assert all(torch.equal(p.detach(), torch.ones(8)) for n, p in m.named_parameters() if "_norm" in n)
    plain = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, n_kv_head=2))
    assert m.num_params() - plain.num_params() == 2 * 2 * 8  # layers x (q, k) x head_dim
    # hook_k (position none, a negligible eps): each KV head's key has RMS 1 over head_dim (unit gains)
    cfg = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, qk_norm=True, n_kv_head=2,
                    position="none", norm_eps=1e-12)  # fmt: skip
    _, cache = GPT(cfg).run_with_cache(torch.randint(0, 37, (2, 6)), ["blocks.1.attn.hook_k"])
    rms = cache["blocks.1.attn.hook_k"].pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms))


# ---------------------------------------------------------------------------------------------- softcap
@pytest.mark.parametrize("cap", [2.0, 30])
def test_logit_softcap_is_c_tanh_logits_over_c(cap):
    capped = perturb(attention_tiny("rope", logit_softcap=cap))
    plain = attention_tiny("rope")
    plain.load_state_dict(capped.state_dict())
    idx, y = torch.randint(0, 37, (2, 10)), torch.randint(0, 37, (2, 10))
    with torch.no_grad():
        raw, _ = plain(idx)
        logits, loss = capped(idx, y)
    assert raw.abs().max() > 2.0  # big enough logits for a cap of 2 to bite
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap), atol=1e-5, rtol=1e-5)
    assert logits.abs().max() < cap
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, 37), y.view(-1)))


@pytest.mark.parametrize("switch", [dict(qk_norm=True), dict(logit_softcap=1.5)], ids=["qk_norm", "softcap"])
@pytest.mark.parametrize("position,kv,window", [("rope", 2, None), ("alibi", 1, 3), ("learned", 4, None)])
def test_cache_equals_no_cache_and_the_ring_step(position, kv, window, switch, monkeypatch):
    """Greedy and seeded sampling past block_size: KV cache == no cache == the fixed-shape ring step."""
    m = generate_tiny(position, kv, window, **switch)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # compile=True's step, run eagerly
    prompt = torch.randint(0, 29, (2, 5))
    for kw in (dict(temperature=0), dict(temperature=1.0, top_k=12)):
        outs = []
        for mode in (dict(use_cache=True), dict(use_cache=False), dict(compile=True)):
            torch.manual_seed(4)
            outs.append(m.generate(prompt, 20, **kw, **mode))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_generation_samples_from_the_capped_logits():
    """Seeded sampling within block_size equals a loop that samples from forward's (capped) logits, and
    differs from the same model without the cap: generation applies it."""
    m = generate_tiny("rope", logit_softcap=1.0)
    prompt = torch.randint(0, 29, (2, 2))

    def loop(model):
        g, seq = torch.Generator().manual_seed(7), prompt
        for _ in range(6):
            with torch.no_grad():
                logits, _ = model(seq)
            seq = torch.cat([seq, sample_next(logits[:, -1], 1.0, generator=g)], 1)
        return seq

    assert torch.equal(m.generate(prompt, 6, generator=torch.Generator().manual_seed(7)), loop(m))
    uncapped = generate_tiny("rope")
    uncapped.load_state_dict(m.state_dict())
    assert not torch.equal(loop(uncapped), loop(m))


# ---------------------------------------------------------------------------------------------- relu2, init
def test_relu2_block_mlp_is_relu_squared():
    m = perturb(attention_tiny("rope", mlp="relu2", bias=True))
    mlp, x = m.blocks[1].mlp, torch.randn(2, 5, 32)
    assert mlp.fc.weight.shape == (4 * 32, 32)
    with torch.no_grad():
        want = torch.relu(x @ mlp.fc.weight.T + mlp.fc.bias) ** 2 @ mlp.proj.weight.T + mlp.proj.bias
        torch.testing.assert_close(mlp(x), want)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu", "relu2"])
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_zero_init_proj_starts_every_block_as_the_identity(position, mlp):
    kw = dict(vocab_size=37, block_size=16, n_layer=3, n_head=4, n_embd=32, position=position, mlp=mlp)
    m = GPT(GPTConfig(**kw, zero_init_proj=True))
    for block in m.blocks:
        assert not block.attn.o_proj.weight.any() and not block.mlp.proj.weight.any()
        assert block.attn.q_proj.weight.std() > 0.01  # everything else keeps its init
    std = GPT(GPTConfig(**kw)).blocks[0].attn.o_proj.weight.std()
    assert abs(float(std) - 0.02 / math.sqrt(6)) < 0.002  # without it: GPT-2's scaled init
    idx, y = torch.randint(0, 37, (2, 10)), torch.randint(0, 37, (2, 10))
    logits, loss = m(idx, y)
    x = m.tok_emb(idx) + (m.pos.emb.weight[:10] if position == "learned" else 0)  # the embedding path
    torch.testing.assert_close(logits, m.lm_head(m.ln_f(x)))
    loss.backward()  # and the zero matrices learn: their gradients are not zero
    assert all(b.attn.o_proj.weight.grad.abs().max() > 0 for b in m.blocks)
    assert all(b.mlp.proj.weight.grad.abs().max() > 0 for b in m.blocks)


def test_untied_embeddings_are_two_matrices_trained_apart():
    m = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=1, n_head=4, n_embd=32, tie_embeddings=False))
    assert m.lm_head.weight is not m.tok_emb.weight
    m(torch.randint(0, 37, (2, 6)), torch.randint(0, 37, (2, 6)))[1].backward()
    assert not torch.equal(m.lm_head.weight.grad, m.tok_emb.weight.grad)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(logit_softcap=0), "model.logit_softcap=0 must be a positive number"),
        (dict(logit_softcap=-3.0), "model.logit_softcap"),
        (dict(logit_softcap="30"), "model.logit_softcap"),
        (dict(logit_softcap=float("inf")), "model.logit_softcap"),
        (dict(qk_norm="yes"), "model.qk_norm='yes' must be true or false"),
        (dict(zero_init_proj=1), "model.zero_init_proj"),
    ],
)
def test_bad_switch_values_are_one_line(kw, match):
    with pytest.raises(UserError, match=match) as e:
        GPTConfig(vocab_size=37, n_layer=1, n_head=4, n_embd=32, **kw)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- head metrics
def test_patterns_of_a_qk_norm_model_reproduce_its_sdpa_outputs():
    """attention_patterns (explicit path) @ V == each head's output (hook_z) of an sdpa forward: the patterns
    apply qk_norm as the fused path does."""
    m = perturb(attention_tiny("rope", 2, qk_norm=True, attn_impl="sdpa"))
    idx = torch.randint(0, 37, (2, 11))
    pats = m.attention_patterns(idx)  # (L, B, nh, T, T)
    names = [f"blocks.{l}.attn.hook_{w}" for l in range(2) for w in "vz"]
    _, cache = m.run_with_cache(idx, names, attn_impl="sdpa")
    for l in range(2):
        v = cache[f"blocks.{l}.attn.hook_v"].repeat_interleave(2, dim=1)  # (B, nh, T, hs)
        z = cache[f"blocks.{l}.attn.hook_z"].transpose(1, 2)  # (B, nh, T, hs)
        torch.testing.assert_close(pats[l] @ v, z, atol=1e-5, rtol=1e-5)


def test_every_head_metric_runs_on_a_model_with_every_switch():
    from gptlab.interp import metrics as M
    from gptlab.interp.ablation import _LayerRunner
    from gptlab.interp.head_report import analyse
    from gptlab.interp.probe import repeated_random_tokens

    m = perturb(attention_tiny("rope", 2, qk_norm=True, logit_softcap=3.0, mlp="relu2", tie_embeddings=False))
    text = torch.randint(0, 37, (14,))
    probe = repeated_random_tokens(37, 16, batch_size=2)
    val = [(torch.randint(0, 37, (2, 16)), torch.randint(0, 37, (2, 16)))]
    rep = analyse(m, text, [str(int(t)) for t in text], probe, eval_batches=val, ablation_batches=val)
    assert set(M.METRIC_NAMES) - {"dla_share"} <= set(rep.tables)
    assert all(
        torch.isfinite(torch.as_tensor(rep.tables[n])).all() for n in M.METRIC_NAMES if n in rep.tables
    )
    assert _LayerRunner(m, val[0][0]).shortcut  # ablation's layer shortcut unembeds with the cap too


# ---------------------------------------------------------------------------------------------- the sweep
def test_recipe_experiment_is_the_baseline_each_switch_alone_and_all_together():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gptlab.training.resume import differences

    configs = Path(__file__).resolve().parents[1] / "configs"
    swept = OmegaConf.load(configs / "experiment" / "recipe.yaml").hydra.sweeper.params.recipe.split(",")
    switches = {
        "muon": {"optim.name": "muon"},
        "qk_norm": {"model.qk_norm": True},
        "relu2": {"model.mlp": "relu2"},
        "softcap": {"model.logit_softcap": 15.0},
        "zero_init": {"model.zero_init_proj": True},
        "untied": {"model.tie_embeddings": False},
    }
    assert swept == ["baseline", *switches, "all"]
    runs = {}
    with initialize_config_dir(str(configs), version_base="1.3"):
        for name in swept:
            cfg = compose("config", overrides=["+experiment=recipe", f"recipe={name}"])
            runs[name] = OmegaConf.to_container(cfg, resolve=False)
    base = runs["baseline"]
    assert (base["model"]["mlp"], base["optim"]["name"], base["model"]["tie_embeddings"]) == (
        "swiglu",
        "adamw",
        True,
    )
    every = {}
    for name, want in switches.items():
        changed = {k: new for k, _, new in differences(base, runs[name]) if not k.startswith("optim.muon_")}
        assert changed == want, name
        every.update(want)
    changed = {k: new for k, _, new in differences(base, runs["all"]) if not k.startswith("optim.muon_")}
    assert changed == every
