"""heads.html: one self-contained page (inline CSS/JS, data embedded as JSON, no network) to browse heads.

The attention patterns of the chosen text are stored as the lower triangle of each head's `(T, T)` matrix,
quantised (gptlab/interp/pattern_codec.py: uint16 up to 512 tokens, error < 1e-5; uint8 per row past that) and
base64-encoded, so 12 x 12 heads at 256 tokens is about 12 MB, with a 64 x 64 thumbnail of each head. The
page draws the matrices on `<canvas>`: the thumbnails from those, the large view only the cells in its
window (zoom with the wheel); the token strip and the weights tables put only their visible rows in the DOM,
so a 2,048-token text stays responsive. The code is gptlab/interp/web/heads.html with its CSS and JS.

What the page shows: the text as tokens; a layer and head picker (or all heads of a layer overlaid in
colours); hover or click a query token to see its attention over every earlier token (colours on the
tokens, a bar chart, and a weights table whose cells carry `data-w` with the numbers shown); a thumbnail
grid of all layers x heads; the metric table; which query heads share a KV head under GQA/MQA; and the
circuits: a Q/K/V composition matrix (writing heads x reading heads, against the random baseline) with the
strongest partners of the selected head, and the logit lens. With a timeline (a run with snapshots), a
slider over the kept steps redraws the patterns and the metric table for that step's model, beside small
multiples of the metrics over training with the phase windows shaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptlab.rundir.files import atomic_write

from .page_common import render
from .pattern_codec import decode, encode, encode_pattern, encoding_for, thumbnails

__all__ = ["decode_pattern", "encode_pattern", "page_data", "token_label", "token_texts", "write_html"]


def decode_pattern(data: str, T: int, encoding: str = "u16") -> np.ndarray:
    """A pattern of the page back as `(T, T)` (gptlab/interp/pattern_codec.py; used by tests)."""
    return decode(data, T, encoding)


def token_texts(tokenizer, ids) -> list[str]:
    """Each token of ``ids`` decoded on its own, as the pages and plots show it (``ids`` tokenizer: a space
    after each integer, so they stay apart)."""
    texts = [tokenizer.decode([int(i)]) for i in ids]
    return [t + " " for t in texts] if tokenizer.name == "ids" else texts


def token_label(tok: str) -> str:
    """Make whitespace visible in a token label: newline as the return symbol, tab as an arrow."""
    return tok.replace("\n", "\u21b5").replace("\t", "\u2192").replace("\r", "")


def _finite_or_none(a: np.ndarray, digits: int = 4) -> list:
    """A flat list of `a`'s values rounded, NaN as None (JSON null)."""
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(a).reshape(-1)]


def page_data(
    tokens: list[str],
    patterns: np.ndarray,
    rows: list[dict],
    *,
    n_kv_head: int | None = None,
    title: str = "heads",
    info: dict | None = None,
    layer: int = 0,
    head: int = 0,
    circuits: dict | None = None,
    timeline: dict | None = None,
) -> dict:
    """The JSON object the page reads. `patterns` is `(n_layer, n_head, T, T)`; `rows` the metric rows.

    `circuits` (optional): `{"composition": {kind: (L*H, L*H)}, "baseline": {kind: float}, "logit_lens": rows}`.
    `timeline` (optional, gptlab/interp/timeline.py): `{"steps", "patterns", "rows", "series", "phases",
    "report_step", "report_name"}`: the slider over kept steps and the small multiples.
    """
    L, H, T, T2 = patterns.shape
    if T != T2 or T != len(tokens):
        raise ValueError(f"patterns {patterns.shape} do not match {len(tokens)} tokens")
    metric_names = [k for k in (rows[0] if rows else {}) if k not in ("layer", "head", "kv_head", "kind")]
    enc = encoding_for(T)
    return {
        "title": title,
        "tokens": [token_label(t) for t in tokens],
        "n_layer": L,
        "n_head": H,
        "n_kv_head": n_kv_head or H,
        "T": T,
        "info": info or {},
        "metric_names": metric_names,
        "rows": rows,
        "encoding": enc,
        "patterns": [encode(patterns[l, h], enc) for l in range(L) for h in range(H)],
        "thumbs": thumbnails(patterns),
        "initial": {"layer": layer, "head": head},
        "circuits": {
            "composition": {
                k: _finite_or_none(v) for k, v in (circuits or {}).get("composition", {}).items()
            },
            "baseline": (circuits or {}).get("baseline", {}),
            "logit_lens": (circuits or {}).get("logit_lens", []),
        },
        "timeline": timeline,
    }


def write_html(path: str | Path, data: dict) -> Path:
    """Write the self-contained page for `data` (from :func:`page_data`) to `path` (gptlab/interp/web/heads.html with
    its style and scripts inlined)."""
    return atomic_write(path, render("heads.html", str(data.get("title", "heads")), data=data))
