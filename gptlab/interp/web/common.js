// What every head page shares (heads.html, the live viewer and both comparison pages): pattern decoding and
// drawing, token display, colour scales, next-token lists, the live pages' requests. Only function declarations
// and uniquely named constants at the top level: each page's own script comes after it in the same global scope.

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

// ---- next-token predictions: a titled list, each with a bar (the most likely `barPx` wide) and data-token/-id/-prob
function predList(title, ps, barPx) {
  const max = Math.max(...ps.map(p => p.prob), 1e-9);
  return `<b>${title}</b><ol>` + ps.map(p => `<li data-token="${escapeHtml(p.token)}" data-id="${p.id}" data-prob="${p.prob}">` +
    `<span class="bar" style="width:${Math.round(barPx * p.prob / max)}px"></span>${p.prob.toFixed(4)}  ${escapeHtml(JSON.stringify(p.token))}</li>`).join("") + "</ol>";
}

// ---- the live pages' requests: the latest one wins
// post(body) POSTs `body` as JSON to `url`, aborting the request before it. It resolves to the answer's JSON, or to
// null when the request was aborted, a newer one was sent meanwhile, or the answer is an error (then #error says
// why; a good answer empties it). post.seq counts the requests sent.
function makeLatestPost(url) {
  let controller = null;
  const post = async body => {
    const my = ++post.seq, err = document.getElementById("error");
    if (controller) controller.abort();
    controller = new AbortController();
    let res, data;
    try {
      res = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
        signal: controller.signal});
      data = await res.json();
    } catch (e) {
      if (e.name !== "AbortError") err.textContent = `the server did not answer: ${e}`;
      return null;
    }
    if (my !== post.seq) return null;  // a newer request is on its way
    if (!res.ok) { err.textContent = data.error || `error ${res.status}`; return null; }
    err.textContent = "";
    return data;
  };
  post.seq = 0;
  return post;
}

// ---- the logit lens table: the loss, mean rank and top-1 accuracy after each layer
function lensTableHtml(rows) {
  if (!rows.length) return "";
  return "<thead><tr><th>after</th><th>loss</th><th>mean rank</th><th>top-1</th></tr></thead><tbody>" +
    rows.map(r => `<tr data-layer="${r.layer}"><td>${r.layer === "embed" ? "embeddings" : "layer " + r.layer}</td>` +
      `<td>${r.loss.toFixed(3)}</td><td>${r.rank.toFixed(1)}</td><td>${r.top1.toFixed(3)}</td></tr>`).join("") + "</tbody>";
}

// ---- patterns as interp/pattern_codec.py sends them
function b64Bytes(b64) {
  const bin = atob(b64), n = bin.length, out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
  return out;
}
// One head's lower triangle (T tokens) -> Float32Array of T*(T+1)/2, from "u16" (every weight * 65535) or
// "u8" (T float32 row maxima, then each weight / its row's maximum * 255).
function decodePattern(b64, enc, T) {
  if (enc !== "u8") return decodeTri(b64);
  const bytes = b64Bytes(b64), scale = new Float32Array(bytes.buffer, 0, T), out = new Float32Array(T * (T + 1) / 2);
  for (let q = 0, o = 0; q < T; q++) {
    const s = scale[q] / 255, src = 4 * T + o;
    for (let k = 0; k <= q; k++) out[o + k] = bytes[src + k] * s;
    o += q + 1;
  }
  return out;
}
// A thumbnail: n x n bytes round(255 * sqrt(max weight)) (pattern_codec.thumbnail), cells above the diagonal grey.
function drawThumb(canvas, b64) {
  const b = b64Bytes(b64), n = Math.round(Math.sqrt(b.length)), ctx = canvas.getContext("2d");
  canvas.width = n; canvas.height = n;
  const img = ctx.createImageData(n, n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    const o = 4 * (y * n + x), v = x > y ? 245 : 255 - b[y * n + x];
    img.data[o] = v; img.data[o + 1] = v; img.data[o + 2] = x > y ? 245 : 255; img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// ---- the large pattern: a window of the (T, T) matrix
// Shows query rows q0..q0+n-1 and key columns k0..k0+n-1 on a canvas of at most `size` pixels a side; only the
// cells inside the window are read (a pixel covering several cells shows their max, as drawTri does). Wheel:
// zoom around the pointer; drag: pan; double-click: the whole matrix. onHover(q, k) gets the cell under the
// pointer. The canvas carries data-q0, data-k0, data-n; `caption` (an element) says what is shown.
function makePatternView(canvas, size, onHover, caption) {
  const v = {t: null, T: 0, q0: 0, k0: 0, n: 0, minN: 16};
  const clamp = () => {
    v.n = Math.max(Math.min(v.minN, v.T), Math.min(v.T, Math.round(v.n)));
    v.q0 = Math.max(0, Math.min(v.T - v.n, Math.round(v.q0)));
    v.k0 = Math.max(0, Math.min(v.T - v.n, Math.round(v.k0)));
  };
  v.draw = () => {
    if (!v.t) return;
    clamp();
    const t = v.t, n = v.n, m = Math.min(n, size), s = n / m, ctx = canvas.getContext("2d");
    canvas.width = m; canvas.height = m;
    const img = ctx.createImageData(m, m), d = img.data;
    for (let y = 0; y < m; y++) {
      const qa = v.q0 + Math.floor(y * s), qb = v.q0 + Math.floor((y + 1) * s);
      for (let x = 0; x < m; x++) {
        const ka = v.k0 + Math.floor(x * s), kb = v.k0 + Math.floor((x + 1) * s), o = 4 * (y * m + x);
        if (ka > qb - 1) { d[o] = d[o + 1] = d[o + 2] = 245; d[o + 3] = 255; continue; }  // all above the diagonal
        let mx = 0;
        for (let q = qa; q < qb; q++) {
          const r = rowStart(q), end = Math.min(kb, q + 1);
          for (let k = ka; k < end; k++) if (t[r + k] > mx) mx = t[r + k];
        }
        const c = patternShade(mx);
        d[o] = c; d[o + 1] = c; d[o + 2] = 255; d[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    canvas.dataset.q0 = v.q0; canvas.dataset.k0 = v.k0; canvas.dataset.n = n;
    if (caption) caption.textContent = n === v.T ? "" :
      `rows ${v.q0}\u2013${v.q0 + n - 1}, columns ${v.k0}\u2013${v.k0 + n - 1} of ${v.T} (double-click: all)`;
  };
  v.set = (t, T) => {  // a new pattern; the window stays where it is when the length is the same
    if (T !== v.T) { v.q0 = 0; v.k0 = 0; v.n = T; }
    v.t = t; v.T = T; v.draw();
  };
  v.show = q => {  // make query row q visible (zoomed in: move the window to it)
    if (v.n >= v.T || (q >= v.q0 && q < v.q0 + v.n)) return;
    v.q0 = q - v.n / 2; v.k0 = v.q0; v.draw();
  };
  const cell = e => {
    const r = canvas.getBoundingClientRect();
    const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
    return {fx, fy, q: v.q0 + Math.floor(fy * v.n), k: v.k0 + Math.floor(fx * v.n)};
  };
  let drag = null;
  canvas.addEventListener("wheel", e => {
    if (!v.t) return;
    e.preventDefault();
    const c = cell(e), n = v.n * (e.deltaY < 0 ? 1 / 1.5 : 1.5);
    const cq = v.q0 + c.fy * v.n, ck = v.k0 + c.fx * v.n;  // the cell under the pointer stays there
    v.n = n; clamp(); v.q0 = cq - c.fy * v.n; v.k0 = ck - c.fx * v.n; v.draw();
  }, {passive: false});
  canvas.addEventListener("mousedown", e => { drag = {x: e.clientX, y: e.clientY, q0: v.q0, k0: v.k0}; e.preventDefault(); });
  window.addEventListener("mouseup", () => { drag = null; });
  canvas.addEventListener("mousemove", e => {
    if (drag && v.n < v.T) {
      const r = canvas.getBoundingClientRect();
      v.q0 = drag.q0 - (e.clientY - drag.y) / r.height * v.n; v.k0 = drag.k0 - (e.clientX - drag.x) / r.width * v.n;
      v.draw(); return;
    }
    const c = cell(e);
    if (c.q >= 0 && c.k >= 0 && c.q < v.T && c.k < v.T && onHover) onHover(c.q, c.k);
  });
  canvas.addEventListener("dblclick", () => { v.q0 = 0; v.k0 = 0; v.n = v.T; v.draw(); });
  return v;
}

// ---- the token strip: only the lines in view are in the DOM
// Lines break after a newline token and before a token that would not fit the strip's width (measured with the
// strip's own font); every line is STRIP_LINE_H pixels high, so the scroll position says which lines to draw.
// paint(span, i) styles a token's span whenever it is drawn; repaint() calls it again on every drawn span.
const STRIP_LINE_H = 24;
function makeTokenStrip(box, titleOf, paint) {
  const s = {tokens: [], lines: [], lineOf: [], drawn: [-1, -1], width: 0};
  box.classList.add("strip");
  box.innerHTML = `<div class="strip-body"></div>`;
  const body = box.firstChild;
  const measure = document.createElement("canvas").getContext("2d");
  s.layout = () => {
    const cs = getComputedStyle(box), pad = parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight);
    s.width = box.clientWidth;
    const avail = Math.max(80, (box.clientWidth || 600) - pad - 2), minW = 0.5 * parseFloat(cs.fontSize);
    measure.font = `${cs.fontSize} ${cs.fontFamily}`;
    s.lines = []; s.lineOf = new Int32Array(s.tokens.length);
    let start = 0, used = 0;
    s.tokens.forEach((t, i) => {
      const wd = Math.max(minW, measure.measureText(t).width);
      if (i > start && used + wd > avail) { s.lines.push([start, i]); start = i; used = 0; }
      used += wd; s.lineOf[i] = s.lines.length;
      if (t.endsWith("\u21b5")) { s.lines.push([start, i + 1]); start = i + 1; used = 0; }
    });
    if (start < s.tokens.length) s.lines.push([start, s.tokens.length]);
    body.style.height = `${s.lines.length * STRIP_LINE_H}px`;
    s.drawn = [-1, -1]; s.render();
  };
  s.render = () => {
    const top = box.scrollTop, h = box.clientHeight || 260;
    const a = Math.max(0, Math.floor(top / STRIP_LINE_H) - 4), b = Math.min(s.lines.length, Math.ceil((top + h) / STRIP_LINE_H) + 4);
    if (a === s.drawn[0] && b === s.drawn[1]) return;
    s.drawn = [a, b];
    let html = "";
    for (let j = a; j < b; j++) {
      const [i0, i1] = s.lines[j];
      html += `<div class="strip-line" style="top:${j * STRIP_LINE_H}px">`;
      for (let i = i0; i < i1; i++)
        html += `<span class="tok" data-i="${i}" title="${escapeHtml(titleOf(i))}">${escapeHtml(s.tokens[i])}</span>`;
      html += "</div>";
    }
    body.innerHTML = html;
    s.repaint();
  };
  s.repaint = () => { body.querySelectorAll(".tok").forEach(el => paint(el, +el.dataset.i)); };
  s.span = i => body.querySelector(`.tok[data-i="${i}"]`);
  s.scrollTo = i => {  // bring token i's line into view
    const y = s.lineOf[i] * STRIP_LINE_H;
    if (y < box.scrollTop || y + STRIP_LINE_H > box.scrollTop + box.clientHeight) box.scrollTop = y - box.clientHeight / 2;
    s.render();
  };
  s.set = tokens => { s.tokens = tokens; box.dataset.n = tokens.length; s.layout(); };
  let queued = false;
  box.addEventListener("scroll", () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; s.render(); });
  });
  new ResizeObserver(() => { if (box.clientWidth !== s.width && s.tokens.length) s.layout(); }).observe(box);
  return s;
}

// ---- a long table: only the rows in view are in the DOM
// Up to VROWS_ALL rows the body holds every row (what a short text always had); past that, the rows in view of the
// scrolling element, between two spacer rows of the height of the rows left out. row(i) gives row i's <tr> HTML.
const VROWS_ALL = 400;
function makeVirtualRows(scroller, table) {
  const r = {n: 0, row: null, head: "", rowH: 20, drawn: [-1, -1]};
  r.set = (head, n, row) => {
    r.head = head; r.n = n; r.row = row; r.drawn = [-1, -1];
    table.dataset.rows = n;
    r.render();
  };
  r.render = () => {
    const all = r.n <= VROWS_ALL;
    const top = Math.max(0, scroller.scrollTop - 24), h = scroller.clientHeight || 300;
    const a = all ? 0 : Math.max(0, Math.floor(top / r.rowH) - 10);
    const b = all ? r.n : Math.min(r.n, Math.ceil((top + h) / r.rowH) + 10);
    if (a === r.drawn[0] && b === r.drawn[1]) return;
    r.drawn = [a, b];
    let html = r.head + "<tbody>";
    if (a > 0) html += `<tr class="spacer" style="height:${a * r.rowH}px"></tr>`;
    for (let i = a; i < b; i++) html += r.row(i);
    if (b < r.n) html += `<tr class="spacer" style="height:${(r.n - b) * r.rowH}px"></tr>`;
    table.innerHTML = html + "</tbody>";
    if (!all) {  // the rows' real height, so the spacers are right from the next draw on
      const tr = table.querySelector("tbody tr:not(.spacer)"), rh = tr ? tr.getBoundingClientRect().height : 0;
      if (rh && Math.abs(rh - r.rowH) > 0.01) { r.rowH = rh; r.drawn = [-1, -1]; r.render(); }
    }
  };
  let queued = false;
  scroller.addEventListener("scroll", () => {
    if (queued || r.n <= VROWS_ALL) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; r.render(); });
  });
  return r;
}
