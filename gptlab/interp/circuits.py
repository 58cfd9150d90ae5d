"""Circuits read from the weights: how heads compose, whether they copy, and what they add to the logits.

Conventions (row vectors, as in the code: ``q = x @ W_Q``). For head h of layer l, with C = n_embd and
hs = head_dim, the *folded* matrices are

    W_Q (C, hs), W_K (C, hs), W_V (C, hs)   reading matrices, the block's ln_1 folded in (below)
    W_O (hs, C)                             writing matrix (its slice of o_proj)
    QK = W_Q @ W_K.T (C, C)   the score of query residual x_q and key residual x_k is x_q @ QK @ x_k.T / sqrt(hs)
    OV = W_V @ W_O  (C, C)    what the head writes for a residual it attends to

Under GQA/MQA query head h uses K/V head ``h // (n_head // n_kv_head)``: its W_K and W_V are that head's.

**Norms.** Every pre-norm ``ln(x) = g * N(x) (+ b)`` is folded into what reads through it: ``W -> diag(g) W``,
and for LayerNorm, which removes the mean of x, also ``W -> P W`` with ``P = I - 11^T / C`` (TransformerLens'
``fold_ln`` and ``center_weights``). For LayerNorm models W_O is centred too (``W_O -> W_O P``: the mean
direction of the residual is read by no one, TransformerLens' ``center_writing_weights``). The norm's
per-token scale 1/sigma is left out (it rescales, and the scores are ratios); biases are left out (constant
offsets, not part of a bilinear circuit).

**Composition** (Elhage et al. 2021, *A Mathematical Framework for Transformer Circuits*): for head a in an
earlier layer and head b in a later one,

    Q:  ||OV_a @ QK_b  ||_F / (||OV_a||_F ||QK_b||_F)   a's output read by b's queries
    K:  ||OV_a @ QK_b.T||_F / (||OV_a||_F ||QK_b||_F)   a's output read by b's keys
    V:  ||OV_a @ OV_b  ||_F / (||OV_a||_F ||OV_b||_F)   a's output read by b's values

(these are TransformerLens' ``all_composition_scores`` products). They are computed in factored form on
(hs, hs) matrices, never (C, C): with thin QR factors ``W_V = Q R_V``, ``W_K = Q' R_K``, ...,
``||W_V W_O W_Q W_K^T||_F = ||R_V (W_O W_Q) R_K^T||_F``.

**qk_norm** (RMSNorm of each head's q and k over head_dim, before RoPE) is folded the same way: its gains
scale W_Q's and W_K's columns (``W_Q -> W_Q diag(g_q)``), and its per-token, per-head scale is left out like
the pre-norm's.

**RoPE** rotates q and k by their positions, so the QK circuit depends on the offset d = i - j:
``QK(d) = W_Q R_d W_K.T`` with R_d the rotation by d. For RoPE models the Q- and K-scores (and ||QK||) are
taken over the stack of every offset the model sees, d = 0 .. block_size - 1 (or window - 1): ``sqrt(mean_d ||OV QK(d)||^2) /
(||OV|| sqrt(mean_d ||QK(d)||^2))``, i.e. the same Frobenius ratio with the QK circuit read as one map from
(residual, offset). Because R_d = diag(cos_d) + P_half diag(sin_d), the mean over d only needs the
(hs, hs) averages of cos_d cos_d^T, cos_d sin_d^T, sin_d sin_d^T, so this costs no more than the plain score.
ALiBi, T5 and Shaw (relative) add position terms to the scores beside the content circuit; learned and
sinusoidal positions add to the residual: for all of these QK is the content-content circuit W_Q W_K^T.

**Baseline.** The same scores for random matrices of the same shapes: i.i.d. Gaussian W_Q, W_K, W_V (C, hs)
and W_O (hs, C), put through the same code (RoPE offsets included), averaged over every head pair of
``BASELINE_DRAWS`` draws of a 2-layer model of this model's shape (fixed seed).

**OV copying score** (Elhage et al. 2021): the full OV circuit of a head, token to logit, is the (V, V) matrix
``E F_1 W_V W_O F_f W_U`` (E the token embedding, W_U the unembedding, F_1 / F_f the folded ln_1 / ln_f).
Its nonzero eigenvalues are those of the (hs, hs) matrix ``W_O (F_f W_U E F_1) W_V`` (AB and BA share
their nonzero eigenvalues), so nothing of size V x V is formed. ``copying`` is the share of those hs
eigenvalues with a positive real part (the issue's definition); ``copying_ratio`` is Elhage et al.'s
``sum(lambda) / sum(|lambda|)`` (1 for a pure copier, -1 for an anti-copier).

**Direct logit attribution** on a text: the final residual is a sum of components (embeddings, each head's
``z_h @ W_O^h``, the o_proj biases, the MLPs). With ln_f's scale frozen at its value on the full residual
(so ln_f is linear; a ``logit_softcap`` is not linear, so with one the logit attributed is the one before
the cap), each component's contribution to the logit of the correct next token y is
``(centre(c) / sigma * g_f) . (w_y - mean_v w_v)``; the contributions plus ln_f's bias term sum to the centred
logit ``logit_y - mean_v logit_v`` (``center=False`` gives the raw logit). The **logit lens** puts the
residual after each layer through ln_f (its own scale) and the unembedding (``GPT.unembed``, soft cap
included): loss, mean rank and top-1 of y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.model.positions import RotaryPosition, rotate_half

from .ablation import ablation_hooks

KINDS = ("Q", "K", "V")
BASELINE_DRAWS = 8


@dataclass
class LayerWeights:
    """Folded per-head matrices of one attention layer (each query head with its own K/V head's matrices)."""

    W_Q: Tensor  # (nh, C, hs)
    W_K: Tensor  # (nh, C, hs)
    W_V: Tensor  # (nh, C, hs)
    W_O: Tensor  # (nh, hs, C)


def _fold(norm: nn.Module | None, W: Tensor) -> Tensor:
    """Fold a pre-norm into reading matrices `W (..., C, k)`: diag(g) W, then (LayerNorm) P W."""
    if norm is None:
        return W
    W = norm.weight.detach().float().to(W.device)[:, None] * W
    return W - W.mean(dim=-2, keepdim=True) if isinstance(norm, nn.LayerNorm) else W


def _centre_rows(norm: nn.Module, W: Tensor) -> Tensor:
    """Writing matrices `W (..., k, C)` without the mean direction (W P) when the readers' norm is a LayerNorm."""
    return W - W.mean(dim=-1, keepdim=True) if isinstance(norm, nn.LayerNorm) else W


@torch.no_grad()
def layer_weights(model) -> list[LayerWeights]:
    """The folded W_Q, W_K, W_V, W_O of every layer (see the module docstring)."""
    cfg = model.config
    nh, nkv, hs, C = cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.n_embd
    kv_of = torch.arange(nh) // (nh // nkv)  # query head -> its K/V head
    out = []
    for block in model.blocks:
        a = block.attn
        q = a.q_proj.weight.detach().float().cpu().view(nh, hs, C).transpose(1, 2)  # (nh, C, hs)
        k = a.k_proj.weight.detach().float().cpu().view(nkv, hs, C).transpose(1, 2)[kv_of]  # (nh, C, hs)
        v = a.v_proj.weight.detach().float().cpu().view(nkv, hs, C).transpose(1, 2)[kv_of]
        o = a.o_proj.weight.detach().float().cpu().view(C, nh, hs).permute(1, 2, 0)  # (nh, hs, C)
        if a.q_norm is not None:  # qk_norm's gains scale the columns (its per-token scale is left out)
            q, k = q * a.q_norm.weight.detach().float().cpu(), k * a.k_norm.weight.detach().float().cpu()
        out.append(
            LayerWeights(
                _fold(block.ln_1, q), _fold(block.ln_1, k), _fold(block.ln_1, v), _centre_rows(block.ln_1, o)
            )
        )
    return out


# ------------------------------------------------------------------------------------------ composition
def _r(W: Tensor) -> Tensor:
    """An (hs, hs) R with R^T R = W^T W for W (..., C, hs): the R of a thin QR, so ||W X||_F = ||R X||_F."""
    return torch.linalg.qr(W.double(), mode="r")[1]


class _Offsets:
    """Mean over RoPE offsets d = 0..n-1 of the rotation terms: R_d = diag(c_d) + P diag(s_d).

    ``mean_d ||X R_d Y||_F^2 = sum_kl [Ccc X^TX + 2 Ccs X^T(XP) + Css (XP)^T(XP)]_kl (Y Y^T)_kl`` with
    ``Ccc = mean_d c_d c_d^T`` etc. and P the matrix of rotate_half (x P = rotate_half(x)).
    """

    def __init__(self, pos: RotaryPosition, n: int):
        cos, sin = pos.cos_sin(torch.arange(n))  # (n, hs) each, float32
        cos, sin = cos.double(), sin.double()
        self.cc, self.cs, self.ss = cos.T @ cos / n, cos.T @ sin / n, sin.T @ sin / n  # (hs, hs)
        hs = cos.shape[1]
        self.P = rotate_half(torch.eye(hs, dtype=torch.float64))  # row k = rotate_half(e_k)

    def sq_norm(self, X: Tensor, Y: Tensor, transpose: bool = False) -> Tensor:
        """mean_d ||X R_d Y||_F^2 (or with R_d^T = R_{-d}) for X (..., a, hs), Y (..., hs, b)."""
        XP = X @ self.P
        H = Y @ Y.transpose(-1, -2)  # (..., hs, hs)
        sign = -1.0 if transpose else 1.0  # R_d^T = diag(c) - P diag(s): sin flips sign
        G = self.cc * (X.transpose(-1, -2) @ X) + 2 * sign * self.cs * (X.transpose(-1, -2) @ XP)
        G = G + self.ss * (XP.transpose(-1, -2) @ XP)
        return (G * H).sum(dim=(-2, -1))


def _sq(X: Tensor) -> Tensor:
    return X.pow(2).sum(dim=(-2, -1))


def composition_scores(weights: list[LayerWeights], offsets: _Offsets | None = None) -> dict[str, Tensor]:
    """`{kind: (L, H, L, H)}` Q-, K- and V-composition of head (la, ha) into (lb, hb); NaN unless la < lb."""
    L, H = len(weights), weights[0].W_Q.shape[0]
    f = {}
    for l, w in enumerate(weights):  # the (hs, hs) factors of every head
        f[l] = {
            "RQ": _r(w.W_Q),
            "RK": _r(w.W_K),
            "RV": _r(w.W_V),
            "RO": _r(w.W_O.transpose(1, 2)),  # W_O^T = Q R_O, so W_O = R_O^T Q^T
            "Q": w.W_Q.double(),
            "K": w.W_K.double(),
            "V": w.W_V.double(),
            "O": w.W_O.double(),
        }
    for l in f:
        f[l]["ov"] = _sq(f[l]["RV"] @ f[l]["RO"].transpose(1, 2)).sqrt()  # (H,) ||OV||
        RQ, RK = f[l]["RQ"], f[l]["RK"]
        qk = _sq(RQ @ RK.transpose(1, 2)) if offsets is None else offsets.sq_norm(RQ, RK.transpose(1, 2))
        f[l]["qk"] = qk.sqrt()  # (H,) ||QK|| (RMS over offsets for RoPE)
    out = {k: torch.full((L, H, L, H), float("nan"), dtype=torch.float64) for k in KINDS}
    for la in range(L):
        a = f[la]
        left = a["RV"][:, None]  # (H, 1, hs, hs): ||R_V (W_O ...)|| = ||W_V W_O ...||
        for lb in range(la + 1, L):
            b = f[lb]
            OQ = a["O"][:, None] @ b["Q"][None]  # (Ha, Hb, hs, hs): W_O^a W_Q^b
            OK = a["O"][:, None] @ b["K"][None]
            OV = a["O"][:, None] @ b["V"][None]
            RKt, RQt = b["RK"].transpose(1, 2)[None], b["RQ"].transpose(1, 2)[None]
            if offsets is None:
                q2 = _sq(left @ OQ @ RKt)  # ||OV_a QK_b||^2 = ||R_V (W_O W_Q) R_K^T||^2
                k2 = _sq(left @ OK @ RQt)  # ||OV_a QK_b^T||^2 = ||R_V (W_O W_K) R_Q^T||^2
            else:
                q2 = offsets.sq_norm(left @ OQ, RKt)
                k2 = offsets.sq_norm(left @ OK, RQt, transpose=True)
            v2 = _sq(left @ OV @ b["RO"].transpose(1, 2)[None])
            ov_a = a["ov"][:, None]
            out["Q"][la, :, lb] = q2.sqrt() / (ov_a * b["qk"][None])
            out["K"][la, :, lb] = k2.sqrt() / (ov_a * b["qk"][None])
            out["V"][la, :, lb] = v2.sqrt() / (ov_a * b["ov"][None])
    return out


def offsets_for(model) -> _Offsets | None:
    """The RoPE offset averages for `model`, or None when its QK circuit does not depend on the offset."""
    if isinstance(model.pos, RotaryPosition):
        cfg = model.config
        return _Offsets(model.pos, min(cfg.block_size, cfg.window or cfg.block_size))  # offsets a query sees
    return None


def random_baseline(model, draws: int = BASELINE_DRAWS, seed: int = 0) -> dict[str, float]:
    """Mean composition score of Gaussian matrices shaped like `model`'s heads: `{kind: score}`."""
    cfg = model.config
    H, C, hs = cfg.n_head, cfg.n_embd, cfg.head_dim
    g = torch.Generator().manual_seed(seed)
    offsets = offsets_for(model)
    sums = {k: 0.0 for k in KINDS}
    for _ in range(draws):
        ws = [
            LayerWeights(*(torch.randn(H, *s, generator=g) for s in ((C, hs), (C, hs), (C, hs), (hs, C))))
            for _ in range(2)
        ]
        sc = composition_scores(ws, offsets)
        for k in KINDS:
            sums[k] += float(sc[k][0, :, 1].mean())
    return {k: v / draws for k, v in sums.items()}


def composition_rows(scores: dict[str, Tensor]) -> list[dict]:
    """composition.csv rows: layer_a, head_a, layer_b, head_b, kind, score (every pair with layer_a < layer_b)."""
    rows = []
    for kind in KINDS:
        s = scores[kind]
        L, H = s.shape[:2]
        for la in range(L):
            for ha in range(H):
                for lb in range(la + 1, L):
                    for hb in range(H):
                        rows.append(
                            {
                                "layer_a": la,
                                "head_a": ha,
                                "layer_b": lb,
                                "head_b": hb,
                                "kind": kind,
                                "score": round(float(s[la, ha, lb, hb]), 5),
                            }
                        )
    return rows


# ------------------------------------------------------------------------------------------ copying
@torch.no_grad()
def ov_eigenvalues(model, weights: list[LayerWeights] | None = None) -> Tensor:
    """`(L, H, hs)` complex: the nonzero eigenvalues of each head's full OV circuit (token -> logit)."""
    weights = weights or layer_weights(model)
    W_U = _fold(model.ln_f, model.lm_head.weight.detach().float().cpu().T)  # (C, V), ln_f folded
    # (C, C): W_U E, one (C, V, C) product
    core = (W_U @ model.tok_emb.weight.detach().float().cpu()).double()
    out = []
    for w in weights:
        small = w.W_O.double() @ core @ w.W_V.double()  # (H, hs, hs): W_O (W_U E) W_V
        out.append(torch.linalg.eigvals(small))
    return torch.stack(out)


def copying_scores(eig: Tensor) -> dict[str, Tensor]:
    """`{"copying": share of Re > 0, "copying_ratio": sum(lambda) / sum |lambda|}`, each (L, H)."""
    return {
        "copying": (eig.real > 0).double().mean(-1),
        "copying_ratio": eig.sum(-1).real / eig.abs().sum(-1),
    }


# ------------------------------------------------------------------------------------------ logit attribution
@dataclass
class Attribution:
    """Direct logit attribution of one sequence to its correct next tokens."""

    heads: Tensor  # (T-1, L, H): each head's contribution at each position
    embed: Tensor  # (T-1,): token (+ absolute position) embeddings
    mlp: Tensor  # (T-1, L): each MLP (zeros without MLPs)
    bias: Tensor  # (T-1,): o_proj biases and ln_f's bias term
    logit: Tensor  # (T-1,): the logit they sum to (centred if center=True)


def _final_scale(model, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """ln_f frozen on residual x (..., C): per-token factor 1/sigma (..., 1) and the mean to remove (or None)."""
    norm = model.ln_f
    xf = x.float()
    if isinstance(norm, nn.LayerNorm):
        mu = xf.mean(-1, keepdim=True)
        var = (xf - mu).pow(2).mean(-1, keepdim=True)
        return torch.rsqrt(var + norm.eps), mu
    return torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps), None


def _head_outputs(model, z: Tensor, l: int) -> Tensor:
    """Each head's write into the residual, (..., T, nh, hs) -> (..., T, nh, C) (o_proj bias left out)."""
    a = model.blocks[l].attn
    nh, hs = a.n_head, a.head_dim
    Wo = a.o_proj.weight.float().view(-1, nh, hs)  # (C, nh, hs)
    return torch.einsum("...nh,cnh->...nc", z.float(), Wo)


def dla_hook_names(model) -> list[str]:
    """The hook points :func:`attribution_from_cache` reads."""
    L = model.config.n_layer
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)] + ["blocks.0.hook_resid_pre"]
    names += [f"blocks.{l}.hook_mlp_out" for l in range(L) if model.blocks[l].mlp is not None]
    return names + [f"blocks.{L - 1}.hook_resid_post"]


@torch.no_grad()
def attribution_from_cache(
    model, logits: Tensor, cache: dict, positions: Tensor, targets: Tensor, center: bool = True
) -> Attribution:
    """DLA at `positions (n,)` of batch row 0 to the logits of `targets (n,)`, from a run_with_cache result.

    `cache` holds at least :func:`dla_hook_names`; ln_f's scale is frozen at its value on the full residual.
    """
    L = model.config.n_layer
    W_U = model.lm_head.weight.float()  # (V, C)
    w = W_U[targets]  # (n, C)
    if center:
        w = w - W_U.mean(0)
    g = model.ln_f.weight.float()
    inv, mu = _final_scale(model, cache[f"blocks.{L - 1}.hook_resid_post"][0, positions])  # (n, 1)
    centre = mu is not None
    n = targets.shape[0]

    def contrib(c: Tensor) -> Tensor:  # c (n, ..., C) -> (n, ...)
        c = c.float()
        if centre:
            c = c - c.mean(-1, keepdim=True)
        scale = inv.view(-1, *([1] * (c.dim() - 1)))
        return torch.einsum("t...c,tc->t...", c * scale * g, w)

    heads = torch.stack(
        [contrib(_head_outputs(model, cache[f"blocks.{l}.attn.hook_z"][0, positions], l)) for l in range(L)],
        1,
    )  # (n, L, H)
    embed = contrib(cache["blocks.0.hook_resid_pre"][0, positions])
    mlp = torch.zeros(n, L)
    bias = torch.zeros(n, device=w.device)
    for l, block in enumerate(model.blocks):
        if block.mlp is not None:
            mlp[:, l] = contrib(cache[f"blocks.{l}.hook_mlp_out"][0, positions]).cpu()
        if block.attn.o_proj.bias is not None:
            bias += contrib(block.attn.o_proj.bias.float().expand(n, -1))
    if getattr(model.ln_f, "bias", None) is not None:
        bias += w @ model.ln_f.bias.float()
    lg = logits[0, positions].float()  # (n, V)
    if model.config.logit_softcap is not None:  # the contributions sum to the logit before the cap
        lg = model.lm_head(model.ln_f(cache[f"blocks.{L - 1}.hook_resid_post"][0, positions])).float()
    logit = lg.gather(-1, targets[:, None])[:, 0]
    if center:
        logit = logit - lg.mean(-1)
    return Attribution(heads.cpu(), embed.cpu(), mlp, bias.cpu(), logit.cpu())


@torch.no_grad()
def direct_logit_attribution(
    model, ids: Tensor, targets: Tensor | None = None, center: bool = True, ablate=()
) -> Attribution:
    """DLA of `ids (T,)` to `targets (T-1,)` (default: the next tokens ids[1:]), with ln_f's scale frozen.

    `ablate`: (layer, head) pairs zero-ablated at hook_z for the whole forward (their contribution is then 0).
    """
    with model.hooks(ablation_hooks(ablate)):
        logits, cache = model.run_with_cache(ids[None], names=dla_hook_names(model))
    tgt = ids[1:] if targets is None else targets  # (T-1,)
    positions = torch.arange(tgt.shape[0], device=ids.device)
    return attribution_from_cache(model, logits, cache, positions, tgt, center)


def lens_hook_names(model) -> list[str]:
    """The hook points :func:`logit_lens_from_cache` reads: the residual before layer 0 and after each layer."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.config.n_layer)]


@torch.no_grad()
def logit_lens_from_cache(model, cache: dict, ids: Tensor) -> list[dict]:
    """Per layer (`"embed"`, 0..L-1): loss, mean rank (1 = top) and top-1 accuracy of the next tokens ids[1:]."""
    tgt = ids[1:]
    n = tgt.shape[0]
    rows = []
    for label, name in zip(["embed", *range(model.config.n_layer)], lens_hook_names(model)):
        logits = model.unembed(model.ln_f(cache[name][0, :n])).float()  # (T-1, V)
        correct = logits.gather(-1, tgt[:, None])
        rank = (logits > correct).sum(-1).double() + 1  # (T-1,)
        rows.append(
            {
                "layer": label,
                "loss": round(float(F.cross_entropy(logits, tgt)), 5),
                "rank": round(float(rank.mean()), 3),
                "top1": round(float((rank == 1).double().mean()), 4),
            }
        )
    return rows


@torch.no_grad()
def attribution_and_lens(model, ids: Tensor) -> tuple[Attribution, list[dict]]:
    """Both of one text from one forward: :func:`direct_logit_attribution` of `ids (T,)` to its next tokens
    (centred) and its :func:`logit_lens`."""
    names = list(dict.fromkeys(dla_hook_names(model) + lens_hook_names(model)))
    logits, cache = model.run_with_cache(ids[None], names=names)
    tgt = ids[1:]
    positions = torch.arange(tgt.shape[0], device=ids.device)
    return attribution_from_cache(model, logits, cache, positions, tgt), logit_lens_from_cache(
        model, cache, ids
    )


@torch.no_grad()
def logit_lens(model, ids: Tensor) -> list[dict]:
    """The logit lens of `ids (T,)`: see :func:`logit_lens_from_cache`."""
    _, cache = model.run_with_cache(ids[None], names=lens_hook_names(model))
    return logit_lens_from_cache(model, cache, ids)


__all__ = [
    "BASELINE_DRAWS",
    "KINDS",
    "Attribution",
    "LayerWeights",
    "attribution_and_lens",
    "attribution_from_cache",
    "composition_rows",
    "composition_scores",
    "copying_scores",
    "direct_logit_attribution",
    "dla_hook_names",
    "layer_weights",
    "lens_hook_names",
    "logit_lens",
    "logit_lens_from_cache",
    "offsets_for",
    "ov_eigenvalues",
    "random_baseline",
]
