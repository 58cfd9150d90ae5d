"""What the two head pages share (heads.html and the live viewer): the base style and the pattern drawing.

Patterns travel as the lower triangle of each head's (T, T) weights, uint16 little-endian (weight * 65535),
base64-encoded: T (T + 1) / 2 numbers per head. ``PATTERN_JS`` decodes one and draws it on a canvas.
"""

BASE_CSS = r"""body{font:13px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:8px 14px;background:#263238;color:#eceff1}
header h1{font-size:16px;margin:0 0 2px 0}
header .info{font-size:12px;color:#b0bec5}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin-bottom:10px}
h2{font-size:13px;margin:0 0 6px 0;color:#37474f}
.tok{cursor:pointer;border-radius:2px;padding:1px 0;white-space:pre;display:inline-block;min-width:0.5em}
.tok.query{outline:2px solid #d32f2f}
table{border-collapse:collapse;font-size:12px}
td,th{border-bottom:1px solid #eee;padding:2px 6px;text-align:right}
td.tokcell{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre}
#metrics tr.sel{background:#fff3cd}
#grid canvas.sel{border-color:#d32f2f}
"""

PATTERN_JS = r"""function rowStart(i) { return i * (i + 1) / 2; }
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
      const v = Math.round(255 * (1 - Math.sqrt(m)));
      img.data[o] = v; img.data[o + 1] = v; img.data[o + 2] = 255; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}
"""
