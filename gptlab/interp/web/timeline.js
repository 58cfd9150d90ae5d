"use strict";
// heads.html's timeline (interp/timeline.py): a slider over the kept steps and small multiples of the
// metrics over training. Uses heads.js's globals (D, L, H, T, cache, select, ...) when called.
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
  const base = {patterns: D.patterns, thumbs: D.thumbs, rows: D.rows}, n = tl.steps.length;
  const sl = document.getElementById("tl-slider"), label = document.getElementById("tl-label");
  sl.max = n; sl.value = n; sl.hidden = n === 0;
  const show = i => {
    const own = i >= n, step = own ? tl.report_step : tl.steps[i];
    D.patterns = own ? base.patterns : tl.patterns[i];
    D.thumbs = own ? base.thumbs : tl.thumbs[i];
    D.rows = own ? base.rows : tl.rows[i];
    cache.clear();
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++)
      drawThumb(document.getElementById(`thumb-${l}-${h}`), D.thumbs[l * H + h]);
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
