"""compare.html: two models' heads on the same text, one self-contained page (inline CSS/JS/data, no network).

The page is web code, gptlab/interp/web/compare.html with its .css/.js (and compare_common.*, shared with the live
comparison viewer), inlined by gptlab/interp/page_common.py; this module makes the JSON it reads.

Patterns travel as in heads.html (each head's lower triangle, uint16, base64; gptlab/interp/page_common.py). The page
shows the text's tokens (hover a query, click to pin); a pair of heads, A's and B's (B defaults to the head
matched to A's), drawn side by side with their difference B - A (red: B attends more, blue: A attends more);
the query's row in both heads and its difference as numbers; the matched pairs with their similarity and
every metric's delta; the similarity of every pair of heads that could be matched (the matched ones
outlined); and thumbnails of both models' heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptlab.rundir.files import atomic_write

from .html import encode_pattern, token_label
from .page_common import render
from .pairing import matching_line


def _finite(a, digits: int = 4) -> list:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(a, float).reshape(-1)]


def _side(s) -> dict:
    rep = s.report
    L, H = rep.patterns.shape[:2]
    return {
        "name": s.name,
        "info": s.info,
        "n_layer": L,
        "n_head": H,
        "n_kv_head": rep.n_kv_head or H,
        "patterns": [encode_pattern(rep.patterns[l, h]) for l in range(L) for h in range(H)],
        "rows": rep.rows,
    }


def compare_page_data(
    a,
    b,
    matching,
    rows: list[dict],
    *,
    title: str,
    text_info: str,
    scores: dict,
    metric_names: list[str],
    layer: int = 0,
    head: int = 0,
) -> dict:
    """The JSON object compare.html reads (`a`, `b`: interp.compare_report.Side; `rows`: compare_rows)."""
    T = a.report.patterns.shape[-1]
    if b.report.patterns.shape[-1] != T:
        raise ValueError("the two reports are not on the same text")

    La, Ha = a.report.patterns.shape[:2]
    Lb, Hb = b.report.patterns.shape[:2]
    return {
        "title": title,
        "text_info": text_info,
        "tokens": [token_label(t) for t in a.report.tokens],
        "T": T,
        "sides": [_side(a), _side(b)],
        "method": matching.method,
        "matching_line": matching_line(matching, La * Ha, Lb * Hb),
        "pairs": [list(p[:4]) + [round(p[4], 5)] for p in matching.pairs],
        "unmatched_a": [list(k) for k in matching.unmatched_a],
        "unmatched_b": [list(k) for k in matching.unmatched_b],
        "groups": [[list(ga), list(gb)] for ga, gb in matching.groups],
        "similarity": _finite(matching.similarity) if matching.similarity is not None else None,
        "metric_names": metric_names,
        "rows": rows,
        "scores": scores,
        "initial": {"layer": layer, "head": head},
    }


def write_compare_html(path: str | Path, data: dict) -> Path:
    """Write the page for `data` (:func:`compare_page_data`) to `path`."""
    return atomic_write(path, render("compare.html", str(data.get("title", "compare")), data=data))
