"""compare.html: two models' heads on the same text, one self-contained page (inline CSS/JS/data, no network).

Patterns travel as in heads.html (each head's lower triangle, uint16, base64; gptlab/interp/page_common.py). The page
shows the text's tokens (hover a query, click to pin); a pair of heads, A's and B's (B defaults to the head
matched to A's), drawn side by side with their difference B - A (red: B attends more, blue: A attends more);
the query's row in both heads and its difference as numbers; the matched pairs with their similarity and
every metric's delta; the similarity of every pair of heads that could be matched (the matched ones
outlined); and thumbnails of both models' heads.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from gptlab.rundir.files import atomic_write

from .html import encode_pattern, token_label
from .page_common import BASE_CSS, PATTERN_JS
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
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False, default=float).replace("</", "<\\/")
    page = _TEMPLATE.replace("__TITLE__", html.escape(str(data.get("title", "compare")))).replace(
        "__DATA__", blob
    )
    return atomic_write(path, page)


# The drawing and selection code, shared with the live comparison page (gptlab/interp/compare_live_page.py): it reads
# `D` ({tokens, T, sides: [{n_layer, n_head, n_kv_head, rows?}], pairs, similarity}) and `tris[side][l*H+h]`.
COMPARE_JS = r"""
function headName(l, h) { return `L${l}H${h}`; }
function w(side, l, h, q, k) { return k > q ? 0 : tris[side][l * D.sides[side].n_head + h][rowStart(q) + k]; }
function fmt(x) { return x.toFixed(4); }
function simAt(la, ha, lb, hb) {
  if (!D.similarity) return null;
  const A = D.sides[0], B = D.sides[1];
  return D.similarity[((la * A.n_head + ha) * B.n_layer + lb) * B.n_head + hb];
}
function partnerOf(la, ha) {
  for (const [a1, a2, b1, b2, s] of D.pairs) if (a1 === la && a2 === ha) return [b1, b2, s];
  return null;
}
// The head of B most similar to (la, ha) among the layers it may be matched with (for an unmatched head).
function bestOf(la, ha) {
  const B = D.sides[1]; let best = null, bv = -1;
  for (let l = 0; l < B.n_layer; l++) for (let h = 0; h < B.n_head; h++) {
    const v = simAt(la, ha, l, h); if (v !== null && v > bv) { bv = v; best = [l, h]; }
  }
  return best || [Math.min(la, B.n_layer - 1), Math.min(ha, B.n_head - 1)];
}
// Draw B - A on a canvas: red where B attends more, blue where A does (sqrt scale); the largest |difference|
// among the cells a pixel covers.
function drawDiff(canvas, ta, tb, T, size) {
  const n = Math.min(T, size), ctx = canvas.getContext("2d");
  canvas.width = n; canvas.height = n;
  const img = ctx.createImageData(n, n), s = T / n;
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    const o = 4 * (y * n + x);
    img.data[o + 3] = 255;
    if (x > y) { img.data[o] = img.data[o + 1] = img.data[o + 2] = 245; continue; }
    let m = 0;
    for (let q = Math.floor(y * s); q < Math.floor((y + 1) * s); q++)
      for (let k = Math.floor(x * s); k < Math.min(Math.floor((x + 1) * s), q + 1); k++) {
        const d = tb[rowStart(q) + k] - ta[rowStart(q) + k];
        if (Math.abs(d) > Math.abs(m)) m = d;
      }
    const v = Math.round(255 * (1 - Math.sqrt(Math.abs(m))));
    if (m >= 0) { img.data[o] = 255; img.data[o + 1] = v; img.data[o + 2] = v; }
    else { img.data[o] = v; img.data[o + 1] = v; img.data[o + 2] = 255; }
  }
  ctx.putImageData(img, 0, 0);
}
// The query's row in A's and B's head, and B - A, as a table whose cells carry data-side/-q/-k/-w.
function rowTable(q, a, b) {
  const d = D_tokens();
  let s = "<thead><tr><th>#</th><th>token</th><th>A " + headName(...a) + "</th><th>B " + headName(...b) +
    "</th><th>B \u2212 A</th></tr></thead><tbody>";
  for (let k = 0; k <= q; k++) {
    const wa = w(0, a[0], a[1], q, k), wb = w(1, b[0], b[1], q, k);
    const dd = Math.abs(wb - wa) < 5e-5 ? 0 : wb - wa;  // no "-0.0000"
    const cell = (side, l, h, v) => `<td class="wcell" data-side="${side}" data-layer="${l}" data-head="${h}" ` +
      `data-q="${q}" data-k="${k}" data-w="${fmt(v)}">${fmt(v)}</td>`;
    s += `<tr><td>${k}</td><td class="tokcell">${escapeHtml(d[k])}</td>` + cell("a", a[0], a[1], wa) +
      cell("b", b[0], b[1], wb) + `<td class="wcell" data-side="d" data-q="${q}" data-k="${k}" data-w="${fmt(dd)}" ` +
      `style="background:${dd >= 0 ? `rgba(229,57,53,${Math.min(1, Math.sqrt(dd))})` : `rgba(30,136,229,${Math.min(1, Math.sqrt(-dd))})`}">${fmt(dd)}</td></tr>`;
  }
  return s + "</tbody>";
}
// The similarity of every pair of heads that may be matched: rows = A's heads, columns = B's; matched outlined.
function drawSim(canvas) {
  const A = D.sides[0], B = D.sides[1], na = A.n_layer * A.n_head, nb = B.n_layer * B.n_head;
  const cell = Math.max(3, Math.min(24, Math.floor(480 / Math.max(na, nb))));
  canvas.width = nb * cell; canvas.height = na * cell;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < na; i++) for (let j = 0; j < nb; j++) {
    const v = simAt(Math.floor(i / A.n_head), i % A.n_head, Math.floor(j / B.n_head), j % B.n_head);
    const c = v === null ? 235 : Math.round(255 * (1 - v));
    ctx.fillStyle = v === null ? "rgb(235,235,235)" : `rgb(${c},${c},255)`;
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }
  ctx.strokeStyle = "#d32f2f"; ctx.lineWidth = Math.max(1, cell / 5);
  for (const [la, ha, lb, hb] of D.pairs)
    ctx.strokeRect((lb * B.n_head + hb) * cell + 0.5, (la * A.n_head + ha) * cell + 0.5, cell - 1, cell - 1);
  ctx.strokeStyle = "#999"; ctx.lineWidth = 1;  // layer boundaries
  for (let l = 1; l < A.n_layer; l++) { ctx.beginPath(); ctx.moveTo(0, l * A.n_head * cell); ctx.lineTo(nb * cell, l * A.n_head * cell); ctx.stroke(); }
  for (let l = 1; l < B.n_layer; l++) { ctx.beginPath(); ctx.moveTo(l * B.n_head * cell, 0); ctx.lineTo(l * B.n_head * cell, na * cell); ctx.stroke(); }
  return cell;
}
"""

_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
__BASE_CSS__main{display:grid;grid-template-columns:minmax(440px,1.2fr) minmax(380px,1fr);gap:12px;padding:10px 14px}
header .info div{margin:1px 0}
#tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;max-height:220px;
  overflow:auto;border:1px solid #eee;padding:4px}
.tok.future{color:#bbb}
.three{display:grid;grid-template-columns:repeat(3,1fr);gap:8px}
.three canvas{width:100%;image-rendering:pixelated;border:1px solid #ccc;display:block}
.three figure{margin:0;font-size:12px}
#hoverinfo,#sim-info,#pair-info{font-size:12px;color:#333;min-height:16px;font-family:ui-monospace,Menlo,Consolas,monospace}
#weights-wrap{max-height:300px;overflow:auto}
#pairs-wrap{max-height:360px;overflow:auto}
#pairs tbody tr{cursor:pointer}
#pairs tr.sel{background:#fff3cd}
th{position:sticky;top:0;background:#f5f5f5}
#sim{image-rendering:pixelated;border:1px solid #ccc;display:block;cursor:crosshair;max-width:100%}
.grids{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.grid{display:grid;gap:2px;align-items:center}
.grid canvas{width:100%;image-rendering:pixelated;border:2px solid transparent;cursor:pointer}
.grid canvas.sel{border-color:#d32f2f}
.grid .lab{font-size:10px;color:#666;text-align:center}
small{color:#666;font-weight:normal}
</style></head>
<body>
<header><h1 id="title"></h1><div class="info" id="info"></div></header>
<main>
<div>
  <section>
    <h2>Tokens <small>(the same text through both models; hover a token to make it the query, click to pin)</small></h2>
    <div id="tokens"></div>
  </section>
  <section>
    <h2>Heads side by side</h2>
    <label>A head <select id="a-head"></select></label>
    <label>B head <select id="b-head"></select></label>
    <button id="to-partner">B: A's matched head</button>
    <div id="pair-info"></div>
    <div class="three">
      <figure><canvas id="pa"></canvas><figcaption id="pa-cap">A</figcaption></figure>
      <figure><canvas id="pb"></canvas><figcaption id="pb-cap">B</figcaption></figure>
      <figure><canvas id="pd"></canvas><figcaption>B &minus; A <small>(red: B attends more, blue: A)</small></figcaption></figure>
    </div>
    <div id="hoverinfo"></div>
  </section>
  <section>
    <h2 id="weights-title">The query's attention in both heads</h2>
    <div id="weights-wrap"><table id="weights"></table></div>
  </section>
</div>
<div>
  <section>
    <h2>Matched heads <small>(click a row to show the pair; deltas are B minus A)</small></h2>
    <div id="pairs-wrap"><table id="pairs"></table></div>
    <div id="unmatched"></div>
  </section>
  <section>
    <h2>Similarity of every pair that may be matched <small>(rows: A's heads, columns: B's; red outline:
      matched; grey: layers at other depths)</small></h2>
    <canvas id="sim"></canvas>
    <div id="sim-info"></div>
  </section>
  <section>
    <h2>All heads <small>(click to select)</small></h2>
    <div class="grids"><div><b>A</b><div class="grid" id="grid-a"></div></div><div><b>B</b><div class="grid" id="grid-b"></div></div></div>
  </section>
  <section>
    <h2>Model scores</h2>
    <table id="scores"></table>
  </section>
</div>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.T;
const tris = D.sides.map(s => s.patterns.map(decodeTri));
const state = {a: [D.initial.layer, D.initial.head], b: null, query: T - 1, pinned: false};
const tokSpans = [];
function D_tokens() { return D.tokens; }
__PATTERN_JS__
__COMPARE_JS__

function headOptions(sel, side) {
  const S = D.sides[side], G = S.n_head / S.n_kv_head;
  for (let l = 0; l < S.n_layer; l++) for (let h = 0; h < S.n_head; h++)
    sel.add(new Option(headName(l, h) + (S.n_kv_head < S.n_head ? ` (kv ${Math.floor(h / G)})` : ""), `${l},${h}`));
}

function buildHeader() {
  document.getElementById("title").textContent = D.title;
  const line = (label, S) => `${label}: ${S.name} \u00b7 ` + Object.entries(S.info).map(([k, v]) => `${k}: ${v}`).join(" \u00b7 ");
  document.getElementById("info").innerHTML = [line("A", D.sides[0]), line("B", D.sides[1]), D.matching_line, "text: " + D.text_info]
    .map(t => `<div>${escapeHtml(t)}</div>`).join("");
}

function buildTokens() {
  const box = document.getElementById("tokens");
  D.tokens.forEach((t, i) => {
    const s = document.createElement("span");
    s.className = "tok"; s.textContent = t; s.dataset.i = i; s.title = `#${i}`;
    box.appendChild(s); tokSpans.push(s);
    if (t.endsWith("\u21b5")) box.appendChild(document.createElement("br"));
  });
  box.addEventListener("mouseover", e => { const i = e.target.dataset.i; if (i !== undefined && !state.pinned) setQuery(+i); });
  box.addEventListener("click", e => {
    const i = e.target.dataset.i; if (i === undefined) return;
    state.pinned = !(state.pinned && state.query === +i); setQuery(+i);
  });
}

function buildGrid(side) {
  const S = D.sides[side], g = document.getElementById(side ? "grid-b" : "grid-a");
  g.style.gridTemplateColumns = `24px repeat(${S.n_head}, minmax(0, 1fr))`;
  let s = `<div class="lab"></div>`;
  for (let h = 0; h < S.n_head; h++) s += `<div class="lab">h${h}</div>`;
  for (let l = 0; l < S.n_layer; l++) {
    s += `<div class="lab">L${l}</div>`;
    for (let h = 0; h < S.n_head; h++) s += `<canvas id="thumb-${side}-${l}-${h}" data-l="${l}" data-h="${h}" title="${side ? "B" : "A"} layer ${l} head ${h}"></canvas>`;
  }
  g.innerHTML = s;
  g.querySelectorAll("canvas").forEach(c => {
    drawTri(c, tris[side][+c.dataset.l * S.n_head + +c.dataset.h], T, 48);
    c.onclick = () => side ? select(state.a, [+c.dataset.l, +c.dataset.h]) : select([+c.dataset.l, +c.dataset.h]);
  });
}

function buildPairs() {
  const names = D.metric_names;
  const hd = r => r === null ? "\u2014" : "";
  let s = "<thead><tr><th>A</th><th>B</th><th>similarity</th><th title=\"A's head's best similarity to another head of B\">runner-up</th><th>kind A</th><th>kind B</th>" +
    names.map(m => `<th>${m} \u0394</th>`).join("") + "</tr></thead><tbody>";
  let dmax = {};
  for (const m of names) dmax[m] = Math.max(1e-9, ...D.rows.map(r => Math.abs(r[m + "_delta"] ?? 0)));
  for (const r of D.rows) {
    const a = r.layer_a === null ? "\u2014" : headName(r.layer_a, r.head_a), b = r.layer_b === null ? "\u2014" : headName(r.layer_b, r.head_b);
    s += `<tr data-la="${r.layer_a ?? ""}" data-ha="${r.head_a ?? ""}" data-lb="${r.layer_b ?? ""}" data-hb="${r.head_b ?? ""}">` +
      `<td>${a}</td><td>${b}</td><td data-m="similarity">${r.similarity === null ? "" : r.similarity.toFixed(3)}</td>` +
      `<td data-m="runner_up">${r.runner_up === null ? "" : r.runner_up.toFixed(3)}</td>` +
      `<td>${r.kind_a ?? ""}</td><td>${r.kind_b ?? ""}</td>` + names.map(m => {
        const v = r[m + "_delta"];
        if (v === null || v === undefined) return `<td data-m="${m}"></td>`;
        const a = Math.min(1, Math.abs(v) / dmax[m]) * 0.6;
        return `<td data-m="${m}" data-v="${v}" style="background:${v >= 0 ? `rgba(229,57,53,${a})` : `rgba(30,136,229,${a})`}">${v >= 0 ? "+" : ""}${v.toFixed(3)}</td>`;
      }).join("") + "</tr>";
  }
  const tb = document.getElementById("pairs");
  tb.innerHTML = s + "</tbody>";
  tb.querySelectorAll("tbody tr").forEach(tr => tr.onclick = () => {
    const d = tr.dataset;
    if (d.la !== "" && d.lb !== "") select([+d.la, +d.ha], [+d.lb, +d.hb]);
    else if (d.la !== "") select([+d.la, +d.ha]);
    else select(state.a, [+d.lb, +d.hb]);
  });
  const un = [];
  if (D.unmatched_a.length) un.push("A without a partner: " + D.unmatched_a.map(k => headName(...k)).join(", "));
  if (D.unmatched_b.length) un.push("B without a partner: " + D.unmatched_b.map(k => headName(...k)).join(", "));
  document.getElementById("unmatched").textContent = un.join("; ");
}

function buildSim() {
  const c = document.getElementById("sim"), A = D.sides[0], B = D.sides[1];
  if (!D.similarity) { c.hidden = true; return; }
  const cell = drawSim(c);
  const at = e => {
    const r = c.getBoundingClientRect(), x = (e.clientX - r.left) * c.width / r.width, y = (e.clientY - r.top) * c.height / r.height;
    const i = Math.floor(y / cell), j = Math.floor(x / cell);
    return [Math.floor(i / A.n_head), i % A.n_head, Math.floor(j / B.n_head), j % B.n_head];
  };
  c.onmousemove = e => {
    const [la, ha, lb, hb] = at(e), v = simAt(la, ha, lb, hb), p = partnerOf(la, ha);
    document.getElementById("sim-info").textContent = `A ${headName(la, ha)} \u00d7 B ${headName(lb, hb)}: ` +
      (v === null ? "not compared (layers at other depths)" : v.toFixed(3)) + (p && p[0] === lb && p[1] === hb ? " (matched)" : "");
  };
  c.onclick = e => { const [la, ha, lb, hb] = at(e); select([la, ha], [lb, hb]); };
}

function buildScores() {
  const rows = Object.entries(D.scores);
  document.getElementById("scores").innerHTML = rows.length ? "<thead><tr><th></th><th>A</th><th>B</th><th>B \u2212 A</th></tr></thead><tbody>" +
    rows.map(([k, [a, b, d]]) => `<tr><td>${k}</td><td>${a.toFixed(4)}</td><td>${b.toFixed(4)}</td><td>${d >= 0 ? "+" : ""}${d.toFixed(4)}</td></tr>`).join("") +
    "</tbody>" : "<tbody><tr><td>no val data: no val loss or ICL score</td></tr></tbody>";
}

function select(a, b) {
  state.a = a;
  const p = partnerOf(a[0], a[1]);
  state.b = b || (p ? [p[0], p[1]] : bestOf(a[0], a[1]));
  document.getElementById("a-head").value = state.a.join(",");
  document.getElementById("b-head").value = state.b.join(",");
  const s = simAt(...state.a, ...state.b);
  const matched = p && p[0] === state.b[0] && p[1] === state.b[1];
  document.getElementById("pair-info").textContent = `similarity ${s === null ? "\u2014 (layers at other depths)" : s.toFixed(3)} \u00b7 ` +
    (matched ? "the matched pair" : p ? `not matched (A's match is ${headName(p[0], p[1])})` : "A's head has no partner");
  document.getElementById("pa-cap").textContent = `A ${headName(...state.a)}`;
  document.getElementById("pb-cap").textContent = `B ${headName(...state.b)}`;
  const ta = tris[0][state.a[0] * D.sides[0].n_head + state.a[1]], tb = tris[1][state.b[0] * D.sides[1].n_head + state.b[1]];
  drawTri(document.getElementById("pa"), ta, T, 320);
  drawTri(document.getElementById("pb"), tb, T, 320);
  drawDiff(document.getElementById("pd"), ta, tb, T, 320);
  document.querySelectorAll(".grid canvas").forEach(c => c.classList.remove("sel"));
  document.getElementById(`thumb-0-${state.a[0]}-${state.a[1]}`).classList.add("sel");
  document.getElementById(`thumb-1-${state.b[0]}-${state.b[1]}`).classList.add("sel");
  document.querySelectorAll("#pairs tbody tr").forEach(tr => tr.classList.toggle("sel",
    tr.dataset.la === String(state.a[0]) && tr.dataset.ha === String(state.a[1]) && tr.dataset.lb === String(state.b[0]) && tr.dataset.hb === String(state.b[1])));
  setQuery(state.query);
}

function setQuery(q) {
  state.query = q;
  const a = state.a, b = state.b;
  tokSpans.forEach((s, k) => {
    s.classList.toggle("query", k === q); s.classList.toggle("future", k > q);
    if (k > q) { s.style.background = ""; s.style.boxShadow = ""; delete s.dataset.wa; delete s.dataset.wb; return; }
    const wa = w(0, a[0], a[1], q, k), wb = w(1, b[0], b[1], q, k);
    s.dataset.wa = fmt(wa); s.dataset.wb = fmt(wb);
    s.style.background = `rgba(33,150,243,${Math.sqrt(wa)})`;  // A: the background
    s.style.boxShadow = `inset 0 -4px 0 rgba(245,124,0,${Math.sqrt(wb)})`;  // B: the underline
  });
  document.getElementById("weights-title").textContent =
    `Query #${q} ${JSON.stringify(D.tokens[q])}: attention of A ${headName(...a)} and B ${headName(...b)} (token background: A, underline: B)`;
  document.getElementById("weights").innerHTML = rowTable(q, a, b);
}

function hoverPattern(canvas, side) {
  canvas.onmousemove = e => {
    const r = canvas.getBoundingClientRect();
    const q = Math.min(T - 1, Math.floor((e.clientY - r.top) / r.height * T)), k = Math.min(T - 1, Math.floor((e.clientX - r.left) / r.width * T));
    if (k > q) { document.getElementById("hoverinfo").textContent = ""; return; }
    const wa = w(0, state.a[0], state.a[1], q, k), wb = w(1, state.b[0], state.b[1], q, k);
    document.getElementById("hoverinfo").textContent = `query #${q} ${JSON.stringify(D.tokens[q])} \u2192 key #${k} ${JSON.stringify(D.tokens[k])}: ` +
      `A ${fmt(wa)}, B ${fmt(wb)}, B \u2212 A ${fmt(wb - wa)}`;
  };
}

buildHeader();
buildTokens();
headOptions(document.getElementById("a-head"), 0);
headOptions(document.getElementById("b-head"), 1);
document.getElementById("a-head").onchange = e => select(e.target.value.split(",").map(Number));
document.getElementById("b-head").onchange = e => select(state.a, e.target.value.split(",").map(Number));
document.getElementById("to-partner").onclick = () => select(state.a);
buildGrid(0); buildGrid(1);
buildPairs(); buildSim(); buildScores();
["pa", "pb", "pd"].forEach((id, i) => hoverPattern(document.getElementById(id), i));
select(state.a);
document.body.dataset.ready = "1";
</script>
</body></html>
"""
_TEMPLATE = (
    _TEMPLATE.replace("__BASE_CSS__", BASE_CSS)
    .replace("__PATTERN_JS__", PATTERN_JS)
    .replace("__COMPARE_JS__", COMPARE_JS)
)
