"""The head report: every metric for every head of a model, the files heads.py writes, the terminal summary.

`analyse(...)` measures (patterns, metrics, ablations, and the circuits of gptlab/interp/circuits.py);
`write_report(...)` writes heads.csv, heads.json, composition.csv, one heatmap PNG per metric, the pattern grid
PNG, one large head PNG, composition.png, logit_lens.png and heads.html; `summary_lines(...)` gives the top
heads per kind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gptlab.rundir.files import atomic_write

from . import circuits as CI
from . import metrics as M
from . import plots
from .ablation import ablation_importance
from .html import page_data, write_html
from .tracking import head_metric_tables, token_losses


@dataclass
class HeadReport:
    """Everything measured about one model's heads."""

    tables: dict[str, np.ndarray]  # metric -> (n_layer, n_head)
    rows: list[dict]  # one per head: layer, head, kv_head, kind, metrics
    patterns: np.ndarray  # (n_layer, n_head, T, T) on the chosen text
    tokens: list[str]  # the chosen text, one string per token
    n_kv_head: int
    model_scores: dict = field(default_factory=dict)  # icl_score, val_loss, ...
    timings: dict = field(default_factory=dict)  # seconds per stage
    notes: list[str] = field(default_factory=list)  # what was skipped and why
    composition: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (L, H, L, H); {} for 1 layer
    composition_baseline: dict[str, float] = field(default_factory=dict)  # kind -> random-matrix score
    logit_lens: list[dict] = field(default_factory=list)  # per layer: loss, rank, top1 on the text
    dla_parts: dict = field(default_factory=dict)  # mean logit and the non-head components on the text


def classify(row: dict) -> str:
    """The kind of a head from its scores (thresholds in M.KIND_RULES; 'mixed' if none passes)."""
    for kind, metric, threshold in M.KIND_RULES:
        v = row.get(metric)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v >= threshold:
            return kind
    return "mixed"


@torch.no_grad()
def analyse(
    model,
    text_ids: torch.Tensor,
    tokens: list[str],
    probe: torch.Tensor,
    metric_x: torch.Tensor | None = None,
    eval_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ablation_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> HeadReport:
    """Measure every head of `model`.

    text_ids (T,): the text drawn in the pattern grid and page. probe (B, T'): repeated random tokens.
    metric_x (B, T''): sequences for the content-independent metrics (default: the text). eval_batches:
    val (x, y) batches at the block size for the ICL score; ablation_batches: val batches for ablations.
    """
    model.eval()
    timings, notes, scores = {}, [], {}
    cfg = model.config
    t0 = time.perf_counter()
    x = metric_x if metric_x is not None else text_ids[None]
    tables = {k: v.cpu().numpy() for k, v in head_metric_tables(model, probe, x).items()}
    pats = model.attention_patterns(text_ids[None])[:, 0].float().cpu().numpy()  # (L, H, T, T)
    timings["patterns_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if eval_batches:
        losses = token_losses(model, eval_batches)
        scores["val_loss"] = float(losses.mean())
        if losses.shape[1] >= 8:
            early, late = M.icl_positions(losses.shape[1])
            scores["icl_score"] = M.icl_score(losses)
            scores["icl_positions"] = [early, late]
            scores["icl_tokens"] = int(losses.shape[0])
    else:
        notes.append("no val data: ICL score skipped")
    timings["icl_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if ablation_batches:
        res = ablation_importance(model, ablation_batches)
        tables["zero_ablation"] = res["zero"].numpy()
        tables["mean_ablation"] = res["mean"].numpy()
        scores["ablation_clean_loss"] = float(res["clean"])
        scores["ablation_tokens"] = int(sum(xb.numel() for xb, _ in ablation_batches))
    else:
        notes.append("no val data or ablation disabled: ablation importance skipped")
    timings["ablation_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    circ = circuits(model, text_ids)
    tables.update(circ.pop("tables"))
    notes.extend(circ.pop("notes"))
    timings["circuits_s"] = time.perf_counter() - t0

    M.check_registered(tables)
    L, H = cfg.n_layer, cfg.n_head
    n_kv = cfg.kv_heads
    rows = []
    for l in range(L):
        for h in range(H):
            row = {"layer": l, "head": h, "kv_head": M.kv_head_of(h, H, n_kv)}
            for name in M.METRIC_NAMES:
                if name in tables:
                    v = float(tables[name][l, h])
                    row[name] = None if math.isnan(v) else round(v, 5)
            row["kind"] = classify(row)
            rows.append(row)
    return HeadReport(tables, rows, pats, tokens, n_kv, scores, timings, notes, **circ)


@torch.no_grad()
def circuits(model, text_ids: torch.Tensor) -> dict:
    """Composition scores and their baseline, copying scores, DLA and the logit lens on `text_ids (T,)`.

    Returns `{"tables": {metric: (L, H)}, "notes": [...], "composition", "composition_baseline",
    "logit_lens", "dla_parts"}` (the last four are HeadReport fields).
    """
    notes = []
    weights = CI.layer_weights(model)
    comp, base = {}, {}
    if len(weights) > 1:
        comp = {k: v.numpy() for k, v in CI.composition_scores(weights, CI.offsets_for(model)).items()}
        base = CI.random_baseline(model)
    else:
        notes.append("one layer: no pairs of heads in different layers, so no composition scores")
    tables = {k: v.numpy() for k, v in CI.copying_scores(CI.ov_eigenvalues(model, weights)).items()}
    att, lens = CI.attribution_and_lens(model, text_ids)  # one forward for both
    mean_logit = float(att.logit.mean())
    tables["dla"] = att.heads.mean(0).double().numpy()
    if mean_logit > 0:
        tables["dla_share"] = tables["dla"] / mean_logit
    else:
        tables["dla_share"] = np.full_like(tables["dla"], np.nan)
        notes.append(
            f"the correct next token's centred logit averages {mean_logit:.3f} <= 0 on the text: dla_share left out"
        )
    parts = {
        "mean_logit": round(mean_logit, 5),
        "embed": round(float(att.embed.mean()), 5),
        "mlp": [round(float(v), 5) for v in att.mlp.mean(0)],
        "bias": round(float(att.bias.mean()), 5),
        "heads_total": round(float(att.heads.sum((1, 2)).mean()), 5),
    }
    return {
        "tables": tables,
        "notes": notes,
        "composition": comp,
        "composition_baseline": base,
        "logit_lens": lens,
        "dla_parts": parts,
    }


def top_compositions(rep: HeadReport, kind: str, top: int = 3) -> list[tuple[int, int, int, int, float]]:
    """The `top` (layer_a, head_a, layer_b, head_b, score) pairs of one composition kind, highest first."""
    s = rep.composition[kind]
    flat = np.nan_to_num(s, nan=-np.inf).reshape(-1)
    order = np.argsort(-flat)[:top]
    return [(*map(int, np.unravel_index(i, s.shape)), float(flat[i])) for i in order]


def summary_lines(rep: HeadReport, top: int = 3) -> list[str]:
    """The terminal summary: for each kind, the `top` heads with the highest score on its metric."""
    lines = []
    for kind, metric, threshold in M.KIND_RULES:
        if metric not in rep.tables:
            continue
        t = np.nan_to_num(rep.tables[metric], nan=-np.inf)
        order = np.dstack(np.unravel_index(np.argsort(-t, axis=None), t.shape))[0][:top]
        items = [f"L{l}H{h} {rep.tables[metric][l, h]:.2f}" for l, h in order]
        n = int((rep.tables[metric] >= threshold).sum())
        lines.append(f"{kind:<17} ({metric} >= {threshold}: {n} heads)  top: " + ", ".join(items))
    if "zero_ablation" in rep.tables:
        t = rep.tables["zero_ablation"]
        order = np.dstack(np.unravel_index(np.argsort(-t, axis=None), t.shape))[0][:top]
        lines.append(
            "most important     (val loss rise, zero-ablated)  top: "
            + ", ".join(f"L{l}H{h} {t[l, h]:+.3f}" for l, h in order)
        )
    for kind in rep.composition:
        items = [f"L{a}H{b}->L{c}H{d} {v:.2f}" for a, b, c, d, v in top_compositions(rep, kind, top)]
        lines.append(
            f"{kind}-composition      (random {rep.composition_baseline[kind]:.2f})  top: " + ", ".join(items)
        )
    for name, label in (
        ("copying", "OV copying       (share of eigenvalues Re > 0)"),
        ("dla", "direct logit attr (mean on the text)"),
    ):
        t = rep.tables[name]
        order = np.dstack(np.unravel_index(np.argsort(-t, axis=None), t.shape))[0][:top]
        lines.append(f"{label}  top: " + ", ".join(f"L{l}H{h} {t[l, h]:+.2f}" for l, h in order))
    if rep.logit_lens:
        lines.append(
            "logit lens (loss of the next token): "
            + ", ".join(
                f"{'embed' if r['layer'] == 'embed' else 'L' + str(r['layer'])} {r['loss']:.2f}"
                for r in rep.logit_lens
            )
        )
    if "icl_score" in rep.model_scores:
        e, la = rep.model_scores["icl_positions"]
        lines.append(
            f"in-context learning score: {rep.model_scores['icl_score']:+.3f} "
            f"(loss at token {la} minus at token {e}; negative = the context helps)"
        )
    return lines


def write_report(
    rep: HeadReport,
    out: Path,
    *,
    title: str,
    info: dict,
    layer: int = 0,
    head: int = 0,
    timeline: dict | None = None,
) -> dict:
    """Write every file into `out`; returns `{what: path}`."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    t0 = time.perf_counter()
    cols = ["layer", "head", "kv_head", "kind"] + [m for m in M.METRIC_NAMES if m in rep.tables]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rep.rows)
    files["csv"] = atomic_write(out / "heads.csv", buf.getvalue())
    if rep.composition:
        comp_rows = CI.composition_rows({k: torch.from_numpy(v) for k, v in rep.composition.items()})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(comp_rows[0]))
        w.writeheader()
        w.writerows(comp_rows)
        files["composition"] = atomic_write(out / "composition.csv", buf.getvalue())
    doc = {
        "title": title,
        "info": info,
        "model_scores": rep.model_scores,
        "heads": rep.rows,
        "text_tokens": rep.tokens,
        "kind_rules": [{"kind": k, "metric": m, "threshold": t} for k, m, t in M.KIND_RULES],
        "composition_baseline": rep.composition_baseline,
        "composition_top": {
            k: [
                dict(zip(("layer_a", "head_a", "layer_b", "head_b", "score"), (*t[:4], round(t[4], 5))))
                for t in top_compositions(rep, k, 10)
            ]
            for k in rep.composition
        },
        "logit_lens": rep.logit_lens,
        "dla_parts": rep.dla_parts,
        "notes": rep.notes,
    }
    files["json"] = atomic_write(out / "heads.json", json.dumps(doc, indent=1))
    L, H = rep.patterns.shape[:2]
    kv_of = [M.kv_head_of(h, H, rep.n_kv_head) for h in range(H)] if rep.n_kv_head < H else None
    for name in M.METRIC_NAMES:
        if name in rep.tables:
            files[f"heatmap_{name}"] = plots.metric_heatmap(
                rep.tables[name], name, out / f"heatmap_{name}.png", kv_of
            )
    files["grid"] = plots.pattern_grid(rep.patterns, rep.tokens, out / "patterns_grid.png", kv_of)
    files["head"] = plots.head_pattern(
        rep.patterns[layer, head],
        rep.tokens,
        out / f"pattern_L{layer}H{head}.png",
        f"layer {layer} head {head}",
    )
    if rep.composition:
        files["composition_png"] = plots.composition_matrices(
            rep.composition, rep.composition_baseline, out / "composition.png"
        )
    files["logit_lens_png"] = plots.logit_lens(rep.logit_lens, out / "logit_lens.png")
    rep.timings["png_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page_info = {
        **info,
        **{
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in rep.model_scores.items()
            if k in ("icl_score", "val_loss")
        },
    }
    data = page_data(
        rep.tokens,
        rep.patterns,
        rep.rows,
        n_kv_head=rep.n_kv_head,
        title=title,
        info=page_info,
        layer=layer,
        head=head,
        circuits={
            "composition": {k: v.reshape(L * H, L * H) for k, v in rep.composition.items()},
            "baseline": rep.composition_baseline,
            "logit_lens": rep.logit_lens,
        },
        timeline=timeline,
    )
    files["html"] = write_html(out / "heads.html", data)
    rep.timings["html_s"] = time.perf_counter() - t0
    return files
