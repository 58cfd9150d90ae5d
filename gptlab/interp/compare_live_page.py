"""The live viewer's page for two models (``heads.py run=<A> compare=<B> serve=true``): one text box drives both.

Self-contained like the one-model page (gptlab/interp/live_page.py; inline CSS and JS, it talks only to its server).
After a pause in typing it POSTs the text to ``/api/compare`` and redraws, side by side: the tokens (shaded by
A's head, underlined by B's), a head of A and a head of B (by default A's matched head) with their patterns and
their difference, the clicked query's weights in both, both models' next-token predictions (with and without
their ablations), the matched heads with their similarity and metric deltas on this text, and a grid of each
model's heads with an ablate box under each. ``body[data-updated]`` counts the updates drawn.
"""

from __future__ import annotations

import html
import json

from .compare_page import COMPARE_JS
from .live_page import DEBOUNCE_MS
from .page_common import BASE_CSS, PATTERN_JS


def compare_live_page(info: dict) -> str:
    """The page for the two models described by ``LiveCompare.info()``."""
    blob = json.dumps({**info, "debounce_ms": DEBOUNCE_MS}, separators=(",", ":")).replace("</", "<\\/")
    title = f"{info['a'].get('title', 'A')} vs {info['b'].get('title', 'B')}"
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__INFO__", blob)


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__ (live)</title>
<style>
__BASE_CSS__main{display:grid;grid-template-columns:minmax(460px,1.2fr) minmax(380px,1fr);gap:12px;padding:10px 14px}
textarea{width:100%;box-sizing:border-box;height:80px;font:13px ui-monospace,Menlo,Consolas,monospace}
#status,#pair-info,#hoverinfo{font-size:12px;color:#555;min-height:16px;font-family:ui-monospace,Menlo,Consolas,monospace}
#notice,#error{font-size:12px;color:#b71c1c;font-weight:600}
#tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;max-height:200px;
  overflow:auto;border:1px solid #eee;padding:4px}
.tok.future{color:#bbb}
.three{display:grid;grid-template-columns:repeat(3,1fr);gap:8px}
.three canvas{width:100%;image-rendering:pixelated;border:1px solid #ccc;display:block}
.three figure{margin:0;font-size:12px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.scroll{max-height:280px;overflow:auto}
th{background:#f5f5f5;position:sticky;top:0}
#pairs tbody tr{cursor:pointer}
#pairs tr.sel{background:#fff3cd}
.grid{display:grid;gap:3px;align-items:start}
.grid .cell{text-align:center;font-size:10px;color:#555}
.grid canvas{width:100%;image-rendering:pixelated;border:2px solid transparent;cursor:pointer;display:block}
.grid canvas.sel{border-color:#d32f2f}
.grid .cell.ablated canvas{opacity:0.35}
.preds li{font-family:ui-monospace,Menlo,Consolas,monospace;list-style:none;white-space:pre}
.preds ol{padding:0;margin:0}
.bar{display:inline-block;height:9px;background:#1976d2;vertical-align:middle;margin-right:6px}
small{color:#666;font-weight:normal}
</style></head>
<body>
<header><h1 id="title"></h1><div class="info" id="info"></div></header>
<main>
<div>
  <section>
    <h2>Text <small>(one text through both models, after a short pause)</small></h2>
    <textarea id="text" spellcheck="false" placeholder="type here"></textarea>
    <div id="notice"></div><div id="status">waiting for text</div><div id="error"></div>
  </section>
  <section>
    <h2>Tokens <small>(click one: the query; background = A's head, underline = B's)</small></h2>
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
  </section>
  <section>
    <h2 id="weights-title">The query's attention in both heads</h2>
    <div class="scroll"><table id="weights"></table></div>
  </section>
  <section>
    <h2>Next token <small>(after the whole text; ablated heads are zeroed at hook_z)</small></h2>
    <div class="cols"><div class="preds" id="preds-a"></div><div class="preds" id="preds-b"></div></div>
  </section>
</div>
<div>
  <section>
    <h2>Matched heads on this text <small>(click a row; deltas B minus A)</small></h2>
    <div class="scroll"><table id="pairs"></table></div>
  </section>
  <section>
    <h2>All heads <small>(click to select; tick to ablate)</small></h2>
    <div class="cols"><div><b>A</b><div class="grid" id="grid-a"></div></div><div><b>B</b><div class="grid" id="grid-b"></div></div></div>
  </section>
</div>
</main>
<script id="info-data" type="application/json">__INFO__</script>
<script>
"use strict";
const INFO = JSON.parse(document.getElementById("info-data").textContent);
const SIDES = [INFO.a, INFO.b];
let D = {tokens: [], T: 0, sides: SIDES, pairs: [], similarity: null}, tris = [[], []], R = null;
const state = {a: [0, 0], b: null, query: null, ablated: [new Set(), new Set()], seq: 0};
let timer = null, controller = null, updates = 0;
function D_tokens() { return D.tokens; }
__PATTERN_JS__
__COMPARE_JS__

function buildGrid(side) {
  const S = SIDES[side], g = document.getElementById(side ? "grid-b" : "grid-a");
  g.style.gridTemplateColumns = `22px repeat(${S.n_head}, minmax(0, 1fr))`;
  let s = `<div class="cell"></div>`;
  for (let h = 0; h < S.n_head; h++) s += `<div class="cell">h${h}</div>`;
  for (let l = 0; l < S.n_layer; l++) {
    s += `<div class="cell">L${l}</div>`;
    for (let h = 0; h < S.n_head; h++)
      s += `<div class="cell" id="cell-${side}-${l}-${h}"><canvas id="thumb-${side}-${l}-${h}" data-l="${l}" data-h="${h}"></canvas>` +
        `<label><input type="checkbox" class="ablate" data-side="${side}" data-l="${l}" data-h="${h}"> ablate</label></div>`;
  }
  g.innerHTML = s;
  g.querySelectorAll("canvas").forEach(c => c.onclick = () =>
    side ? select(state.a, [+c.dataset.l, +c.dataset.h]) : select([+c.dataset.l, +c.dataset.h]));
  g.querySelectorAll("input.ablate").forEach(cb => cb.onchange = () => {
    const key = `${cb.dataset.l},${cb.dataset.h}`, set = state.ablated[side];
    if (cb.checked) set.add(key); else set.delete(key);
    document.getElementById(`cell-${side}-${cb.dataset.l}-${cb.dataset.h}`).classList.toggle("ablated", cb.checked);
    clearTimeout(timer); request();
  });
}

function headOptions(sel, side) {
  const S = SIDES[side];
  for (let l = 0; l < S.n_layer; l++) for (let h = 0; h < S.n_head; h++) sel.add(new Option(headName(l, h), `${l},${h}`));
}

async function request() {
  const text = document.getElementById("text").value;
  if (!text) { document.getElementById("status").textContent = "waiting for text"; return; }
  const my = ++state.seq;
  if (controller) controller.abort();
  controller = new AbortController();
  const pairs = set => [...set].map(k => k.split(",").map(Number));
  let res, data;
  try {
    res = await fetch("/api/compare", {method: "POST", headers: {"Content-Type": "application/json"}, signal: controller.signal,
      body: JSON.stringify({text, ablate: pairs(state.ablated[0]), ablate_b: pairs(state.ablated[1]), encoding: "b64", top_k: 8})});
    data = await res.json();
  } catch (e) {
    if (e.name === "AbortError") return;
    document.getElementById("error").textContent = `the server did not answer: ${e}`; return;
  }
  if (my !== state.seq) return;
  if (!res.ok) { document.getElementById("error").textContent = data.error || `error ${res.status}`; return; }
  document.getElementById("error").textContent = "";
  render(data);
  requestAnimationFrame(() => { document.body.dataset.updated = String(++updates); });
}

function render(r) {
  R = r;
  D = {tokens: r.a.tokens, T: r.a.n_tokens, sides: SIDES, pairs: r.pairs, similarity: r.similarity};
  tris = [r.a.patterns_b64.map(decodeTri), r.b.patterns_b64.map(decodeTri)];
  const T = D.T;
  document.getElementById("notice").textContent = r.a.notice || "";
  document.getElementById("status").textContent = `${T} tokens \u00b7 ${r.timing_ms.total.toFixed(0)} ms on the server` +
    (r.mean_similarity === null ? " \u00b7 type two tokens or more to match heads" : ` \u00b7 mean similarity of the matched heads ${r.mean_similarity.toFixed(3)}`);
  if (state.query === null || state.query >= T) state.query = T - 1;
  document.getElementById("tokens").innerHTML = D.tokens.map((t, i) => `<span class="tok" data-i="${i}">${escapeHtml(t)}</span>` +
    (t.endsWith("\u21b5") ? "<br>" : "")).join("");
  for (const side of [0, 1]) for (let l = 0; l < SIDES[side].n_layer; l++) for (let h = 0; h < SIDES[side].n_head; h++)
    drawTri(document.getElementById(`thumb-${side}-${l}-${h}`), tris[side][l * SIDES[side].n_head + h], T, 48);
  renderPreds(r);
  renderPairs(r);
  select(state.a, state.b);
}

function predList(title, ps) {
  const max = Math.max(...ps.map(p => p.prob), 1e-9);
  return `<b>${title}</b><ol>` + ps.map(p => `<li data-token="${escapeHtml(p.token)}" data-prob="${p.prob}">` +
    `<span class="bar" style="width:${Math.round(60 * p.prob / max)}px"></span>${p.prob.toFixed(4)}  ${escapeHtml(JSON.stringify(p.token))}</li>`).join("") + "</ol>";
}
function renderPreds(r) {
  for (const [side, x] of [[0, r.a], [1, r.b]]) {
    const name = side ? "B" : "A";
    document.getElementById(side ? "preds-b" : "preds-a").innerHTML =
      predList(x.ablate.length ? `${name}, ablated ${x.ablate.map(([l, h]) => headName(l, h)).join(", ")}` : name, x.predictions) +
      (x.predictions_clean ? predList(`${name} without the ablations`, x.predictions_clean) : "");
  }
}

function renderPairs(r) {
  const names = Object.keys(r.a.metrics).filter(m => m in r.b.metrics);
  let s = "<thead><tr><th>A</th><th>B</th><th>similarity</th>" + names.map(m => `<th>${m} \u0394</th>`).join("") + "</tr></thead><tbody>";
  for (const [la, ha, lb, hb, sim] of r.pairs) {
    s += `<tr data-la="${la}" data-ha="${ha}" data-lb="${lb}" data-hb="${hb}"><td>${headName(la, ha)}</td><td>${headName(lb, hb)}</td><td>${sim.toFixed(3)}</td>` +
      names.map(m => {
        const a = r.a.metrics[m][la][ha], b = r.b.metrics[m][lb][hb];
        return a === null || b === null ? "<td></td>" : `<td data-m="${m}" data-v="${(b - a).toFixed(4)}">${b - a >= 0 ? "+" : ""}${(b - a).toFixed(3)}</td>`;
      }).join("") + "</tr>";
  }
  const tb = document.getElementById("pairs");
  tb.innerHTML = s + "</tbody>";
  tb.querySelectorAll("tbody tr").forEach(tr => tr.onclick = () => select([+tr.dataset.la, +tr.dataset.ha], [+tr.dataset.lb, +tr.dataset.hb]));
}

function select(a, b) {
  const p = partnerOf(a[0], a[1]);
  state.a = a;
  state.b = b || (p ? [p[0], p[1]] : bestOf(a[0], a[1]));
  document.getElementById("a-head").value = state.a.join(",");
  document.getElementById("b-head").value = state.b.join(",");
  document.querySelectorAll(".grid canvas").forEach(c => c.classList.remove("sel"));
  document.getElementById(`thumb-0-${state.a[0]}-${state.a[1]}`).classList.add("sel");
  document.getElementById(`thumb-1-${state.b[0]}-${state.b[1]}`).classList.add("sel");
  if (!R) return;
  const s = simAt(...state.a, ...state.b), matched = p && p[0] === state.b[0] && p[1] === state.b[1];
  document.getElementById("pair-info").textContent = `similarity on this text ${s === null ? "\u2014" : s.toFixed(3)} \u00b7 ` +
    (matched ? "the matched pair" : p ? `not matched (A's match is ${headName(p[0], p[1])})` : "no match");
  document.getElementById("pa-cap").textContent = `A ${headName(...state.a)}`;
  document.getElementById("pb-cap").textContent = `B ${headName(...state.b)}`;
  const ta = tris[0][state.a[0] * SIDES[0].n_head + state.a[1]], tb = tris[1][state.b[0] * SIDES[1].n_head + state.b[1]];
  drawTri(document.getElementById("pa"), ta, D.T, 300);
  drawTri(document.getElementById("pb"), tb, D.T, 300);
  drawDiff(document.getElementById("pd"), ta, tb, D.T, 300);
  document.querySelectorAll("#pairs tbody tr").forEach(tr => tr.classList.toggle("sel",
    tr.dataset.la === String(state.a[0]) && tr.dataset.ha === String(state.a[1]) && tr.dataset.lb === String(state.b[0]) && tr.dataset.hb === String(state.b[1])));
  setQuery(state.query);
}

function setQuery(q) {
  state.query = q;
  const a = state.a, b = state.b;
  document.querySelectorAll("#tokens .tok").forEach(s => {
    const k = +s.dataset.i;
    s.classList.toggle("query", k === q); s.classList.toggle("future", k > q);
    const wa = k <= q ? w(0, a[0], a[1], q, k) : 0, wb = k <= q ? w(1, b[0], b[1], q, k) : 0;
    s.style.background = k <= q ? `rgba(33,150,243,${Math.sqrt(wa)})` : "";
    s.style.boxShadow = k <= q ? `inset 0 -4px 0 rgba(245,124,0,${Math.sqrt(wb)})` : "";
  });
  document.getElementById("weights-title").textContent = `Query #${q} ${JSON.stringify(D.tokens[q])}: A ${headName(...a)} and B ${headName(...b)}`;
  document.getElementById("weights").innerHTML = rowTable(q, a, b);
}

document.getElementById("title").textContent = `${INFO.a.title} (A) vs ${INFO.b.title} (B) \u2014 live`;
document.getElementById("info").innerHTML = [["A", INFO.a], ["B", INFO.b]].map(([n, S]) =>
  `<div>${n}: ${S.n_layer} layers x ${S.n_head} heads${S.n_kv_head < S.n_head ? ` (${S.n_kv_head} kv heads)` : ""} \u00b7 ${escapeHtml(S.position)} positions` +
  escapeHtml(Object.entries(S.info || {}).map(([k, v]) => ` \u00b7 ${k}: ${v}`).join("")) + "</div>").join("") +
  `<div>heads matched by ${INFO.method === "position" ? "position" : "pattern similarity on the typed text"}; texts are cut at ${INFO.max_tokens} tokens</div>`;
headOptions(document.getElementById("a-head"), 0);
headOptions(document.getElementById("b-head"), 1);
document.getElementById("a-head").onchange = e => select(e.target.value.split(",").map(Number));
document.getElementById("b-head").onchange = e => select(state.a, e.target.value.split(",").map(Number));
document.getElementById("to-partner").onclick = () => select(state.a);
buildGrid(0); buildGrid(1);
document.getElementById("text").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(request, INFO.debounce_ms); });
document.getElementById("tokens").addEventListener("click", e => { const i = e.target.dataset.i; if (i !== undefined && R) setQuery(+i); });
if (INFO.a.sample_text) {  // open with A's sample text (the start of its val text), as the one-model page
  document.getElementById("text").value = INFO.a.sample_text;
  request();
}
document.body.dataset.ready = "1";
</script>
</body></html>
"""
_TEMPLATE = (
    _TEMPLATE.replace("__BASE_CSS__", BASE_CSS)
    .replace("__PATTERN_JS__", PATTERN_JS)
    .replace("__COMPARE_JS__", COMPARE_JS)
)
