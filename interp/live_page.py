"""The live viewer's page: one self-contained HTML document (inline CSS and JS; it talks only to its server).

It opens with the model's sample text (``info["sample_text"]``: the start of the run's val text) already
analysed. The user types or pastes text; after a pause (``DEBOUNCE_MS``) the page POSTs it to ``/api/attention`` with
``"encoding": "b64"`` (each head's lower triangle as uint16, the heads.html encoding) and redraws: the tokens,
every layer's and head's pattern (thumbnails; click one to select it, tick "ablate" to zero-ablate it), the
selected head's pattern large, what the clicked token attends to and what attends to it, the per-head metrics
and logit attributions on this text, the top next-token predictions (with and without the ablations) and the
logit lens. Each update stores its timings in ``window.lastUpdate`` (input event -> drawn, request, render),
which bench/heads_bench.py reads; ``body[data-updated]`` counts the updates drawn.
"""

from __future__ import annotations

import html
import json

from .page_common import BASE_CSS, PATTERN_JS

DEBOUNCE_MS = 100


def page(info: dict) -> str:
    """The page for a model described by ``LiveModel.info()``."""
    blob = json.dumps({**info, "debounce_ms": DEBOUNCE_MS}, separators=(",", ":")).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", html.escape(str(info.get("title", "heads")))).replace(
        "__INFO__", blob
    )


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__ (live)</title>
<style>
__BASE_CSS__main{display:grid;grid-template-columns:minmax(440px,1.1fr) minmax(380px,1fr);gap:12px;padding:10px 14px}
textarea{width:100%;box-sizing:border-box;height:90px;font:13px ui-monospace,Menlo,Consolas,monospace}
#status{font-size:12px;color:#555;min-height:16px}
#notice{font-size:12px;color:#b71c1c;font-weight:600;min-height:0}
#notice:empty{display:none}
#error{font-size:12px;color:#b71c1c}
#tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;max-height:220px;
  overflow:auto;border:1px solid #eee;padding:4px}
#grid{display:grid;gap:4px;align-items:start}
#grid .cell{text-align:center;font-size:10px;color:#555}
#grid canvas{width:100%;image-rendering:pixelated;border:2px solid transparent;cursor:pointer;display:block}
#grid .cell.ablated canvas{opacity:0.35}
#grid label{cursor:pointer;user-select:none}
#big{width:100%;max-width:380px;image-rendering:pixelated;border:1px solid #ccc;display:block}
th{background:#f5f5f5;position:sticky;top:0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.scroll{max-height:260px;overflow:auto}
#metrics td,#metrics th{padding:2px 4px}
#metrics tbody tr{cursor:pointer}
#preds li,#preds-clean li{font-family:ui-monospace,Menlo,Consolas,monospace;list-style:none;white-space:pre}
#preds ol,#preds-clean ol{padding:0;margin:0}
.bar{display:inline-block;height:9px;background:#1976d2;vertical-align:middle;margin-right:6px}
#preds-clean .bar{background:#90a4ae}
small{color:#666;font-weight:normal}
</style></head>
<body>
<header><h1 id="title"></h1><div class="info" id="info"></div></header>
<main>
<div>
  <section>
    <h2>Text <small>(type or paste; the model runs on the server after a short pause)</small></h2>
    <textarea id="text" spellcheck="false" placeholder="type here"></textarea>
    <div id="notice"></div>
    <div id="status">loading</div>
    <div id="error"></div>
  </section>
  <section>
    <h2>Tokens <small>(click one: what it attends to and what attends to it, in the selected head)</small></h2>
    <div id="tokens"></div>
  </section>
  <section>
    <h2 id="sel-title">Selected token</h2>
    <div class="cols">
      <div><b>attends to</b><div class="scroll"><table id="attends-to"></table></div></div>
      <div><b>attended by</b><div class="scroll"><table id="attended-by"></table></div></div>
    </div>
  </section>
  <section>
    <h2>Next token <small>(after the whole text; ablated heads are zeroed at hook_z)</small></h2>
    <div class="cols"><div id="preds"></div><div id="preds-clean"></div></div>
  </section>
  <section>
    <h2>Metrics and direct logit attribution per head, on this text <small>(click a row to select)</small></h2>
    <div class="scroll"><table id="metrics"></table></div>
  </section>
</div>
<div>
  <section>
    <h2 id="big-title">Pattern</h2>
    <canvas id="big"></canvas>
  </section>
  <section>
    <h2>All heads <small>(rows: layers; click to select; tick to ablate)</small></h2>
    <div id="grid"></div>
  </section>
  <section>
    <h2>Logit lens <small>(residual after each layer through ln_f and the unembedding)</small></h2>
    <table id="lens"></table>
  </section>
</div>
</main>
<script id="info-data" type="application/json">__INFO__</script>
<script>
"use strict";
const INFO = JSON.parse(document.getElementById("info-data").textContent);
const L = INFO.n_layer, H = INFO.n_head, KV = INFO.n_kv_head;
const state = {layer: 0, head: 0, query: null, ablated: new Set(), data: null, tris: null, seq: 0, drawn: 0};
let timer = null, controller = null, tInput = 0, updates = 0;
window.lastUpdate = null;

__PATTERN_JS__
function w(l, h, q, k) { return k > q ? 0 : state.tris[l * H + h][rowStart(q) + k]; }
function fmt(x) { return x === null || x === undefined ? "" : x.toFixed(4); }

function buildGrid() {
  const g = document.getElementById("grid");
  g.style.gridTemplateColumns = `26px repeat(${H}, minmax(0, 1fr))`;
  let s = `<div class="cell"></div>`;
  for (let h = 0; h < H; h++) s += `<div class="cell">h${h}${KV < H ? " kv" + Math.floor(h / (H / KV)) : ""}</div>`;
  for (let l = 0; l < L; l++) {
    s += `<div class="cell">L${l}</div>`;
    for (let h = 0; h < H; h++)
      s += `<div class="cell" id="cell-${l}-${h}"><canvas id="thumb-${l}-${h}" data-l="${l}" data-h="${h}" title="layer ${l} head ${h}"></canvas>` +
        `<label><input type="checkbox" class="ablate" data-l="${l}" data-h="${h}"> ablate</label></div>`;
  }
  g.innerHTML = s;
  g.querySelectorAll("canvas").forEach(c => c.onclick = () => select(+c.dataset.l, +c.dataset.h));
  g.querySelectorAll("input.ablate").forEach(cb => cb.onchange = () => {
    const key = `${cb.dataset.l},${cb.dataset.h}`;
    if (cb.checked) state.ablated.add(key); else state.ablated.delete(key);
    document.getElementById(`cell-${cb.dataset.l}-${cb.dataset.h}`).classList.toggle("ablated", cb.checked);
    tInput = performance.now(); clearTimeout(timer); request();
  });
}

function onInput() {
  tInput = performance.now();
  clearTimeout(timer);
  timer = setTimeout(request, INFO.debounce_ms);
}

async function request() {
  const text = document.getElementById("text").value;
  if (!text) { document.getElementById("status").textContent = "waiting for text"; return; }
  const my = ++state.seq;
  if (controller) controller.abort();
  controller = new AbortController();
  const ablate = [...state.ablated].map(k => k.split(",").map(Number));
  const t0 = performance.now();
  let res, data;
  try {
    res = await fetch("/api/attention", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({text, ablate, encoding: "b64", top_k: 10}), signal: controller.signal});
    data = await res.json();
  } catch (e) {
    if (e.name === "AbortError") return;
    document.getElementById("error").textContent = `the server did not answer: ${e}`; return;
  }
  if (my !== state.seq) return;  // a newer request is on its way
  if (!res.ok) { document.getElementById("error").textContent = data.error || `error ${res.status}`; return; }
  document.getElementById("error").textContent = "";
  const t1 = performance.now();
  render(data);
  const t2 = performance.now();
  const u = {seq: my, input_to_drawn_ms: t2 - tInput, request_ms: t1 - t0, render_ms: t2 - t1,
             server_ms: data.timing_ms.total, debounce_ms: INFO.debounce_ms, n_tokens: data.n_tokens};
  requestAnimationFrame(() => {  // the frame with the new drawing
    u.input_to_painted_ms = performance.now() - tInput;
    window.lastUpdate = u;
    document.body.dataset.updated = String(++updates);
  });
}

function render(d) {
  state.data = d;
  state.tris = d.patterns_b64.map(decodeTri);
  const T = d.n_tokens;
  document.getElementById("notice").textContent = d.notice || "";
  document.getElementById("status").textContent =
    `${T} tokens \u00b7 ${d.timing_ms.total.toFixed(0)} ms on the server` +
    (d.ablate.length ? ` \u00b7 ablated: ${d.ablate.map(([l, h]) => `L${l}H${h}`).join(", ")}` : "");
  if (state.query === null || state.query >= T) state.query = T - 1;
  const box = document.getElementById("tokens");
  box.innerHTML = d.tokens.map((t, i) => `<span class="tok" data-i="${i}" title="#${i} id ${d.ids[i]}">${escapeHtml(t)}</span>` +
    (t.endsWith("\u21b5") ? "<br>" : "")).join("");
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++)
    drawTri(document.getElementById(`thumb-${l}-${h}`), state.tris[l * H + h], T, 64);
  renderPreds(d);
  renderMetrics(d);
  renderLens(d);
  select(state.layer, state.head);
}

function predList(title, ps, id) {
  const max = Math.max(...ps.map(p => p.prob), 1e-9);
  return `<b>${title}</b><ol>` + ps.map(p => `<li data-token="${escapeHtml(p.token)}" data-id="${p.id}" data-prob="${p.prob}">` +
    `<span class="bar" style="width:${Math.round(80 * p.prob / max)}px"></span>${p.prob.toFixed(4)}  ${escapeHtml(JSON.stringify(p.token))}</li>`).join("") + "</ol>";
}
function renderPreds(d) {
  document.getElementById("preds").innerHTML = predList(d.ablate.length ? "with the ablations" : "predicted", d.predictions);
  document.getElementById("preds-clean").innerHTML = d.predictions_clean ? predList("without them", d.predictions_clean) : "";
}

function renderMetrics(d) {
  const names = Object.keys(d.metrics);
  const cols = ["layer", "head", ...names, "dla", "dla_last"];
  let s = "<thead><tr>" + cols.map(c => `<th>${c === "dla_last" ? "dla \u2192 " + escapeHtml(JSON.stringify(d.dla_last.token)) : c}</th>`).join("") + "</tr></thead><tbody>";
  let dmax = 1e-9;
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) dmax = Math.max(dmax, Math.abs(d.dla[l][h] ?? 0), Math.abs(d.dla_last.heads[l][h] ?? 0));
  const shade = v => v === null ? "" : `background:${v >= 0 ? `rgba(46,125,50,${Math.abs(v) / dmax})` : `rgba(198,40,40,${Math.abs(v) / dmax})`}`;
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
    s += `<tr data-l="${l}" data-h="${h}"><td>${l}</td><td>${h}${state.ablated.has(`${l},${h}`) ? " \u2715" : ""}</td>` +
      names.map(n => `<td data-m="${n}" data-v="${d.metrics[n][l][h] ?? ""}">${d.metrics[n][l][h] === null ? "" : d.metrics[n][l][h].toFixed(3)}</td>`).join("") +
      `<td data-m="dla" data-v="${d.dla[l][h] ?? ""}" style="${shade(d.dla[l][h])}">${d.dla[l][h] === null ? "" : d.dla[l][h].toFixed(3)}</td>` +
      `<td data-m="dla_last" data-v="${d.dla_last.heads[l][h]}" style="${shade(d.dla_last.heads[l][h])}">${d.dla_last.heads[l][h].toFixed(3)}</td></tr>`;
  }
  const tb = document.getElementById("metrics");
  tb.innerHTML = s + "</tbody>";
  tb.querySelectorAll("tbody tr").forEach(tr => tr.onclick = () => select(+tr.dataset.l, +tr.dataset.h));
}

function renderLens(d) {
  document.getElementById("lens").innerHTML = d.logit_lens.length ?
    "<thead><tr><th>after</th><th>loss</th><th>mean rank</th><th>top-1</th></tr></thead><tbody>" +
    d.logit_lens.map(r => `<tr><td>${r.layer === "embed" ? "embeddings" : "layer " + r.layer}</td><td>${r.loss.toFixed(3)}</td>` +
      `<td>${r.rank.toFixed(1)}</td><td>${r.top1.toFixed(3)}</td></tr>`).join("") + "</tbody>" : "";
}

function select(l, h) {
  state.layer = l; state.head = h;
  document.querySelectorAll("#grid canvas").forEach(c => c.classList.toggle("sel", +c.dataset.l === l && +c.dataset.h === h));
  document.querySelectorAll("#metrics tbody tr").forEach(tr => tr.classList.toggle("sel", +tr.dataset.l === l && +tr.dataset.h === h));
  if (!state.data) return;
  document.getElementById("big-title").textContent = `Pattern: layer ${l}, head ${h}` + (KV < H ? ` (kv head ${Math.floor(h / (H / KV))})` : "");
  drawTri(document.getElementById("big"), state.tris[l * H + h], state.data.n_tokens, 380);
  setQuery(state.query);
}

function setQuery(q) {
  const d = state.data, T = d.n_tokens, l = state.layer, h = state.head;
  state.query = q;
  document.querySelectorAll("#tokens .tok").forEach(s => {
    const k = +s.dataset.i;
    s.classList.toggle("query", k === q);
    const v = k <= q ? w(l, h, q, k) : 0;
    s.style.background = k <= q ? `rgba(33,150,243,${Math.sqrt(v)})` : "";
  });
  document.getElementById("sel-title").textContent = `Token #${q} ${JSON.stringify(d.tokens[q])} in layer ${l}, head ${h}`;
  const row = (k, v, dir) => `<tr><td>${k}</td><td class="tokcell">${escapeHtml(showSpaces(d.tokens[k]))}</td>` +
    `<td class="wcell" data-dir="${dir}" data-layer="${l}" data-head="${h}" data-q="${dir === "to" ? q : k}" data-k="${dir === "to" ? k : q}" data-w="${fmt(v)}">${fmt(v)}</td></tr>`;
  const to = [], by = [];
  for (let k = 0; k <= q; k++) to.push([k, w(l, h, q, k)]);
  for (let i = q; i < T; i++) by.push([i, w(l, h, i, q)]);
  to.sort((a, b) => b[1] - a[1]); by.sort((a, b) => b[1] - a[1]);
  const head = "<thead><tr><th>#</th><th>token</th><th>weight</th></tr></thead><tbody>";
  document.getElementById("attends-to").innerHTML = head + to.map(([k, v]) => row(k, v, "to")).join("") + "</tbody>";
  document.getElementById("attended-by").innerHTML = head + by.map(([k, v]) => row(k, v, "by")).join("") + "</tbody>";
}

document.getElementById("title").textContent = `${INFO.title} \u2014 live`;
document.getElementById("info").textContent =
  `${L} layers x ${H} heads` + (KV < H ? ` (${KV} kv heads)` : "") + ` \u00b7 ${INFO.position} positions \u00b7 context ` +
  `${INFO.block_size} tokens (texts are cut at ${INFO.max_tokens}) \u00b7 tokenizer ${INFO.tokenizer}` +
  Object.entries(INFO.info || {}).map(([k, v]) => ` \u00b7 ${k}: ${v}`).join("");
buildGrid();
document.getElementById("text").addEventListener("input", onInput);
if (INFO.sample_text) {  // open with a text (the start of the run's val text), not an empty page
  document.getElementById("text").value = INFO.sample_text;
  tInput = performance.now(); request();
} else document.getElementById("status").textContent = "waiting for text";
document.getElementById("tokens").addEventListener("click", e => { const i = e.target.dataset.i; if (i !== undefined) setQuery(+i); });
document.body.dataset.ready = "1";
</script>
</body></html>
"""
_TEMPLATE = _TEMPLATE.replace("__BASE_CSS__", BASE_CSS).replace("__PATTERN_JS__", PATTERN_JS)
