"""heads.html: one self-contained page (inline CSS/JS, data embedded as JSON, no network) to browse heads.

The attention patterns of the chosen text are stored as the lower triangle of each head's `(T, T)` matrix,
quantised to uint16 (`round(w * 65535)`, error < 1e-5) and base64-encoded, so 12 x 12 heads at 256 tokens
is about 12 MB. The page draws every matrix on `<canvas>` (thumbnail grid and a large view), so it stays
responsive with thousands of cells; the token strip and the weights panel are plain DOM.

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

import base64
import html
import json
from pathlib import Path

import numpy as np

from rundir.files import atomic_write

from .page_common import BASE_CSS, PATTERN_JS


def encode_pattern(pattern: np.ndarray) -> str:
    """Lower triangle of one `(T, T)` pattern, row by row, as base64 of little-endian uint16 (w * 65535)."""
    T = pattern.shape[-1]
    rows, cols = np.tril_indices(T)
    q = np.clip(np.rint(np.asarray(pattern, dtype=np.float64)[rows, cols] * 65535), 0, 65535)
    return base64.b64encode(q.astype("<u2").tobytes()).decode("ascii")


def decode_pattern(data: str, T: int) -> np.ndarray:
    """Inverse of :func:`encode_pattern` (used by tests): `(T, T)` float64 with zeros above the diagonal."""
    q = np.frombuffer(base64.b64decode(data), dtype="<u2").astype(np.float64) / 65535
    out = np.zeros((T, T))
    out[np.tril_indices(T)] = q
    return out


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
    `timeline` (optional, interp/timeline.py): `{"steps", "patterns", "rows", "series", "phases",
    "report_step", "report_name"}`: the slider over kept steps and the small multiples.
    """
    L, H, T, T2 = patterns.shape
    if T != T2 or T != len(tokens):
        raise ValueError(f"patterns {patterns.shape} do not match {len(tokens)} tokens")
    metric_names = [k for k in (rows[0] if rows else {}) if k not in ("layer", "head", "kv_head", "kind")]
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
        "patterns": [encode_pattern(patterns[l, h]) for l in range(L) for h in range(H)],
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
    """Write the self-contained page for `data` (from :func:`page_data`) to `path`."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False, default=float)
    blob = blob.replace("</", "<\\/")  # a token like "</script>" must not end the data block
    page = _TEMPLATE.replace("__TITLE__", html.escape(str(data.get("title", "heads"))))
    page = page.replace("__DATA__", blob)
    return atomic_write(path, page)


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
__BASE_CSS__main{display:grid;grid-template-columns:minmax(420px,1.25fr) minmax(360px,1fr);gap:12px;padding:10px 14px}
.controls label{margin-right:12px}
select{font-size:13px}
#gqa{font-size:12px;color:#555;margin-top:4px}
#tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;
  max-height:260px;overflow:auto;border:1px solid #eee;padding:4px}
.tok.future{color:#bbb}
#bars{width:100%;height:120px;display:block;border:1px solid #eee}
#weights-wrap{max-height:300px;overflow:auto}
th{position:sticky;top:0;background:#f5f5f5;cursor:pointer}
#metrics-wrap{max-height:340px;overflow:auto}
#metrics tr:hover{background:#f0f7ff;cursor:pointer}
#grid{display:grid;gap:3px;align-items:center}
#grid canvas{width:100%;image-rendering:pixelated;border:2px solid transparent;cursor:pointer}
#grid .lab{font-size:10px;color:#666;text-align:center}
#big{width:100%;max-width:420px;image-rendering:pixelated;border:1px solid #ccc;display:block}
#hoverinfo{font-size:12px;color:#333;min-height:16px}
#top{font-size:12px;margin:4px 0;font-family:ui-monospace,Menlo,Consolas,monospace}
.legend span{display:inline-block;margin-right:8px;font-size:11px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:middle}
#comp{image-rendering:pixelated;border:1px solid #ccc;display:block;cursor:crosshair}
#comp-box{display:inline-grid;grid-template-columns:auto auto;align-items:end}
#comp-rows,#comp-cols{position:relative;font:10px ui-monospace,Menlo,Consolas,monospace;color:#555}
#comp-rows span{position:absolute;right:4px;transform:translateY(-50%);white-space:nowrap}
#comp-cols span{position:absolute;bottom:3px;transform:translateX(-50%);white-space:nowrap}
#comp-cols span.v{writing-mode:vertical-rl;transform:translateX(-50%) rotate(180deg)}
#comp-corner{font-size:10px;color:#888;text-align:right;padding:0 4px 3px 0}
#comp-info,#comp-top{font-size:12px;font-family:ui-monospace,Menlo,Consolas,monospace;margin-top:4px}
#lens td,#lens th{padding:1px 8px}
#timeline{margin:10px 14px 0 14px}
#tl-slider{width:100%}
#tl-plots{display:flex;flex-wrap:wrap;gap:10px}
#tl-plots figure{margin:0;font-size:11px}
#tl-plots svg{border:1px solid #eee;background:#fff}
#tl-sentence{font-size:12px;color:#444;margin:2px 0 6px 0}
</style></head>
<body>
<header><h1 id="title"></h1><div class="info" id="info"></div></header>
<section id="timeline" hidden>
  <h2>Over training: <span id="tl-label"></span> <small>(the slider redraws the patterns and the metric table
  for the model at that step; composition and logit lens stay the report's checkpoint)</small></h2>
  <input type="range" id="tl-slider" min="0" max="0" step="1" value="0">
  <div id="tl-sentence"></div>
  <div id="tl-plots"></div>
</section>
<main>
<div>
  <section class="controls">
    <label>Layer <select id="layer"></select></label>
    <label>Head <select id="head"></select></label>
    <span id="mode"></span>
    <div id="gqa"></div>
    <div class="legend" id="legend"></div>
  </section>
  <section>
    <h2>Tokens <small>(hover a token to see where it looks; click to pin)</small></h2>
    <div id="tokens"></div>
  </section>
  <section>
    <h2 id="bars-title">Attention of the query over earlier tokens</h2>
    <canvas id="bars" width="900" height="120"></canvas>
    <div id="top"></div>
    <div id="weights-wrap"><table id="weights"></table></div>
  </section>
</div>
<div>
  <section>
    <h2 id="big-title">Pattern</h2>
    <canvas id="big"></canvas>
    <div id="hoverinfo"></div>
  </section>
  <section>
    <h2>All heads (rows: layers, columns: heads; click to select)</h2>
    <div id="grid"></div>
  </section>
  <section>
    <h2>Metrics per head (click a row to select; click a header to sort)</h2>
    <div id="metrics-wrap"><table id="metrics"></table></div>
  </section>
  <section id="circuits">
    <h2>Composition from the weights <select id="ckind"></select>
      <small>(rows: writing head, columns: reading head in a later layer; white = at or below the random
      baseline)</small></h2>
    <div id="comp-box">
      <div id="comp-corner">writes &darr;<br>reads &rarr;</div><div id="comp-cols"></div>
      <div id="comp-rows"></div><canvas id="comp"></canvas>
    </div>
    <div id="comp-info"></div>
    <div id="comp-top"></div>
  </section>
  <section>
    <h2>Logit lens <small>(the residual after each layer through ln_f and the unembedding, on this text)</small></h2>
    <table id="lens"></table>
  </section>
</div>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const L = D.n_layer, H = D.n_head, T = D.T, KV = D.n_kv_head, GROUP = H / KV;
const cache = new Map();
const tokSpans = [];  // the token spans, by position (the strip also holds <br> after newline tokens)
const state = {layer: D.initial.layer, head: D.initial.head, query: null, pinned: false};

function kvOf(h) { return Math.floor(h / GROUP); }
function headColor(h, a) { return `hsla(${Math.round(360 * h / H)},75%,45%,${a})`; }
__PATTERN_JS__
// Lower triangle of head (l, h), decoded once.
function tri(l, h) {
  const key = l * H + h;
  if (!cache.has(key)) cache.set(key, decodeTri(D.patterns[key]));
  return cache.get(key);
}
function w(l, h, q, k) { return k > q ? 0 : tri(l, h)[rowStart(q) + k]; }
function fmt(x) { return x.toFixed(4); }

function drawPattern(canvas, l, h, size) { drawTri(canvas, tri(l, h), T, size); }

function buildControls() {
  document.getElementById("title").textContent = D.title;
  const info = Object.entries(D.info).map(([k, v]) => `${k}: ${v}`).join("  \u00b7  ");
  document.getElementById("info").textContent = info;
  const ls = document.getElementById("layer"), hs = document.getElementById("head");
  for (let l = 0; l < L; l++) ls.add(new Option(`layer ${l}`, l));
  hs.add(new Option("all heads (overlay)", "all"));
  for (let h = 0; h < H; h++) hs.add(new Option(KV < H ? `head ${h} (kv ${kvOf(h)})` : `head ${h}`, h));
  ls.value = state.layer; hs.value = state.head;
  ls.onchange = () => select(+ls.value, state.head);
  hs.onchange = () => select(state.layer, hs.value === "all" ? "all" : +hs.value);
  const gq = document.getElementById("gqa");
  if (KV < H) {
    const groups = [];
    for (let g = 0; g < KV; g++) {
      const qs = []; for (let h = 0; h < H; h++) if (kvOf(h) === g) qs.push(h);
      groups.push(`kv ${g}: heads ${qs.join(", ")}`);
    }
    gq.textContent = `${KV < H && KV === 1 ? "MQA" : "GQA"}: ${H} query heads share ${KV} KV head(s) \u2014 ` + groups.join("; ");
  } else gq.textContent = `MHA: each of the ${H} heads has its own keys and values`;
  const lg = document.getElementById("legend");
  for (let h = 0; h < H; h++) lg.insertAdjacentHTML("beforeend",
    `<span><i class="swatch" style="background:${headColor(h, 1)}"></i>h${h}</span>`);
}

function buildTokens() {
  const box = document.getElementById("tokens");
  D.tokens.forEach((t, i) => {
    const s = document.createElement("span");
    s.className = "tok"; s.textContent = t; s.dataset.i = i; s.title = `#${i}`;
    box.appendChild(s); tokSpans.push(s);
    if (t.endsWith("\u21b5")) box.appendChild(document.createElement("br"));  // keep the text's line breaks
  });
  box.addEventListener("mouseover", e => { const i = e.target.dataset.i; if (i !== undefined && !state.pinned) setQuery(+i); });
  box.addEventListener("click", e => {
    const i = e.target.dataset.i; if (i === undefined) return;
    state.pinned = !(state.pinned && state.query === +i); setQuery(+i);
  });
}

function buildGrid() {
  const g = document.getElementById("grid");
  g.style.gridTemplateColumns = `28px repeat(${H}, minmax(0, 1fr))`;
  g.insertAdjacentHTML("beforeend", `<div class="lab"></div>`);
  for (let h = 0; h < H; h++)
    g.insertAdjacentHTML("beforeend", `<div class="lab">h${h}${KV < H ? "<br>kv" + kvOf(h) : ""}</div>`);
  const size = Math.min(T, 64);
  for (let l = 0; l < L; l++) {
    g.insertAdjacentHTML("beforeend", `<div class="lab">L${l}</div>`);
    for (let h = 0; h < H; h++) {
      const c = document.createElement("canvas");
      c.id = `thumb-${l}-${h}`; c.title = `layer ${l} head ${h}`;
      if (KV < H) c.style.borderBottomColor = `hsl(${Math.round(360 * kvOf(h) / KV)},60%,55%)`;
      c.onclick = () => select(l, h);
      g.appendChild(c);
      drawPattern(c, l, h, size);
    }
  }
}

let sortKey = null, sortDir = -1;
function buildMetrics() {
  const tb = document.getElementById("metrics");
  const cols = ["layer", "head"].concat(KV < H ? ["kv_head"] : [], ["kind"], D.metric_names);
  const rows = D.rows.slice();
  if (sortKey) rows.sort((a, b) => sortDir * ((a[sortKey] ?? -1e9) > (b[sortKey] ?? -1e9) ? 1 : -1));
  let s = "<thead><tr>" + cols.map(c => `<th data-c="${c}">${c}</th>`).join("") + "</tr></thead><tbody>";
  for (const r of rows) {
    s += `<tr data-l="${r.layer}" data-h="${r.head}">` + cols.map(c => {
      const v = r[c];
      return `<td>${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : (v ?? "")}</td>`;
    }).join("") + "</tr>";
  }
  tb.innerHTML = s + "</tbody>";
  tb.querySelectorAll("th").forEach(th => th.onclick = () => {
    sortDir = sortKey === th.dataset.c ? -sortDir : -1; sortKey = th.dataset.c; buildMetrics(); markSelected();
  });
  tb.querySelectorAll("tbody tr").forEach(tr => tr.onclick = () => select(+tr.dataset.l, +tr.dataset.h));
}

function markSelected() {
  document.querySelectorAll("#grid canvas").forEach(c => c.classList.remove("sel"));
  const hs = state.head === "all" ? [...Array(H).keys()] : [state.head];
  hs.forEach(h => document.getElementById(`thumb-${state.layer}-${h}`).classList.add("sel"));
  document.querySelectorAll("#metrics tbody tr").forEach(tr =>
    tr.classList.toggle("sel", +tr.dataset.l === state.layer && hs.includes(+tr.dataset.h)));
}

function select(l, h) {
  state.layer = l; state.head = h;
  document.getElementById("layer").value = l;
  document.getElementById("head").value = h;
  document.getElementById("mode").textContent = h === "all" ? "overlay: colour = head" : "";
  const big = document.getElementById("big");
  const bh = h === "all" ? 0 : h;
  document.getElementById("big-title").textContent = `Pattern: layer ${l}, head ${bh}` +
    (KV < H ? ` (kv head ${kvOf(bh)})` : "") + (h === "all" ? " \u2014 overlay selected, showing head 0" : "");
  drawPattern(big, l, bh, Math.min(T, 512));
  markSelected();
  drawComposition();
  if (state.query === null) state.query = Math.min(T - 1, Math.max(0, Math.floor(T / 2)));
  setQuery(state.query);
}

function heads() { return state.head === "all" ? [...Array(H).keys()] : [state.head]; }

function setQuery(q) {
  state.query = q;
  const l = state.layer, hs = heads(), spans = tokSpans;
  for (let k = 0; k < T; k++) {
    const s = spans[k];
    s.classList.toggle("query", k === q); s.classList.toggle("future", k > q);
    if (k > q) { s.style.background = ""; s.removeAttribute("data-w"); continue; }
    let best = 0, bh = hs[0];
    for (const h of hs) { const v = w(l, h, q, k); if (v > best) { best = v; bh = h; } }
    s.style.background = hs.length === 1 ? `rgba(33,150,243,${Math.sqrt(best)})` : headColor(bh, Math.sqrt(best));
    s.dataset.w = fmt(best);
    s.title = `#${k}  ` + hs.map(h => `h${h}: ${fmt(w(l, h, q, k))}`).join("  ");
  }
  drawBars(q, l, hs);
  fillWeights(q, l, hs);
}

function drawBars(q, l, hs) {
  const c = document.getElementById("bars"), ctx = c.getContext("2d");
  c.width = c.clientWidth || 900; const W = c.width, Hh = c.height;
  ctx.clearRect(0, 0, W, Hh);
  const bw = W / T;
  for (let k = 0; k <= q; k++) {
    hs.forEach((h, n) => {
      const v = w(l, h, q, k), sub = bw / hs.length;
      ctx.fillStyle = hs.length === 1 ? "#1976d2" : headColor(h, 0.9);
      ctx.fillRect(k * bw + n * sub, Hh - v * (Hh - 4), Math.max(sub, 1), v * (Hh - 4));
    });
  }
  ctx.strokeStyle = "#d32f2f"; ctx.strokeRect(q * bw, 0, Math.max(bw, 1), Hh);
  document.getElementById("bars-title").textContent =
    `Attention of query #${q} "${D.tokens[q]}" over earlier tokens \u2014 layer ${l}, ` +
    (hs.length === 1 ? `head ${hs[0]}` : "all heads") + (state.pinned ? " (pinned)" : "");
}

function fillWeights(q, l, hs) {
  const tb = document.getElementById("weights");
  tb.dataset.query = q; tb.dataset.layer = l; tb.dataset.heads = hs.join(",");
  let s = "<thead><tr><th>key</th><th>token</th>" +
    hs.map(h => `<th style="color:${headColor(h, 1)}">h${h}</th>`).join("") + "</tr></thead><tbody>";
  for (let k = q; k >= 0; k--) {
    s += `<tr><td>${k}</td><td class="tokcell">${escapeHtml(showSpaces(D.tokens[k]))}</td>` + hs.map(h => {
      const v = fmt(w(l, h, q, k));
      return `<td class="wcell" data-layer="${l}" data-head="${h}" data-q="${q}" data-k="${k}" data-w="${v}">${v}</td>`;
    }).join("") + "</tr>";
  }
  tb.innerHTML = s + "</tbody>";
  // the strongest keys first, summed over the shown heads
  const tot = [];
  for (let k = 0; k <= q; k++) tot.push([k, hs.reduce((a, h) => a + w(l, h, q, k), 0) / hs.length]);
  tot.sort((a, b) => b[1] - a[1]);
  document.getElementById("top").textContent = "strongest: " +
    tot.slice(0, 5).map(([k, v]) => `#${k} "${D.tokens[k]}" ${fmt(v)}`).join("   ") + (hs.length > 1 ? "  (mean over heads)" : "");
}


document.getElementById("big").addEventListener("mousemove", e => {
  const c = e.target, r = c.getBoundingClientRect();
  const q = Math.floor((e.clientY - r.top) / r.height * T), k = Math.floor((e.clientX - r.left) / r.width * T);
  const h = state.head === "all" ? 0 : state.head;
  if (q < 0 || k < 0 || q >= T || k >= T) return;
  document.getElementById("hoverinfo").textContent = k > q ? `query #${q}, key #${k}: masked (future)` :
    `query #${q} "${D.tokens[q]}" \u2192 key #${k} "${D.tokens[k]}": ${fmt(w(state.layer, h, q, k))}`;
});

// ---- circuits: composition matrix of the chosen kind, and the logit lens
const C = D.circuits, KINDS = Object.keys(C.composition);
const NW = (L - 1) * H;  // writers: layers 0..L-2; readers: layers 1..L-1
function comp(kind, la, ha, lb, hb) { return C.composition[kind][(la * H + ha) * L * H + lb * H + hb]; }
function compColor(v, base, vmax) {
  if (v === null) return "#f5f5f5";
  const t = Math.max(0, Math.min(1, (v - base) / Math.max(vmax - base, 1e-9)));
  const c = Math.round(255 * (1 - t));
  return `rgb(255,${c},${Math.round(c * 0.8)})`;
}
function compPx() { return Math.min(40, Math.max(3, Math.floor(420 / NW))); }
// Row labels (writing heads, layers 0..L-2) left of the matrix and column labels (reading heads, layers
// 1..L-1) above it, each centred on its row or column; when the cells are too small, one label per layer.
function buildCompLabels() {
  const px = compPx(), perHead = px >= 12, n = perHead ? NW : L - 1, span = perHead ? 1 : H;
  let rs = "", cs = "";
  for (let i = 0; i < n; i++) {
    const la = perHead ? Math.floor(i / H) : i, h = perHead ? i % H : null, mid = (i + 0.5) * span * px;
    const name = l => perHead ? `L${l}H${h}` : `L${l}`, hAttr = perHead ? ` data-h="${h}"` : "";
    rs += `<span class="clab" data-l="${la}"${hAttr} style="top:${mid}px">${name(la)}</span>`;
    cs += `<span class="clab${perHead ? " v" : ""}" data-l="${la + 1}"${hAttr} style="left:${mid}px">${name(la + 1)}</span>`;
  }
  const rows = document.getElementById("comp-rows"), cols = document.getElementById("comp-cols");
  rows.innerHTML = rs; cols.innerHTML = cs;
  rows.style.width = `${perHead ? 46 : 28}px`; rows.style.height = `${NW * px + 2}px`;
  cols.style.height = `${perHead ? 46 : 18}px`; cols.style.width = `${NW * px + 2}px`;
}
function buildCircuits() {
  const ks = document.getElementById("ckind");
  if (!KINDS.length) {
    document.getElementById("comp-info").textContent = L === 1 ?
      "one layer: no heads in different layers to compose" : "no composition scores in this page";
    ks.style.display = "none"; document.getElementById("comp-box").style.display = "none"; return;
  }
  buildCompLabels();
  for (const k of KINDS) ks.add(new Option(`${k}-composition`, k));
  ks.value = KINDS.includes("K") ? "K" : KINDS[0];
  ks.onchange = drawComposition;
  const cv = document.getElementById("comp");
  cv.addEventListener("mousemove", e => {
    const r = cv.getBoundingClientRect(), n = NW;
    const i = Math.floor((e.clientY - r.top) / r.height * n), j = Math.floor((e.clientX - r.left) / r.width * n);
    if (i < 0 || j < 0 || i >= n || j >= n) return;
    const la = Math.floor(i / H), ha = i % H, lb = 1 + Math.floor(j / H), hb = j % H, k = ks.value;
    const v = comp(k, la, ha, lb, hb);
    document.getElementById("comp-info").textContent = v === null ?
      `L${la}H${ha} → L${lb}H${hb}: same or later layer` :
      `L${la}H${ha} → L${lb}H${hb}  ${k}-composition ${v.toFixed(3)}  (random ${C.baseline[k].toFixed(3)})`;
  });
  cv.addEventListener("click", e => {
    const r = cv.getBoundingClientRect();
    const j = Math.floor((e.clientX - r.left) / r.width * NW);
    if (j >= 0 && j < NW) select(1 + Math.floor(j / H), j % H);
  });
}
function drawComposition() {
  if (!KINDS.length) return;
  const k = document.getElementById("ckind").value, base = C.baseline[k];
  const cv = document.getElementById("comp"), px = compPx();
  cv.width = cv.height = NW * px;
  const ctx = cv.getContext("2d");
  let vmax = base;
  for (const v of C.composition[k]) if (v !== null && v > vmax) vmax = v;
  for (let i = 0; i < NW; i++) for (let j = 0; j < NW; j++) {
    ctx.fillStyle = compColor(comp(k, Math.floor(i / H), i % H, 1 + Math.floor(j / H), j % H), base, vmax);
    ctx.fillRect(j * px, i * px, px, px);
  }
  if (px >= 30) {  // room for the numbers
    ctx.font = "10px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.fillStyle = "#333";
    for (let i = 0; i < NW; i++) for (let j = 0; j < NW; j++) {
      const v = comp(k, Math.floor(i / H), i % H, 1 + Math.floor(j / H), j % H);
      if (v !== null) ctx.fillText(v.toFixed(2), (j + 0.5) * px, (i + 0.5) * px);
    }
  }
  ctx.strokeStyle = "#90a4ae"; ctx.lineWidth = 1;
  for (let l = 1; l < L - 1; l++) {
    ctx.beginPath(); ctx.moveTo(l * H * px, 0); ctx.lineTo(l * H * px, NW * px); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, l * H * px); ctx.lineTo(NW * px, l * H * px); ctx.stroke();
  }
  const hsel = state.head === "all" ? 0 : state.head, l = state.layer;
  ctx.strokeStyle = "#d32f2f"; ctx.lineWidth = 2;
  if (l >= 1) ctx.strokeRect(((l - 1) * H + hsel) * px, 0, px, NW * px);  // its column: who writes into it
  if (l <= L - 2) ctx.strokeRect(0, (l * H + hsel) * px, NW * px, px);      // its row: who reads it
  // the selected head's strongest partners
  const into = [], out = [];
  for (let la = 0; la < l; la++) for (let ha = 0; ha < H; ha++) into.push([la, ha, comp(k, la, ha, l, hsel)]);
  for (let lb = l + 1; lb < L; lb++) for (let hb = 0; hb < H; hb++) out.push([lb, hb, comp(k, l, hsel, lb, hb)]);
  const fmtList = xs => xs.sort((a, b) => b[2] - a[2]).slice(0, 4).map(([x, y, v]) =>
    `<span class="cpair" data-l="${x}" data-h="${y}" data-v="${v.toFixed(4)}">L${x}H${y} ${v.toFixed(3)}</span>`).join(", ") || "none";
  document.getElementById("comp-top").innerHTML =
    `L${l}H${hsel}, ${k}-composition (random ${base.toFixed(3)}):<br>reads from: ${fmtList(into)}<br>read by: ${fmtList(out)}`;
}
function buildLens() {
  const rows = C.logit_lens, tb = document.getElementById("lens");
  if (!rows.length) return;
  tb.innerHTML = "<thead><tr><th>after</th><th>loss</th><th>mean rank</th><th>top-1</th></tr></thead><tbody>" +
    rows.map(r => `<tr data-layer="${r.layer}"><td>${r.layer === "embed" ? "embeddings" : "layer " + r.layer}</td>` +
      `<td>${r.loss.toFixed(3)}</td><td>${r.rank.toFixed(1)}</td><td>${r.top1.toFixed(3)}</td></tr>`).join("") + "</tbody>";
}

// ---- the timeline: a slider over the kept steps and small multiples of the metrics over training
const SVG_W = 250, SVG_H = 110, PAD = 26;
function phaseWindows(key) {
  const ph = D.timeline.phases; if (!ph) return [];
  if (key === "icl_score" || key === "val_loss") return ph[key] ? [[ph[key].start, ph[key].end]] : [];
  const kind = {induction: "induction", prev_token: "previous-token"}[key];
  const hs = kind ? (ph.heads[kind] || []) : [];
  return hs.length ? [[Math.min(...hs.map(d => d.start)), Math.max(...hs.map(d => d.end))]] : [];
}
function smallMultiple(key, title, steps, lines, step) {
  const xs = steps.filter(s => s !== null), vals = lines.flatMap(d => d.ys).filter(v => v !== null && v !== undefined);
  if (xs.length < 2 || !vals.length) return "";
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...vals), y1 = Math.max(...vals); if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = s => PAD + (SVG_W - PAD - 6) * (s - x0) / (x1 - x0), Y = v => SVG_H - 16 - (SVG_H - 24) * (v - y0) / (y1 - y0);
  let s = `<svg width="${SVG_W}" height="${SVG_H}" data-metric="${key}">`;
  for (const [a, b] of phaseWindows(key))
    s += `<rect class="phase" data-start="${a}" data-end="${b}" x="${X(a)}" y="4" width="${Math.max(2, X(b) - X(a))}" height="${SVG_H - 20}" fill="#ffe0b2"/>`;
  for (const {j, ys} of lines) {  // j: the head's index l * H + h (null for a model-wide series)
    const pts = steps.map((st, i) => (ys[i] === null || ys[i] === undefined) ? null : `${X(st).toFixed(1)},${Y(ys[i]).toFixed(1)}`).filter(Boolean);
    const colour = j === null ? "#1565c0" : `hsl(${Math.round(360 * j / (L * H))},70%,45%)`;
    if (pts.length) s += `<polyline fill="none" stroke-width="1.3" stroke="${colour}" points="${pts.join(" ")}"${j === null ? "" : ` data-head="L${Math.floor(j / H)}H${j % H}"`}><title>${j === null ? title : `L${Math.floor(j / H)}H${j % H}`}</title></polyline>`;
  }
  if (step !== null) s += `<line class="now" data-step="${step}" x1="${X(step)}" x2="${X(step)}" y1="4" y2="${SVG_H - 16}" stroke="#d32f2f"/>`;
  s += `<text x="2" y="12">${y1.toFixed(2)}</text><text x="2" y="${SVG_H - 18}">${y0.toFixed(2)}</text>`;
  s += `<text x="${PAD}" y="${SVG_H - 3}">${x0}</text><text x="${SVG_W - 6}" y="${SVG_H - 3}" text-anchor="end">${x1}</text></svg>`;
  return `<figure><figcaption>${title}</figcaption>${s}</figure>`;
}
function drawPlots(step) {
  const S = D.timeline.series;
  let html = "";
  for (const m of Object.keys(S.metrics)) {
    const per = S.metrics[m];  // [step][head]
    const lines = [...Array(L * H).keys()].map(j => ({j, ys: per.map(row => row[j])}));
    html += smallMultiple(m, `${m} per head (${S.source})`, S.steps, lines.filter(d => d.ys.some(v => v !== null)), step);
  }
  if (S.icl_score.some(v => v !== null)) html += smallMultiple("icl_score", "ICL score", S.steps, [{j: null, ys: S.icl_score}], step);
  if (S.val_loss.steps.length) html += smallMultiple("val_loss", "val loss", S.val_loss.steps, [{j: null, ys: S.val_loss.values}], step);
  document.getElementById("tl-plots").innerHTML = html;
}
function buildTimeline() {
  const tl = D.timeline;
  if (!tl) return;
  document.getElementById("timeline").hidden = false;
  document.getElementById("tl-sentence").textContent = tl.phases ? "phases: " + tl.phases.sentence : "";
  const base = {patterns: D.patterns, rows: D.rows}, n = tl.steps.length;
  const sl = document.getElementById("tl-slider"), label = document.getElementById("tl-label");
  sl.max = n; sl.value = n; sl.hidden = n === 0;
  const show = i => {
    const own = i >= n, step = own ? tl.report_step : tl.steps[i];
    D.patterns = own ? base.patterns : tl.patterns[i];
    D.rows = own ? base.rows : tl.rows[i];
    cache.clear();
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++)
      drawPattern(document.getElementById(`thumb-${l}-${h}`), l, h, Math.min(T, 64));
    buildMetrics(); select(state.layer, state.head);
    label.textContent = own ? `the report's checkpoint (${tl.report_name}, step ${step})` : `the snapshot at step ${step}`;
    document.body.dataset.step = step;
    drawPlots(step);
  };
  sl.oninput = () => show(+sl.value);
  label.textContent = `the report's checkpoint (${tl.report_name}, step ${tl.report_step})`;
  document.body.dataset.step = tl.report_step;
  drawPlots(tl.report_step);
}

buildControls(); buildTokens(); buildGrid(); buildMetrics(); buildCircuits(); buildLens(); buildTimeline();
select(state.layer, state.head);
document.body.dataset.ready = "1";
</script>
</body></html>
"""
_TEMPLATE = _TEMPLATE.replace("__BASE_CSS__", BASE_CSS).replace("__PATTERN_JS__", PATTERN_JS)
