"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const L = D.n_layer, H = D.n_head, T = D.T, KV = D.n_kv_head, GROUP = H / KV;
const cache = new Map();  // decoded patterns, the most recently used last
const CACHE_MAX = Math.max(8, H + 2);  // an overlay needs every head of a layer
const state = {layer: D.initial.layer, head: D.initial.head, query: null, pinned: false};
let strip = null, bigView = null, weightRows = null;

function kvOf(h) { return Math.floor(h / GROUP); }
function hc(h, a) { return headColor(h, H, a); }
// Lower triangle of head (l, h), decoded when first needed; the least recently used ones are dropped.
function tri(l, h) {
  const key = l * H + h;
  let t = cache.get(key);
  if (t) { cache.delete(key); cache.set(key, t); return t; }
  t = decodePattern(D.patterns[key], D.encoding, T);
  cache.set(key, t);
  if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value);
  return t;
}
function w(l, h, q, k) { return k > q ? 0 : tri(l, h)[rowStart(q) + k]; }
const fmt = fmtWeight;

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
    `<span><i class="swatch" style="background:${hc(h, 1)}"></i>h${h}</span>`);
}

// A token's look for the current query: shaded by its weight (the strongest head's colour in an overlay).
function paintToken(s, k) {
  const q = state.query;
  if (q === null) return;
  const l = state.layer, hs = heads();
  s.classList.toggle("query", k === q); s.classList.toggle("future", k > q);
  if (k > q) { s.style.background = ""; s.removeAttribute("data-w"); s.title = `#${k}`; return; }
  let best = 0, bh = hs[0];
  for (const h of hs) { const v = w(l, h, q, k); if (v > best) { best = v; bh = h; } }
  s.style.background = hs.length === 1 ? weightColor(best) : hc(bh, Math.sqrt(best));
  s.dataset.w = fmt(best);
  s.title = `#${k}  ` + hs.map(h => `h${h}: ${fmt(w(l, h, q, k))}`).join("  ");
}

function buildTokens() {
  const box = document.getElementById("tokens");
  strip = makeTokenStrip(box, i => `#${i}`, paintToken);
  strip.set(D.tokens);
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
  for (let l = 0; l < L; l++) {
    g.insertAdjacentHTML("beforeend", `<div class="lab">L${l}</div>`);
    for (let h = 0; h < H; h++) {
      const c = document.createElement("canvas");
      c.id = `thumb-${l}-${h}`; c.title = `layer ${l} head ${h}`;
      if (KV < H) c.style.borderBottomColor = `hsl(${Math.round(360 * kvOf(h) / KV)},60%,55%)`;
      c.onclick = () => select(l, h);
      g.appendChild(c);
      drawThumb(c, D.thumbs[l * H + h]);
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
  const bh = h === "all" ? 0 : h;
  document.getElementById("big-title").textContent = `Pattern: layer ${l}, head ${bh}` +
    (KV < H ? ` (kv head ${kvOf(bh)})` : "") + (h === "all" ? " \u2014 overlay selected, showing head 0" : "");
  bigView.set(tri(l, bh), T);
  markSelected();
  drawComposition();
  if (state.query === null) state.query = Math.min(T - 1, Math.max(0, Math.floor(T / 2)));
  setQuery(state.query);
}

function heads() { return state.head === "all" ? [...Array(H).keys()] : [state.head]; }

function setQuery(q) {
  state.query = q;
  const l = state.layer, hs = heads();
  strip.repaint();
  bigView.show(q);
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
      ctx.fillStyle = hs.length === 1 ? "#1976d2" : hc(h, 0.9);
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
  const head = "<thead><tr><th>key</th><th>token</th>" +
    hs.map(h => `<th style="color:${hc(h, 1)}">h${h}</th>`).join("") + "</tr></thead>";
  weightRows.set(head, q + 1, i => {  // row i: key q - i (the nearest first)
    const k = q - i;
    return `<tr><td>${k}</td><td class="tokcell">${escapeHtml(showSpaces(D.tokens[k]))}</td>` + hs.map(h => {
      const v = fmt(w(l, h, q, k));
      return `<td class="wcell" data-layer="${l}" data-head="${h}" data-q="${q}" data-k="${k}" data-w="${v}">${v}</td>`;
    }).join("") + "</tr>";
  });
  // the strongest keys first, summed over the shown heads
  const tot = [];
  for (let k = 0; k <= q; k++) tot.push([k, hs.reduce((a, h) => a + w(l, h, q, k), 0) / hs.length]);
  tot.sort((a, b) => b[1] - a[1]);
  document.getElementById("top").textContent = "strongest: " +
    tot.slice(0, 5).map(([k, v]) => `#${k} "${D.tokens[k]}" ${fmt(v)}`).join("   ") + (hs.length > 1 ? "  (mean over heads)" : "");
}


function hoverBig(q, k) {
  const h = state.head === "all" ? 0 : state.head;
  document.getElementById("hoverinfo").textContent = k > q ? `query #${q}, key #${k}: masked (future)` :
    `query #${q} "${D.tokens[q]}" \u2192 key #${k} "${D.tokens[k]}": ${fmt(w(state.layer, h, q, k))}`;
}

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
function buildLens() { document.getElementById("lens").innerHTML = lensTableHtml(C.logit_lens); }

bigView = makePatternView(document.getElementById("big"), 512, hoverBig, document.getElementById("big-window"));
weightRows = makeVirtualRows(document.getElementById("weights-wrap"), document.getElementById("weights"));
buildControls(); buildTokens(); buildGrid(); buildMetrics(); buildCircuits(); buildLens(); buildTimeline();
select(state.layer, state.head);
document.body.dataset.ready = "1";
requestAnimationFrame(() => { window.loadedMs = performance.now(); });  // the first frame drawn (bench/heads_bench.py)
