"use strict";
// The live comparison viewer (heads.py run=<A> compare=<B> serve=true): one text box drives both models through
// POST /api/compare. The drawing and the choice of the pair are compare_common.js's.
const INFO = JSON.parse(document.getElementById("info-data").textContent);
const SIDES = [INFO.a, INFO.b];
let D = {tokens: [], T: 0, sides: SIDES, pairs: [], similarity: null}, tris = [[], []], R = null;
const state = {a: [0, 0], b: null, query: null, ablated: [new Set(), new Set()]};
const post = makeLatestPost("/api/compare");
let timer = null, updates = 0;

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

async function request() {
  const text = document.getElementById("text").value;
  if (!text) { document.getElementById("status").textContent = "waiting for text"; return; }
  const pairs = set => [...set].map(k => k.split(",").map(Number));
  const data = await post({text, ablate: pairs(state.ablated[0]), ablate_b: pairs(state.ablated[1]), encoding: "b64", top_k: 8});
  if (!data) return;
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
  document.getElementById("tokens").innerHTML = D.tokens.map((t, i) => tokenSpanHtml(t, i, `#${i}`)).join("");
  for (const side of [0, 1]) for (let l = 0; l < SIDES[side].n_layer; l++) for (let h = 0; h < SIDES[side].n_head; h++)
    drawTri(document.getElementById(`thumb-${side}-${l}-${h}`), tris[side][l * SIDES[side].n_head + h], T, 48);
  renderPreds(r);
  renderPairs(r);
  select(state.a, state.b);
}

function renderPreds(r) {
  for (const [side, x] of [[0, r.a], [1, r.b]]) {
    const name = side ? "B" : "A";
    document.getElementById(side ? "preds-b" : "preds-a").innerHTML =
      predList(x.ablate.length ? `${name}, ablated ${x.ablate.map(([l, h]) => headName(l, h)).join(", ")}` : name, x.predictions, 60) +
      (x.predictions_clean ? predList(`${name} without the ablations`, x.predictions_clean, 60) : "");
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
  const p = choosePair(a, b);
  if (!R) return;  // no text analysed yet
  drawPair(p, "similarity on this text", 300);
  setQuery(state.query);
}

document.getElementById("title").textContent = `${INFO.a.title} (A) vs ${INFO.b.title} (B) \u2014 live`;
document.getElementById("info").innerHTML = [["A", INFO.a], ["B", INFO.b]].map(([n, S]) =>
  `<div>${n}: ${S.n_layer} layers x ${S.n_head} heads${S.n_kv_head < S.n_head ? ` (${S.n_kv_head} kv heads)` : ""} \u00b7 ${escapeHtml(S.position)} positions` +
  escapeHtml(Object.entries(S.info || {}).map(([k, v]) => ` \u00b7 ${k}: ${v}`).join("")) + "</div>").join("") +
  `<div>heads matched by ${INFO.method === "position" ? "position" : "pattern similarity on the typed text"}; texts are cut at ${INFO.max_tokens} tokens</div>`;
buildPickers();
buildGrid(0); buildGrid(1);
document.getElementById("text").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(request, INFO.debounce_ms); });
document.getElementById("tokens").addEventListener("click", e => { const i = e.target.dataset.i; if (i !== undefined && R) setQuery(+i); });
if (INFO.a.sample_text) {  // open with A's sample text (the start of its val text), as the one-model page
  document.getElementById("text").value = INFO.a.sample_text;
  request();
}
document.body.dataset.ready = "1";
