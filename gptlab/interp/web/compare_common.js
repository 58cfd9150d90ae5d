"use strict";
// What the two comparison pages (compare.html and the live comparison viewer, compare_live.html) share: a head
// of A beside a head of B, their difference, the query's weights in both and the similarity of every pair.
// Only functions at the top level; they read the page's globals when called: `D` ({tokens, T, sides:
// [{n_layer, n_head, n_kv_head}], pairs, similarity}), `tris[side][l * n_head + h]` (decoded lower triangles)
// and `state` ({a: [l, h], b: [l, h], query}), and call the page's own `select(a, b)`.

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
  let s = "<thead><tr><th>#</th><th>token</th><th>A " + headName(...a) + "</th><th>B " + headName(...b) +
    "</th><th>B \u2212 A</th></tr></thead><tbody>";
  for (let k = 0; k <= q; k++) {
    const wa = w(0, a[0], a[1], q, k), wb = w(1, b[0], b[1], q, k);
    const dd = Math.abs(wb - wa) < 5e-5 ? 0 : wb - wa;  // no "-0.0000"
    const cell = (side, l, h, v) => `<td class="wcell" data-side="${side}" data-layer="${l}" data-head="${h}" ` +
      `data-q="${q}" data-k="${k}" data-w="${fmt(v)}">${fmt(v)}</td>`;
    s += `<tr><td>${k}</td><td class="tokcell">${escapeHtml(D.tokens[k])}</td>` + cell("a", a[0], a[1], wa) +
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

// ---- the pickers: every head of A and of B ("L1H2", "(kv 0)" under GQA), and the button back to A's partner
function headOptions(sel, side) {
  const S = D.sides[side], G = S.n_head / S.n_kv_head;
  for (let l = 0; l < S.n_layer; l++) for (let h = 0; h < S.n_head; h++)
    sel.add(new Option(headName(l, h) + (S.n_kv_head < S.n_head ? ` (kv ${Math.floor(h / G)})` : ""), `${l},${h}`));
}
function buildPickers() {
  headOptions(document.getElementById("a-head"), 0);
  headOptions(document.getElementById("b-head"), 1);
  document.getElementById("a-head").onchange = e => select(e.target.value.split(",").map(Number));
  document.getElementById("b-head").onchange = e => select(state.a, e.target.value.split(",").map(Number));
  document.getElementById("to-partner").onclick = () => select(state.a);
}

// Make head a of A and head b of B the shown pair (b by default A's matched head, else its most similar one):
// the pickers, the outlined thumbnails (#thumb-<side>-<l>-<h>) and the highlighted row of #pairs. Returns A's
// partner ([l, h, similarity] or null).
function choosePair(a, b) {
  const p = partnerOf(a[0], a[1]);
  state.a = a;
  state.b = b || (p ? [p[0], p[1]] : bestOf(a[0], a[1]));
  document.getElementById("a-head").value = state.a.join(",");
  document.getElementById("b-head").value = state.b.join(",");
  document.querySelectorAll(".grid canvas").forEach(c => c.classList.remove("sel"));
  document.getElementById(`thumb-0-${state.a[0]}-${state.a[1]}`).classList.add("sel");
  document.getElementById(`thumb-1-${state.b[0]}-${state.b[1]}`).classList.add("sel");
  document.querySelectorAll("#pairs tbody tr").forEach(tr => tr.classList.toggle("sel",
    tr.dataset.la === String(state.a[0]) && tr.dataset.ha === String(state.a[1]) && tr.dataset.lb === String(state.b[0]) && tr.dataset.hb === String(state.b[1])));
  return p;
}

// Draw the chosen pair (A's partner p from choosePair): the line saying how similar they are and whether they are
// matched (`label` names the similarity), the captions, both patterns and B - A at most `size` pixels a side.
function drawPair(p, label, size) {
  const s = simAt(...state.a, ...state.b), matched = p && p[0] === state.b[0] && p[1] === state.b[1];
  const none = D.similarity ? "\u2014 (layers at other depths)" : "\u2014";
  document.getElementById("pair-info").textContent = `${label} ${s === null ? none : s.toFixed(3)} \u00b7 ` +
    (matched ? "the matched pair" : p ? `not matched (A's match is ${headName(p[0], p[1])})` : "A's head has no partner");
  document.getElementById("pa-cap").textContent = `A ${headName(...state.a)}`;
  document.getElementById("pb-cap").textContent = `B ${headName(...state.b)}`;
  const ta = tris[0][state.a[0] * D.sides[0].n_head + state.a[1]], tb = tris[1][state.b[0] * D.sides[1].n_head + state.b[1]];
  drawTri(document.getElementById("pa"), ta, D.T, size);
  drawTri(document.getElementById("pb"), tb, D.T, size);
  drawDiff(document.getElementById("pd"), ta, tb, D.T, size);
}

// Make q the query: each earlier token of #tokens is shaded by its weight in A's head (background) and
// underlined by its weight in B's (data-wa, data-wb), and the weights table shows the query's row in both.
function setQuery(q) {
  state.query = q;
  const a = state.a, b = state.b;
  document.querySelectorAll("#tokens .tok").forEach(s => {
    const k = +s.dataset.i;
    s.classList.toggle("query", k === q); s.classList.toggle("future", k > q);
    if (k > q) { s.style.background = ""; s.style.boxShadow = ""; delete s.dataset.wa; delete s.dataset.wb; return; }
    const wa = w(0, a[0], a[1], q, k), wb = w(1, b[0], b[1], q, k);
    s.dataset.wa = fmt(wa); s.dataset.wb = fmt(wb);
    s.style.background = weightColor(wa);  // A: the background
    s.style.boxShadow = `inset 0 -4px 0 rgba(245,124,0,${Math.sqrt(wb)})`;  // B: the underline
  });
  document.getElementById("weights-title").textContent =
    `Query #${q} ${JSON.stringify(D.tokens[q])}: attention of A ${headName(...a)} and B ${headName(...b)} (token background: A, underline: B)`;
  document.getElementById("weights").innerHTML = rowTable(q, a, b);
}
