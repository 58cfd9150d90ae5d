// What heads.html and the live viewer share: pattern decoding and drawing, token display, colour scales.
// Only function declarations and uniquely named constants at the top level: a page built in Python pastes this
// file into its own script (interp/page_common.py's PATTERN_JS).

function rowStart(i) { return i * (i + 1) / 2; }
function decodeTri(b64) {  // lower triangle, uint16 little-endian / 65535 -> Float32Array of T*(T+1)/2
  const bin = atob(b64), n = bin.length / 2, out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535;
  return out;
}
function showSpaces(t) { return t.replace(/ /g, "\u2423"); }  // in a table a space token is a visible \u2423, not a blank
function escapeHtml(t) { return t.replace(/[&<>"]/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[ch])); }

// Draw triangle t (T tokens) on a canvas of at most size x size pixels: white = 0, blue = 1 (sqrt scale).
// A pixel covering several cells shows their max, so sharp stripes survive downsampling.
function drawTri(canvas, t, T, size) {
  const n = Math.min(T, size), ctx = canvas.getContext("2d");
  canvas.width = n; canvas.height = n;
  const img = ctx.createImageData(n, n), s = T / n;
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const o = 4 * (y * n + x);
      if (x > y) { img.data[o] = img.data[o + 1] = img.data[o + 2] = 245; img.data[o + 3] = 255; continue; }
      let m = 0;
      for (let q = Math.floor(y * s); q < Math.floor((y + 1) * s); q++)
        for (let k = Math.floor(x * s); k < Math.min(Math.floor((x + 1) * s), q + 1); k++) m = Math.max(m, t[rowStart(q) + k]);
      const v = patternShade(m);
      img.data[o] = v; img.data[o + 1] = v; img.data[o + 2] = 255; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

// ---- colour scales (square root: weak weights stay visible)
function patternShade(m) { return Math.round(255 * (1 - Math.sqrt(m))); }  // red and green of a pattern cell; blue 255
function weightColor(v) { return `rgba(33,150,243,${Math.sqrt(v)})`; }  // a token's background for its weight
function headColor(h, nHeads, a) { return `hsla(${Math.round(360 * h / nHeads)},75%,45%,${a})`; }

// ---- token display
// One token of the text strip: a span with its position; a newline token also breaks the strip's line.
function tokenSpanHtml(t, i, title) {
  return `<span class="tok" data-i="${i}" title="${escapeHtml(title)}">${escapeHtml(t)}</span>` + (t.endsWith("\u21b5") ? "<br>" : "");
}
function fmtWeight(x) { return x === null || x === undefined ? "" : x.toFixed(4); }

// ---- the logit lens table: the loss, mean rank and top-1 accuracy after each layer
function lensTableHtml(rows) {
  if (!rows.length) return "";
  return "<thead><tr><th>after</th><th>loss</th><th>mean rank</th><th>top-1</th></tr></thead><tbody>" +
    rows.map(r => `<tr data-layer="${r.layer}"><td>${r.layer === "embed" ? "embeddings" : "layer " + r.layer}</td>` +
      `<td>${r.loss.toFixed(3)}</td><td>${r.rank.toFixed(1)}</td><td>${r.top1.toFixed(3)}</td></tr>`).join("") + "</tbody>";
}
