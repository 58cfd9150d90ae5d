"""The page's timeline: the text's attention patterns and the per-head metrics at every kept step of a run.

heads.py hands `measure_steps` the models of a run's snapshots (train.snapshots) one at a time; the page
(gptlab/interp/html.py) gets a slider over those steps that redraws the patterns and the metric table, and small
multiples of the metrics over training (from metrics.jsonl's heads rows, else from the snapshots) with the
phase windows of gptlab/interp/phases.py shaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from . import metrics as M
from .head_report import classify
from .pattern_codec import encode, encoded_bytes, encoding_for, thumbnails
from .tracking import head_metric_tables, mean_k_composition, tables_to_rows

MAX_PAGE_BYTES = 40_000_000  # the timeline's patterns never make heads.html larger than this
SERIES = ("induction", "prev_token", "k_composition")


def pattern_bytes(n_layer: int, n_head: int, T: int) -> int:
    """The size of one step's patterns in the page: base64 of each head's lower triangle in the page's encoding
    (gptlab/interp/pattern_codec.py; the thumbnails, 5.5 KB a head, are not counted)."""
    return encoded_bytes(n_layer * n_head, T, encoding_for(T))


def pick_steps(kept: list[int], per_step: int, budget: int = MAX_PAGE_BYTES) -> tuple[list[int], str | None]:
    """The kept steps whose patterns fit ``budget`` bytes: all, or evenly spread ones with the first and the
    last; and a note when some were left out."""
    fit = budget // max(per_step, 1)
    if len(kept) <= fit:
        return list(kept), None
    if fit < 2:
        return [], (
            f"timeline: one step's patterns take {per_step / 1e6:.1f} MB; none drawn (the page stays under "
            f"{budget / 1e6:.0f} MB): pass a shorter text (max_tokens=)"
        )
    idx = np.unique(np.round(np.linspace(0, len(kept) - 1, fit)).astype(int))
    picked = [kept[i] for i in idx]
    return picked, (
        f"timeline: {len(picked)} of the {len(kept)} kept steps drawn (the page stays under {budget / 1e6:.0f} MB)"
    )


@torch.no_grad()
def measure_steps(
    models: Iterable[tuple[int, torch.nn.Module]],
    text_ids: torch.Tensor,
    probe: torch.Tensor,
    metric_x: torch.Tensor | None = None,
) -> dict:
    """`{"steps", "patterns": [[b64 per head] per step], "thumbs": [[b64 per head] per step], "rows": [[metric
    rows] per step]}` for the models; the patterns in the page's encoding for this text's length."""
    out = {"steps": [], "patterns": [], "thumbs": [], "rows": []}
    enc = encoding_for(int(text_ids.shape[-1]))
    for step, model in models:
        model.eval()
        pats = model.attention_patterns(text_ids[None])[:, 0].float().cpu().numpy()  # (L, H, T, T)
        x = metric_x if metric_x is not None else text_ids[None]
        rows = tables_to_rows({k: v.cpu() for k, v in head_metric_tables(model, probe, x).items()})
        kc = mean_k_composition(model)
        cfg = model.config
        for r in rows:
            v = float("nan") if kc is None else float(kc[r["layer"], r["head"]])
            if v == v:
                r["k_composition"] = round(v, 4)
            r["kv_head"] = M.kv_head_of(r["head"], cfg.n_head, cfg.kv_heads)
            r["kind"] = classify(r)
        L, H = pats.shape[:2]
        out["steps"].append(int(step))
        out["patterns"].append([encode(pats[l, h], enc) for l in range(L) for h in range(H)])
        out["thumbs"].append(thumbnails(pats))
        out["rows"].append(rows)
    return out


def _flat(rows: list[dict], metric: str, L: int, H: int) -> list:
    vals: list = [None] * (L * H)
    for r in rows:
        v = r.get(metric)
        if isinstance(v, int | float) and v == v:
            vals[r["layer"] * H + r["head"]] = round(float(v), 4)
    return vals


def series(metric_rows: list[dict], timeline: dict, n_layer: int, n_head: int) -> dict:
    """The small multiples' data: per-head metrics over the steps of metrics.jsonl's heads rows (else of the
    snapshots), the ICL score, the val loss: `{"source", "steps", "metrics": {m: [[per head] per step]},
    "icl_score": [...], "val_loss": {"steps", "values"}}`."""
    heads = sorted(
        (r for r in metric_rows if r.get("kind") == "heads" and r.get("heads")), key=lambda r: r["step"]
    )
    if heads:
        steps, per_step, source = [r["step"] for r in heads], [r["heads"] for r in heads], "metrics.jsonl"
    else:
        steps, per_step, source = timeline["steps"], timeline["rows"], "snapshots"
    ev = sorted(
        (r for r in metric_rows if r.get("kind") == "eval" and "val_loss" in r), key=lambda r: r["step"]
    )
    return {
        "source": source,
        "steps": steps,
        "metrics": {m: [_flat(rows, m, n_layer, n_head) for rows in per_step] for m in SERIES},
        "icl_score": [r.get("icl_score") for r in heads],
        "val_loss": {"steps": [r["step"] for r in ev], "values": [round(r["val_loss"], 4) for r in ev]},
    }
