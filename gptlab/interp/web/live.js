"use strict";
const INFO = JSON.parse(document.getElementById("info-data").textContent);
const L = INFO.n_layer, H = INFO.n_head, KV = INFO.n_kv_head;
const state = {layer: 0, head: 0, query: null, ablated: new Set(), data: null, tris: new Map(), drawn: 0};
const post = makeLatestPost("/api/attention");
let timer = null, tInput = 0, updates = 0, strip = null, bigView = null, toRows = null, byRows = null;
window.lastUpdate = null;

// Head (l, h)'s lower triangle, decoded when first needed; null when the answer did not bring it (a long text
// brings only the selected head's: selecting another asks the server again, which answers from its cache).
function tri(l, h) {
  const key = `${l},${h}`, d = state.data;
  if (!state.tris.has(key)) {
    if (!d || !(key in d.patterns_page)) return null;
    state.tris.set(key, decodePattern(d.patterns_page[key], d.pattern_encoding, d.n_tokens));
  }
  return state.tris.get(key);
}
function w(l, h, q, k) { return k > q ? 0 : tri(l, h)[rowStart(q) + k]; }
const fmt = fmtWeight;

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
  const ablate = [...state.ablated].map(k => k.split(",").map(Number));
  const t0 = performance.now();
  const data = await post({text, ablate, encoding: "page", heads: [[state.layer, state.head]], top_k: 10});
  if (!data) return;
  const t1 = performance.now();
  render(data);
  const t2 = performance.now();
  const u = {seq: post.seq, input_to_drawn_ms: t2 - tInput, request_ms: t1 - t0, render_ms: t2 - t1,
             server_ms: data.timing_ms.total, debounce_ms: INFO.debounce_ms, n_tokens: data.n_tokens};
  requestAnimationFrame(() => {  // the frame with the new drawing
    u.input_to_painted_ms = performance.now() - tInput;
    window.lastUpdate = u;
    document.body.dataset.updated = String(++updates);
  });
}

function render(d) {
  state.data = d;
  state.tris = new Map();
  const T = d.n_tokens;
  document.getElementById("notice").textContent = d.notice || "";
  document.getElementById("status").textContent =
    `${T} tokens \u00b7 ${d.timing_ms.total.toFixed(0)} ms on the server` +
    (d.ablate.length ? ` \u00b7 ablated: ${d.ablate.map(([l, h]) => `L${l}H${h}`).join(", ")}` : "");
  if (state.query === null || state.query >= T) state.query = T - 1;
  strip.set(d.tokens);
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++)
    drawThumb(document.getElementById(`thumb-${l}-${h}`), d.thumbs[l * H + h]);
  renderPreds(d);
  renderMetrics(d);
  renderLens(d);
  select(state.layer, state.head);
}

function renderPreds(d) {
  document.getElementById("preds").innerHTML = predList(d.ablate.length ? "with the ablations" : "predicted", d.predictions, 80);
  document.getElementById("preds-clean").innerHTML = d.predictions_clean ? predList("without them", d.predictions_clean, 80) : "";
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

function renderLens(d) { document.getElementById("lens").innerHTML = lensTableHtml(d.logit_lens); }

function select(l, h) {
  state.layer = l; state.head = h;
  document.querySelectorAll("#grid canvas").forEach(c => c.classList.toggle("sel", +c.dataset.l === l && +c.dataset.h === h));
  document.querySelectorAll("#metrics tbody tr").forEach(tr => tr.classList.toggle("sel", +tr.dataset.l === l && +tr.dataset.h === h));
  if (!state.data) return;
  document.getElementById("big-title").textContent = `Pattern: layer ${l}, head ${h}` + (KV < H ? ` (kv head ${Math.floor(h / (H / KV))})` : "");
  const t = tri(l, h);
  if (!t) {  // not in this answer: ask for it (same text, so the server only encodes it)
    document.getElementById("status").textContent = `loading the pattern of L${l}H${h}\u2026`;
    tInput = performance.now(); clearTimeout(timer); request(); return;
  }
  bigView.set(t, state.data.n_tokens);
  setQuery(state.query);
}

function setQuery(q) {
  const d = state.data, T = d.n_tokens, l = state.layer, h = state.head;
  state.query = q;
  if (!tri(l, h)) return;  // the selected head's pattern is on its way; its answer redraws with this query
  strip.repaint();
  bigView.show(q);
  document.getElementById("sel-title").textContent = `Token #${q} ${JSON.stringify(d.tokens[q])} in layer ${l}, head ${h}`;
  const row = (k, v, dir) => `<tr><td>${k}</td><td class="tokcell">${escapeHtml(showSpaces(d.tokens[k]))}</td>` +
    `<td class="wcell" data-dir="${dir}" data-layer="${l}" data-head="${h}" data-q="${dir === "to" ? q : k}" data-k="${dir === "to" ? k : q}" data-w="${fmt(v)}">${fmt(v)}</td></tr>`;
  const to = [], by = [];
  for (let k = 0; k <= q; k++) to.push([k, w(l, h, q, k)]);
  for (let i = q; i < T; i++) by.push([i, w(l, h, i, q)]);
  to.sort((a, b) => b[1] - a[1]); by.sort((a, b) => b[1] - a[1]);
  const head = "<thead><tr><th>#</th><th>token</th><th>weight</th></tr></thead>";
  toRows.set(head, to.length, i => row(to[i][0], to[i][1], "to"));
  byRows.set(head, by.length, i => row(by[i][0], by[i][1], "by"));
}

document.getElementById("title").textContent = `${INFO.title} \u2014 live`;
document.getElementById("info").textContent =
  `${L} layers x ${H} heads` + (KV < H ? ` (${KV} kv heads)` : "") + ` \u00b7 ${INFO.position} positions \u00b7 context ` +
  `${INFO.block_size} tokens (texts are cut at ${INFO.max_tokens}) \u00b7 tokenizer ${INFO.tokenizer}` +
  Object.entries(INFO.info || {}).map(([k, v]) => ` \u00b7 ${k}: ${v}`).join("");
// a token's shade: how much the clicked token attends to it in the selected head
function paintToken(s, k) {
  const q = state.query, t = tri(state.layer, state.head);
  if (q === null || !t) return;
  s.classList.toggle("query", k === q);
  s.style.background = k <= q ? weightColor(w(state.layer, state.head, q, k)) : "";
}
strip = makeTokenStrip(document.getElementById("tokens"), i => `#${i} id ${state.data.ids[i]}`, paintToken);
bigView = makePatternView(document.getElementById("big"), 380, null, document.getElementById("big-window"));
const tableRows = id => makeVirtualRows(document.getElementById(id).parentElement, document.getElementById(id));
toRows = tableRows("attends-to"); byRows = tableRows("attended-by");
buildGrid();
document.getElementById("text").addEventListener("input", onInput);
if (INFO.sample_text) {  // open with a text (the start of the run's val text), not an empty page
  document.getElementById("text").value = INFO.sample_text;
  tInput = performance.now(); request();
} else document.getElementById("status").textContent = "waiting for text";
document.getElementById("tokens").addEventListener("click", e => { const i = e.target.dataset.i; if (i !== undefined) setQuery(+i); });
document.body.dataset.ready = "1";
