"use strict";
// compare.html: two models' heads on one text (gptlab/interp/compare_page.py writes the data). The drawing and the
// choice of the pair are compare_common.js's.
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.T;
const tris = D.sides.map(s => s.patterns.map(decodeTri));
const state = {a: [D.initial.layer, D.initial.head], b: null, query: T - 1, pinned: false};

function buildHeader() {
  document.getElementById("title").textContent = D.title;
  const line = (label, S) => `${label}: ${S.name} \u00b7 ` + Object.entries(S.info).map(([k, v]) => `${k}: ${v}`).join(" \u00b7 ");
  document.getElementById("info").innerHTML = [line("A", D.sides[0]), line("B", D.sides[1]), D.matching_line, "text: " + D.text_info]
    .map(t => `<div>${escapeHtml(t)}</div>`).join("");
}

function buildTokens() {
  const box = document.getElementById("tokens");
  box.innerHTML = D.tokens.map((t, i) => tokenSpanHtml(t, i, `#${i}`)).join("");
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
  drawPair(choosePair(a, b), "similarity", 320);
  setQuery(state.query);
}

function hoverPattern(canvas) {
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
buildPickers();
buildGrid(0); buildGrid(1);
buildPairs(); buildSim(); buildScores();
["pa", "pb", "pd"].forEach(id => hoverPattern(document.getElementById(id)));
select(state.a);
document.body.dataset.ready = "1";
