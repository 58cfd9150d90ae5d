"""Two head reports side by side (heads.py compare=): the matched heads, the metric deltas, compare.csv/.md.

The two reports are measured on the same tokens (gptlab/interp/head_report.py's ``analyse`` on each model); the heads are
paired by gptlab/interp/pairing.py. :func:`compare_rows` gives one row per pair (and per head left without a
partner) with every registry metric of both heads and its delta, B minus A; :func:`write_compare` writes
compare.csv, compare.md and compare.html (gptlab/interp/compare_page.py); :func:`summary_lines` is what heads.py
prints. Formats are documented in docs/heads.md ("Comparing two models or two steps").
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptlab.rundir.files import atomic_write

from . import metrics as M
from .compare_page import compare_page_data, write_compare_html
from .head_report import HeadReport
from .pairing import Matching, head_label, matching_line

SCORES = ("val_loss", "icl_score")  # the model scores both sides report, compared in compare.md and the page
DIGITS = 5  # as heads.csv


@dataclass
class Side:
    """One of the two models: a short name, what it is (checkpoint, step, shape) and its head report."""

    name: str
    info: dict
    report: HeadReport
    notes: list[str] = field(default_factory=list)


def tokenizer_key(meta: dict) -> tuple:
    """What makes two tokenizers of the same kind give the same ids: the name and the vocabulary itself."""
    name = meta.get("tokenizer")
    if name == "char":
        return name, str(meta.get("chars"))
    if name == "ids":
        return name, meta.get("vocab_size")
    if name == "hf":
        return name, hashlib.sha256(str(meta.get("hf_tokenizer")).encode("utf-8")).hexdigest()
    return (name,)  # a tiktoken encoding: its name fixes the vocabulary


MAX_DECODE_CHECK = 300_000  # vocabularies up to this size are compared token by token


def tokenizer_mismatch(tok_a, meta_a: dict, tok_b, meta_b: dict) -> str | None:
    """None when both runs turn text into the same ids; else what differs, in words.

    The same kind and vocabulary (:func:`tokenizer_key`) is the same tokenizer. Tokenizers of different
    kinds (a char run and its Hugging Face export, whose tokenizer.json has one token per character) are the
    same when their vocabularies have the same size, every id decodes to the same string in both, and a text
    made of the vocabulary (joined without, or with spaces) encodes to the same ids.
    """
    if tokenizer_key(meta_a) == tokenizer_key(meta_b):
        return None
    na, nb = meta_a.get("tokenizer"), meta_b.get("tokenizer")
    va, vb = int(tok_a.vocab_size), int(tok_b.vocab_size)
    if na != nb and va == vb and va <= MAX_DECODE_CHECK:
        pieces = [tok_a.decode([i]) for i in range(va)]
        if pieces == [tok_b.decode([i]) for i in range(vb)]:
            for sep in ("", " "):  # ids tokenizers need the spaces; a char vocabulary may have none
                probe = sep.join(pieces[: min(va, 2000)])
                try:
                    if tok_a.encode(probe) == tok_b.encode(probe):
                        return None
                except Exception:  # a tokenizer that cannot read this text: try the other, then differ
                    continue
    if na != nb:
        return f"tokenizer {na} (vocabulary {va}) against {nb} (vocabulary {vb})"
    return f"both use the {na} tokenizer but with other vocabularies ({va} and {vb} tokens)"


def _metric_names(a: HeadReport, b: HeadReport) -> list[str]:
    return [m for m in M.METRIC_NAMES if m in a.tables or m in b.tables]


def _delta(va, vb):
    if va is None or vb is None:
        return None
    return round(vb - va, DIGITS)


def compare_rows(a: HeadReport, b: HeadReport, matching: Matching) -> list[dict]:
    """One row per matched pair (A's head order), then A's heads without a partner, then B's.

    Columns: layer_a, head_a, layer_b, head_b, similarity, runner_up (A's head's best similarity to any other
    head of B it could have been paired with: close to `similarity` = a near tie), kind_a, kind_b, and for every
    registry metric m either report has: m_a, m_b, m_delta (B minus A, from the values in the two reports' rows).
    """
    names = _metric_names(a, b)
    row_a = {(r["layer"], r["head"]): r for r in a.rows}
    row_b = {(r["layer"], r["head"]): r for r in b.rows}

    def runner_up(ka, kb):
        """A's head's best similarity to a head of B other than its partner (None: no other candidate)."""
        if matching.similarity is None or ka is None or kb is None:
            return None
        s = matching.similarity[ka].copy()
        s[kb] = np.nan
        return None if np.isnan(s).all() else round(float(np.nanmax(s)), DIGITS)

    def row(ka, kb, sim):
        ra, rb = row_a.get(ka, {}), row_b.get(kb, {})
        out = {
            "layer_a": ka[0] if ka else None,
            "head_a": ka[1] if ka else None,
            "layer_b": kb[0] if kb else None,
            "head_b": kb[1] if kb else None,
            "similarity": None if sim is None else round(sim, DIGITS),
            "runner_up": runner_up(ka, kb),
            "kind_a": ra.get("kind"),
            "kind_b": rb.get("kind"),
        }
        for m in names:
            va, vb = ra.get(m), rb.get(m)
            out[f"{m}_a"], out[f"{m}_b"], out[f"{m}_delta"] = va, vb, _delta(va, vb)
        return out

    rows = [row((la, ha), (lb, hb), s) for la, ha, lb, hb, s in matching.pairs]
    rows += [row(k, None, None) for k in matching.unmatched_a]
    rows += [row(None, k, None) for k in matching.unmatched_b]
    return rows


def csv_columns(a: HeadReport, b: HeadReport) -> list[str]:
    cols = ["layer_a", "head_a", "layer_b", "head_b", "similarity", "runner_up", "kind_a", "kind_b"]
    for m in _metric_names(a, b):
        cols += [f"{m}_a", f"{m}_b", f"{m}_delta"]
    return cols


def score_deltas(a: HeadReport, b: HeadReport) -> dict[str, list]:
    """`{score: [A, B, B - A]}` for the model scores both reports have (val loss, ICL score)."""
    out = {}
    for k in SCORES:
        va, vb = a.model_scores.get(k), b.model_scores.get(k)
        if va is not None and vb is not None:
            out[k] = [round(va, DIGITS), round(vb, DIGITS), round(vb - va, DIGITS)]
    return out


def _groups_text(matching: Matching) -> str:
    return "; ".join(
        f"A {', '.join(f'L{l}' for l in ga)} <-> B {', '.join(f'L{l}' for l in gb)}"
        for ga, gb in matching.groups
    )


def largest_changes(rows: list[dict], metric: str, top: int = 3) -> list[tuple[str, float]]:
    """The `top` matched pairs whose `metric` changed most (by |delta|): `[("L1H3->L1H0", delta)]`."""
    found = [
        (
            f"{head_label(r['layer_a'], r['head_a'])}->{head_label(r['layer_b'], r['head_b'])}",
            r[f"{metric}_delta"],
        )
        for r in rows
        if r.get(f"{metric}_delta") is not None
    ]
    return sorted(found, key=lambda t: -abs(t[1]))[:top]


def summary_lines(a: Side, b: Side, matching: Matching, rows: list[dict], top: int = 3) -> list[str]:
    """The terminal summary: the matching, the largest metric changes per kind metric, the model scores."""
    La, Ha = a.report.patterns.shape[:2]
    Lb, Hb = b.report.patterns.shape[:2]
    lines = [f"A: {a.name}; B: {b.name}", matching_line(matching, La * Ha, Lb * Hb)]
    if len(matching.groups) and (La, Ha) != (Lb, Hb):
        lines.append(f"layers by depth: {_groups_text(matching)}")
    for metric in [m for _, m, _ in M.KIND_RULES] + ["zero_ablation", "dla"]:
        ch = largest_changes(rows, metric, top)
        if ch:
            lines.append(
                f"{metric:<14} largest changes (B - A): " + ", ".join(f"{k} {v:+.3f}" for k, v in ch)
            )
    for k, (va, vb, d) in score_deltas(a.report, b.report).items():
        lines.append(f"{k}: A {va:.3f}, B {vb:.3f} (B - A {d:+.3f})")
    return lines


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.3f}" if isinstance(v, float) else str(v)


def markdown(
    a: Side, b: Side, matching: Matching, rows: list[dict], text_info: str, summary: list[str]
) -> str:
    """compare.md: the two models, the text, the matching, every matched pair's similarity and deltas."""
    keys = list(dict.fromkeys([*a.info, *b.info]))
    lines = [f"# Heads: {a.name} (A) against {b.name} (B)", "", "| | A | B |", "|---|---|---|"]
    lines += [f"| {k} | {a.info.get(k, '')} | {b.info.get(k, '')} |" for k in keys]
    for k, (va, vb, d) in score_deltas(a.report, b.report).items():
        lines.append(f"| {k} | {va:.4f} | {vb:.4f} (B - A {d:+.4f}) |")
    lines += ["", f"Text: {text_info}.", "", "## Summary", "", "```", *summary, "```", ""]
    lines += [
        "## Matched heads",
        "",
        "Similarity: the attention mass the two heads put on the same keys (mean over query rows of "
        "sum_j min(A_ij, B_ij); 1 = the same pattern), averaged over the text and the probe; runner-up: "
        "A's head's best similarity to another head of B it could have been paired with (close to the "
        "similarity: a near tie). Deltas are B minus A.",
        "",
    ]
    names = _metric_names(a.report, b.report)
    lines.append(
        "| A | B | similarity | runner-up | kind A | kind B | " + " | ".join(f"{m} Δ" for m in names) + " |"
    )
    lines.append("|---" * (6 + len(names)) + "|")
    for r in rows:
        ha = head_label(r["layer_a"], r["head_a"]) if r["layer_a"] is not None else "—"
        hb = head_label(r["layer_b"], r["head_b"]) if r["layer_b"] is not None else "—"
        sim = "" if r["similarity"] is None else f"{r['similarity']:.3f}"
        run = "" if r["runner_up"] is None else f"{r['runner_up']:.3f}"
        lines.append(
            f"| {ha} | {hb} | {sim} | {run} | {r['kind_a'] or ''} | {r['kind_b'] or ''} | "
            + " | ".join(_fmt(r[f"{m}_delta"]) for m in names)
            + " |"
        )
    if matching.unmatched_a or matching.unmatched_b:
        lines += [
            "",
            f"Without a partner (the layers of the same depth have fewer heads on the other side): "
            f"A {', '.join(head_label(*k) for k in matching.unmatched_a) or 'none'}; "
            f"B {', '.join(head_label(*k) for k in matching.unmatched_b) or 'none'}.",
        ]
    return "\n".join(lines) + "\n"


def write_compare(
    a: Side,
    b: Side,
    matching: Matching,
    out: Path,
    *,
    title: str,
    text_info: str,
    layer: int = 0,
    head: int = 0,
) -> tuple[dict, list[str]]:
    """Write compare.csv, compare.md and compare.html into `out`; returns `({what: path}, summary lines)`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = compare_rows(a.report, b.report, matching)
    summary = summary_lines(a, b, matching, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_columns(a.report, b.report))
    w.writeheader()
    w.writerows(rows)
    files = {"csv": atomic_write(out / "compare.csv", buf.getvalue())}
    files["md"] = atomic_write(out / "compare.md", markdown(a, b, matching, rows, text_info, summary))
    data = compare_page_data(
        a,
        b,
        matching,
        rows,
        title=title,
        text_info=text_info,
        scores=score_deltas(a.report, b.report),
        metric_names=_metric_names(a.report, b.report),
        layer=layer,
        head=head,
    )
    files["html"] = write_compare_html(out / "compare.html", data)
    return files, summary
