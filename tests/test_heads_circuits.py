"""Circuit scores against naive formulas written here: full (C, C) and (V, V) matrices, explicit loops.

Composition scores (Q, K, V; RoPE averaged over offsets), the OV copying score from torch.linalg.eigvals of
the full vocab x vocab OV circuit, direct logit attribution summing to the real logit, the logit lens.
"""

import math

import pytest
import torch

from gptlab.interp import circuits as CI
from gptlab.model import GPT, GPTConfig


def _model(**kw):
    cfg = dict(vocab_size=23, block_size=12, n_layer=3, n_head=4, n_embd=16, position="none", mlp="none")
    cfg.update(kw)
    torch.manual_seed(1)
    m = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():  # trained-looking weights: norm gains and biases away from their init
        for name, p in m.named_parameters():
            if name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.5 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return m.requires_grad_(False)


def _fold_naive(norm, W):
    """Reading matrix W (C, k) through norm: P diag(g) W (LayerNorm) or diag(g) W (RMSNorm)."""
    C = W.shape[0]
    out = torch.diag(norm.weight.detach().double()) @ W.double()
    if isinstance(norm, torch.nn.LayerNorm):
        out = (torch.eye(C, dtype=torch.float64) - torch.full((C, C), 1.0 / C, dtype=torch.float64)) @ out
    return out


def _head_mats(m, l, h):
    """Folded W_Q, W_K, W_V (C, hs) and W_O (hs, C) of query head h in layer l, one head at a time."""
    cfg = m.config
    hs, C = cfg.head_dim, cfg.n_embd
    kv = h // (cfg.n_head // cfg.kv_heads)
    a, ln = m.blocks[l].attn, m.blocks[l].ln_1
    Wq = a.q_proj.weight.detach()[h * hs : (h + 1) * hs].T
    Wk = a.k_proj.weight.detach()[kv * hs : (kv + 1) * hs].T
    Wv = a.v_proj.weight.detach()[kv * hs : (kv + 1) * hs].T
    Wo = a.o_proj.weight.detach()[:, h * hs : (h + 1) * hs].T.double()
    if a.q_norm is not None:  # qk_norm's gains scale each q and k dimension
        Wq, Wk = Wq * a.q_norm.weight.detach(), Wk * a.k_norm.weight.detach()
    if isinstance(ln, torch.nn.LayerNorm):
        Wo = Wo @ (torch.eye(C, dtype=torch.float64) - 1.0 / C)
    return _fold_naive(ln, Wq), _fold_naive(ln, Wk), _fold_naive(ln, Wv), Wo


def _rotation(hs, d, theta):
    """The (hs, hs) RoPE rotation by offset d in row convention (x @ R), half-split pairs, built by hand."""
    R = torch.zeros(hs, hs, dtype=torch.float64)
    half = hs // 2
    for k in range(half):
        ang = d * theta ** (-2 * k / hs)
        c, s = math.cos(ang), math.sin(ang)
        R[k, k] = R[k + half, k + half] = c
        R[k, k + half] = s
        R[k + half, k] = -s
    return R


def _naive_composition(m):
    cfg = m.config
    L, H, hs = cfg.n_layer, cfg.n_head, cfg.head_dim
    rope = cfg.position == "rope"
    n_off = min(cfg.block_size, cfg.window or cfg.block_size)  # the offsets a query sees
    Rs = [_rotation(hs, d, cfg.rope_theta) for d in range(n_off)] if rope else [torch.eye(hs).double()]
    fro = torch.linalg.matrix_norm
    out = {k: torch.full((L, H, L, H), float("nan"), dtype=torch.float64) for k in "QKV"}
    for la in range(L):
        for ha in range(H):
            _, _, Va, Oa = _head_mats(m, la, ha)
            OVa = Va @ Oa  # (C, C)
            for lb in range(la + 1, L):
                for hb in range(H):
                    Qb, Kb, Vb, Ob = _head_mats(m, lb, hb)
                    QKs = [Qb @ R @ Kb.T for R in Rs]  # one (C, C) QK circuit per offset
                    rms = lambda xs: math.sqrt(sum(float(fro(x)) ** 2 for x in xs) / len(xs))  # noqa: E731
                    den = float(fro(OVa)) * rms(QKs)
                    out["Q"][la, ha, lb, hb] = rms([OVa @ QK for QK in QKs]) / den
                    out["K"][la, ha, lb, hb] = rms([OVa @ QK.T for QK in QKs]) / den
                    out["V"][la, ha, lb, hb] = float(fro(OVa @ Vb @ Ob)) / (
                        float(fro(OVa)) * float(fro(Vb @ Ob))
                    )
    return out


CONFIGS = [
    dict(),
    dict(norm="rmsnorm", n_kv_head=2),
    dict(position="rope", n_kv_head=1, bias=True),
    dict(position="rope", norm="rmsnorm", window=5),
    dict(position="learned", mlp="gelu", bias=True),
    dict(position="alibi", n_kv_head=2, mlp="swiglu"),
    dict(position="rope", norm="rmsnorm", n_kv_head=2, qk_norm=True),
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_composition_matches_full_matrices(kw):
    m = _model(**kw)
    got = CI.composition_scores(CI.layer_weights(m), CI.offsets_for(m))
    want = _naive_composition(m)
    for k in CI.KINDS:
        assert torch.isnan(got[k]).equal(torch.isnan(want[k]))  # only pairs with layer_a < layer_b
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-9, equal_nan=True)
    rows = CI.composition_rows(got)
    L, H = m.config.n_layer, m.config.n_head
    assert len(rows) == 3 * H * H * L * (L - 1) // 2
    r = next(
        r
        for r in rows
        if (r["kind"], r["layer_a"], r["head_a"], r["layer_b"], r["head_b"]) == ("K", 0, 1, 2, 3)
    )
    assert r["score"] == pytest.approx(float(want["K"][0, 1, 2, 3]), abs=1e-5)


def test_rotation_by_hand_is_the_models():
    m = _model(position="rope")
    hs = m.config.head_dim
    x = torch.randn(1, 1, 5, hs)
    rotated = m.pos.rotate(x, torch.arange(5), start=0)
    for d in range(5):
        torch.testing.assert_close(rotated[0, 0, d].double(), x[0, 0, d].double() @ _rotation(hs, d, 10000.0))


@pytest.mark.parametrize("kw", [dict(), dict(norm="rmsnorm", n_kv_head=2)])
def test_folded_weights_reproduce_q_k_and_head_outputs(kw):
    """hook_q / hook_k of layer 1 equal (resid / sigma) @ W_Q, W_K (no biases, no rotation): the fold is right."""
    m = _model(**kw)
    x = torch.randint(0, 23, (1, 7))
    _, c = m.run_with_cache(x, ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_q", "blocks.1.attn.hook_k"])
    r = c["blocks.1.hook_resid_pre"][0].double()  # (T, C)
    if m.config.norm == "layernorm":
        sigma = (r.var(-1, unbiased=False, keepdim=True) + m.config.norm_eps).sqrt()
    else:
        sigma = (r.pow(2).mean(-1, keepdim=True) + m.config.norm_eps).sqrt()
    w = CI.layer_weights(m)[1]
    for h in range(4):
        kv = h // (4 // m.config.kv_heads)
        torch.testing.assert_close(
            (r / sigma) @ w.W_Q[h].double(), c["blocks.1.attn.hook_q"][0, h].double(), atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            (r / sigma) @ w.W_K[h].double(), c["blocks.1.attn.hook_k"][0, kv].double(), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("kw", CONFIGS)
def test_copying_score_from_the_full_vocab_matrix(kw):
    m = _model(**kw)
    cfg = m.config
    hs = cfg.head_dim
    E = m.tok_emb.weight.detach().double()  # (V, C)
    W_U = _fold_naive(m.ln_f, m.lm_head.weight.detach().T)  # (C, V)
    eig = CI.ov_eigenvalues(m)
    scores = CI.copying_scores(eig)
    for l in range(cfg.n_layer):
        for h in range(cfg.n_head):
            _, _, Wv, Wo = _head_mats(m, l, h)
            full = E @ Wv @ Wo @ W_U  # (V, V): token in -> logit out
            lam = torch.linalg.eigvals(full)
            lam = lam[lam.abs().argsort(descending=True)]
            assert float(lam[hs:].abs().max()) < 1e-9 * float(lam[0].abs())  # rank hs: the rest are zeros
            top = lam[:hs]
            share = float((top.real > 0).double().mean())
            ratio = float(top.sum().real / top.abs().sum())
            assert float(scores["copying"][l, h]) == pytest.approx(share)
            assert float(scores["copying_ratio"][l, h]) == pytest.approx(ratio, abs=1e-6)
            key = lambda z: (round(float(z.real), 6), round(float(z.imag), 6))  # noqa: E731
            for a, b in zip(sorted(map(key, top)), sorted(map(key, eig[l, h]))):
                assert a == pytest.approx(b, abs=2e-6)


def test_copying_score_of_an_ideal_copier():
    """W_V W_O = I and tied embeddings with W_U = E^T: the OV circuit is E E^T (positive semidefinite)."""
    m = _model(n_layer=1, n_head=1, norm="rmsnorm")
    with torch.no_grad():
        m.blocks[0].ln_1.weight.fill_(1)
        m.ln_f.weight.fill_(1)
        m.blocks[0].attn.v_proj.weight.copy_(torch.eye(16))
        m.blocks[0].attn.o_proj.weight.copy_(torch.eye(16))
        sc = CI.copying_scores(CI.ov_eigenvalues(m))
        assert float(sc["copying"][0, 0]) == 1.0 and float(sc["copying_ratio"][0, 0]) == pytest.approx(1.0)
        m.blocks[0].attn.o_proj.weight.mul_(-1)  # an anti-copier
        sc = CI.copying_scores(CI.ov_eigenvalues(m))
        assert float(sc["copying"][0, 0]) == 0.0 and float(sc["copying_ratio"][0, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("center", [False, True])
def test_dla_sums_to_the_logit(kw, center):
    m = _model(**kw)
    ids = torch.randint(0, 23, (11,))
    att = CI.direct_logit_attribution(m, ids, center=center)
    logits, _ = m(ids[None])
    lg = logits[0, :-1].double()
    want = lg.gather(-1, ids[1:, None])[:, 0]
    if center:
        want = want - lg.mean(-1)
    total = att.heads.sum((1, 2)) + att.embed + att.mlp.sum(1) + att.bias
    torch.testing.assert_close(total.double(), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(att.logit.double(), want, atol=1e-5, rtol=1e-5)
    assert att.heads.shape == (10, 3, 4)


def test_dla_of_an_ablated_head_is_zero_and_one_head_matches_a_loop():
    m = _model(norm="layernorm", bias=True)
    ids = torch.randint(0, 23, (9,))
    att = CI.direct_logit_attribution(m, ids, center=False, ablate=[(1, 2), (0, 0)])
    assert float(att.heads[:, 1, 2].abs().max()) == 0 and float(att.heads[:, 0, 0].abs().max()) == 0
    assert float(att.heads[:, 1, 1].abs().max()) > 0
    # head (2, 3) by hand: its output z_h @ W_O^h, centred, over the frozen sigma of the final residual, gain
    att = CI.direct_logit_attribution(m, ids, center=False)
    _, c = m.run_with_cache(ids[None], ["blocks.2.attn.hook_z", "blocks.2.hook_resid_post"])
    hs = 4
    Wo = m.blocks[2].attn.o_proj.weight.detach()[:, 3 * hs : 4 * hs].double()  # (C, hs)
    for t in range(8):
        out = Wo @ c["blocks.2.attn.hook_z"][0, t, 3].double()  # (C,)
        resid = c["blocks.2.hook_resid_post"][0, t].double()
        sigma = math.sqrt(float(resid.var(unbiased=False)) + 1e-5)
        y = int(ids[t + 1])
        want = float(
            ((out - out.mean()) / sigma * m.ln_f.weight.detach().double())
            @ m.lm_head.weight[y].detach().double()
        )
        assert float(att.heads[t, 2, 3]) == pytest.approx(want, abs=1e-5)


def test_logit_lens_last_layer_is_the_model():
    m = _model(mlp="gelu", position="rope")
    ids = torch.randint(0, 23, (12,))
    rows = CI.logit_lens(m, ids)
    assert [r["layer"] for r in rows] == ["embed", 0, 1, 2]
    _, loss = m(ids[None, :-1], ids[None, 1:])
    assert rows[-1]["loss"] == pytest.approx(float(loss), abs=1e-4)
    logits, _ = m(ids[None])
    ranks = (logits[0, :-1] > logits[0, :-1].gather(-1, ids[1:, None])).sum(-1) + 1
    assert rows[-1]["rank"] == pytest.approx(float(ranks.double().mean()), abs=1e-3)
    assert all(1 <= r["rank"] <= 23 and 0 <= r["top1"] <= 1 for r in rows)


def test_dla_and_logit_lens_with_a_logit_softcap():
    """The contributions sum to the logit before the cap (DLA is linear); the lens's last layer is the model,
    cap included."""
    m = _model(mlp="gelu", position="rope", logit_softcap=0.1)  # below this model's largest logits
    ids = torch.randint(0, 23, (12,))
    att = CI.direct_logit_attribution(m, ids, center=False)
    _, c = m.run_with_cache(ids[None], ["blocks.2.hook_resid_post"])
    raw = m.lm_head(m.ln_f(c["blocks.2.hook_resid_post"][0, :-1])).double().gather(-1, ids[1:, None])[:, 0]
    total = att.heads.sum((1, 2)) + att.embed + att.mlp.sum(1) + att.bias
    torch.testing.assert_close(total.double(), raw, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(att.logit.double(), raw, atol=1e-5, rtol=1e-5)
    assert float(raw.abs().max()) > 0.1  # the cap bites: the capped logit is another number
    _, loss = m(ids[None, :-1], ids[None, 1:])
    assert CI.logit_lens(m, ids)[-1]["loss"] == pytest.approx(float(loss), abs=1e-4)


@pytest.mark.parametrize("position", ["none", "rope"])
def test_random_baseline_matches_full_gaussian_matrices(position):
    m = _model(position=position, n_layer=2)
    base = CI.random_baseline(m, draws=8)
    g = torch.Generator().manual_seed(123)
    C, hs, n = 16, 4, 200
    fro = torch.linalg.matrix_norm
    Rs = [_rotation(hs, d, 10000.0) for d in range(12)] if position == "rope" else [torch.eye(hs).double()]
    got = {"Q": [], "K": [], "V": []}
    for _ in range(n):
        shapes = [(C, hs), (hs, C), (C, hs), (C, hs), (C, hs), (hs, C)]
        Va, Oa, Qb, Kb, Vb, Ob = (torch.randn(*s, generator=g).double() for s in shapes)
        OV = Va @ Oa
        QKs = [Qb @ R @ Kb.T for R in Rs]
        rms = lambda xs: math.sqrt(sum(float(fro(x)) ** 2 for x in xs) / len(xs))  # noqa: E731
        got["Q"].append(rms([OV @ QK for QK in QKs]) / (float(fro(OV)) * rms(QKs)))
        got["K"].append(rms([OV @ QK.T for QK in QKs]) / (float(fro(OV)) * rms(QKs)))
        got["V"].append(float(fro(OV @ Vb @ Ob)) / (float(fro(OV)) * float(fro(Vb @ Ob))))
    for k in "QKV":
        mc = sum(got[k]) / n
        assert base[k] == pytest.approx(mc, rel=0.06), (k, base[k], mc)


def test_transformer_lens_composition_scores_agree():
    """Optional: TransformerLens' own composition_scores (FactoredMatrix) on the same folded weights."""
    pytest.importorskip("transformer_lens")
    import importlib

    from transformer_lens import FactoredMatrix

    # TL 4 keeps it in utilities.matrix, TL 3 in utils
    where = "transformer_lens.utilities.matrix"
    if importlib.util.find_spec(where) is None:
        where = "transformer_lens.utils"
    tl_scores = importlib.import_module(where).composition_scores

    m = _model(n_kv_head=2)
    w = CI.layer_weights(m)
    W_Q, W_K, W_V, W_O = (
        torch.stack([getattr(x, n) for x in w]).double() for n in ("W_Q", "W_K", "W_V", "W_O")
    )
    QK = FactoredMatrix(W_Q, W_K.transpose(-2, -1))  # (L, H): the matrices TL's all_composition_scores uses
    OV = FactoredMatrix(W_V, W_O)
    ours = CI.composition_scores(w)
    for kind, right in (("Q", QK), ("K", QK.T), ("V", OV)):
        tl = tl_scores(OV, right, broadcast_dims=True)  # (L, H, L, H)
        for la in range(3):
            for lb in range(la + 1, 3):
                torch.testing.assert_close(
                    tl[la, :, lb].double(), ours[kind][la, :, lb], rtol=1e-5, atol=1e-8
                )


def test_attribution_and_lens_from_one_forward_equal_the_separate_calls():
    m = _model(mlp="gelu", position="rope")
    ids = torch.randint(0, 23, (12,))
    att, lens = CI.attribution_and_lens(m, ids)
    alone = CI.direct_logit_attribution(m, ids)
    for field in ("heads", "embed", "mlp", "bias", "logit"):
        torch.testing.assert_close(getattr(att, field), getattr(alone, field))
    assert lens == CI.logit_lens(m, ids)
