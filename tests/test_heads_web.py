"""The head pages' web code (gptlab/interp/web): inlined into self-contained pages, and loaded by real Chromium with no
console error and no page error (a syntax error in any script is a page error) for heads.html, its timeline,
the live viewer, compare.html and the live comparison viewer."""

import re
import threading

import numpy as np
import pytest
from test_heads_browser import _page, _random_patterns
from test_heads_live import META, _model

from gptlab.interp import page_common
from gptlab.interp.html import page_data, write_html
from gptlab.interp.live import LiveModel
from gptlab.interp.live_compare import LiveCompare
from gptlab.interp.page_common import WEB, json_for_script, render
from gptlab.interp.serve import HeadServer


def _linked(template: str) -> list[str]:
    text = (WEB / template).read_text()
    return re.findall(r'href="([\w.-]+\.css)"', text) + re.findall(r'src="([\w.-]+\.js)"', text)


PAGES = [
    ("heads.html", "data"),
    ("live.html", "info"),
    ("compare.html", "data"),
    ("compare_live.html", "info"),
]


@pytest.mark.parametrize("template, block", PAGES)
def test_every_linked_file_is_inlined(template, block):
    files = _linked(template)
    assert "common.css" in files and "common.js" in files and len(files) >= 4
    fragments = re.findall(r"\{\{include:([\w.-]+\.html)\}\}", (WEB / template).read_text())
    page = render(template, "a <title>", **{block: {"x": "</script><!--"}})
    assert "<link" not in page and "<script src" not in page and "{{" not in page
    for name in files:
        assert (WEB / name).read_text() in page  # each file verbatim, once
    for name in fragments:
        assert (WEB / name).read_text().rstrip("\n") in page
    assert "<title>a &lt;title&gt;" in page
    # the data block: no "<" at all, and the same object back
    start = page.index(f'<script id="{"data" if block == "data" else "info-data"}" type="application/json">')
    start = page.index(">", start) + 1
    blob = page[start : page.index("</script>", start)]
    assert "<" not in blob
    assert __import__("json").loads(blob) == {"x": "</script><!--"}


def test_json_for_script_is_the_same_json():
    obj = {"t": ["</script>", "<!--", "a<b"], "n": 1.5}
    import json

    assert json.loads(json_for_script(obj)) == obj and "<" not in json_for_script(obj)


def test_a_file_that_would_end_its_element_and_a_missing_slot_are_refused(monkeypatch):
    real = page_common.web_file

    def fake(name):
        return "let s = '</SCRIPT>';" if name == "heads.js" else real(name)

    monkeypatch.setattr(page_common, "web_file", fake)
    with pytest.raises(ValueError, match="heads.js holds '</script'"):
        render("heads.html", "t", data={})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="wants the JSON block 'data'"):
        render("heads.html", "t")
    with pytest.raises(ValueError, match="no slot for extra"):
        render("heads.html", "t", data={}, extra=1)


def test_the_comparison_pages_share_one_copy_of_their_code(monkeypatch):
    """compare.html and the live comparison viewer inline the same compare_common.js and pair fragment (an edit
    there shows in both), and a fragment that includes another is refused."""
    real = page_common.web_file
    marks = {"compare_common.js": "// mark js\n", "compare_pair.html": "<!-- mark html -->\n"}
    monkeypatch.setattr(page_common, "web_file", lambda n: real(n) + marks.get(n, ""))
    for template, block in PAGES[2:]:
        page = render(template, "t", **{block: {}})
        assert page.count("// mark js") == 1 and page.count("<!-- mark html -->") == 1, template
    monkeypatch.setattr(
        page_common, "web_file", lambda n: "{{include:x.html}}" if n == "compare_pair.html" else real(n)
    )
    with pytest.raises(ValueError, match="an \\{\\{include:...\\}\\} is left"):
        render("compare.html", "t", data={})


def _load(browser, url, ready="body[data-ready='1']"):
    """Open `url`, wait for the page to say it is ready; returns (page, errors) with every console error and
    uncaught exception collected."""
    errors = []
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.goto(url)
    if ready:
        page.wait_for_selector(ready, timeout=10_000)
    return page, errors


def _timeline_page(tmp_path):
    """heads.html with a timeline of two snapshot steps (the data gptlab/interp/timeline.py makes)."""
    from gptlab.interp.html import encode_pattern
    from gptlab.interp.pattern_codec import thumbnail

    L, H, T = 2, 2, 12
    pats = [_random_patterns(L, H, T, seed=s) for s in range(3)]
    tokens = [f"w{i}" for i in range(T)]
    rows = [
        [
            {"layer": l, "head": h, "kv_head": h, "kind": "mixed", "induction": 0.1 * (s + l + h)}
            for l in range(L)
            for h in range(H)
        ]
        for s in range(3)
    ]
    series = {
        "source": "snapshots",
        "steps": [0, 5],
        "metrics": {
            m: [[0.1 * j for j in range(L * H)], [0.2 * j for j in range(L * H)]]
            for m in ("induction", "prev_token", "k_composition")
        },
        "icl_score": [None, None],
        "val_loss": {"steps": [0, 5], "values": [3.0, 2.5]},
    }
    timeline = {
        "steps": [0, 5],
        "patterns": [[encode_pattern(p[l, h]) for l in range(L) for h in range(H)] for p in pats[:2]],
        "thumbs": [[thumbnail(p[l, h]) for l in range(L) for h in range(H)] for p in pats[:2]],
        "rows": rows[:2],
        "series": series,
        "phases": None,
        "report_step": 10,
        "report_name": "ckpt.pt",
    }
    data = page_data(tokens, pats[2], rows[2], n_kv_head=H, title="timeline", timeline=timeline)
    return write_html(tmp_path / "heads.html", data)


@pytest.mark.browser
def test_the_pages_load_without_errors(tmp_path, chromium):
    path, _, _ = _page(tmp_path)
    page, errors = _load(chromium, path.as_uri())
    page.hover("#tokens .tok[data-i='3']")
    page.select_option("#head", "all")
    assert not errors, errors

    (tmp_path / "tl").mkdir()
    tl = _timeline_page(tmp_path / "tl")
    page, errors = _load(chromium, tl.as_uri())
    assert not page.is_hidden("#timeline")
    for i in (0, 1, 2):
        page.eval_on_selector(
            "#tl-slider", f"el => {{ el.value = {i}; el.dispatchEvent(new Event('input')); }}"
        )
    assert page.eval_on_selector("body", "b => b.dataset.step") == "10"
    assert page.locator("#tl-plots svg").count() == 4
    assert not errors, errors

    from gptlab.data import get_tokenizer

    srv = HeadServer(LiveModel(_model(), get_tokenizer(META), title="web test"), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page, errors = _load(chromium, srv.url)
        page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 1", timeout=20_000)
        page.click("#thumb-1-2")
        page.click("#tokens .tok[data-i='5']")
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()


def _compare_page(tmp_path):
    """compare.html (written as heads.py compare= writes it) for two random models on one text: A 2 layers x 4
    heads (2 kv heads), B 3 layers x 2 heads, so two of A's heads have no partner."""
    from gptlab.interp.compare_report import Side, write_compare
    from gptlab.interp.head_report import HeadReport
    from gptlab.interp.pairing import head_rows, layer_groups, match_heads, similarity_matrix

    T = 16
    tokens = [f"w{i}" for i in range(T)]

    def report(L, H, kv, seed):
        pats = _random_patterns(L, H, T, seed=seed)
        prev = np.array([[pats[l, h].diagonal(-1).mean() for h in range(H)] for l in range(L)])
        rows = [
            {
                "layer": l,
                "head": h,
                "kv_head": h // (H // kv),
                "kind": "mixed",
                "prev_token": float(prev[l, h]),
            }
            for l in range(L)
            for h in range(H)
        ]
        return HeadReport({"prev_token": prev}, rows, pats, tokens, kv, model_scores={"val_loss": 3.0 + seed})

    a, b = report(2, 4, 2, seed=0), report(3, 2, 2, seed=1)
    groups = layer_groups(2, 3)
    sim = similarity_matrix([head_rows(a.patterns)], [head_rows(b.patterns)], groups)
    matching = match_heads(sim, groups)
    files, _ = write_compare(
        Side("a", {"step": 1}, a),
        Side("b", {"step": 2}, b),
        matching,
        tmp_path,
        title="compare",
        text_info="test",
    )
    return files["html"], a.patterns, b.patterns, matching


@pytest.mark.browser
def test_the_comparison_pages_load_without_errors(tmp_path, chromium):
    path, pa, pb, matching = _compare_page(tmp_path)
    page, errors = _load(chromium, path.as_uri())
    assert page.locator("#pairs tbody tr").count() == len(matching.pairs) + len(matching.unmatched_a) == 8
    assert page.locator("#grid-a canvas").count() == 8 and page.locator("#grid-b canvas").count() == 6
    la, ha, lb, hb, _ = matching.pairs[3]
    page.select_option("#a-head", f"{la},{ha}")
    assert page.input_value("#b-head") == f"{lb},{hb}" and "the matched pair" in page.inner_text("#pair-info")
    page.hover("#tokens .tok[data-i='9']")
    cells = page.eval_on_selector_all(
        "#weights td.wcell", "cs => cs.map(c => [c.dataset.side, +c.dataset.k, +c.dataset.w])"
    )
    assert len(cells) == 3 * 10
    want = {"a": pa[la, ha, 9], "b": pb[lb, hb, 9]}
    for side, k, w in cells:
        assert w == pytest.approx(want[side][k] if side in want else want["b"][k] - want["a"][k], abs=2.1e-4)
    assert not errors, errors

    from gptlab.data import get_tokenizer

    tok = get_tokenizer(META)
    both = LiveCompare(LiveModel(_model(), tok, title="A"), LiveModel(_model(n_kv_head=4), tok, title="B"))
    srv = HeadServer(both.a, "127.0.0.1", 0, compare=both)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page, errors = _load(chromium, srv.url)
        page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 1", timeout=20_000)
        assert page.locator("#pairs tbody tr").count() == 8  # 2 x 4 heads each side, all matched
        page.click("#tokens .tok[data-i='5']")
        assert page.locator("#weights td.wcell").count() == 3 * 6
        page.check("#grid-b input.ablate[data-l='1'][data-h='2']")
        page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 2", timeout=20_000)
        assert "B, ablated L1H2" in page.inner_text("#preds-b")
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.browser
def test_a_script_error_is_caught(tmp_path, chromium, monkeypatch):
    """The check above fails on a broken script: a syntax error in one file, a throw at load in another."""
    real = page_common.web_file
    for name, broken in (("timeline.js", "function ( {"), ("heads.js", "undefinedFunction();")):
        monkeypatch.setattr(
            page_common, "web_file", lambda n, name=name, broken=broken: broken if n == name else real(n)
        )
        path, _, _ = _page(tmp_path)
        page, errors = _load(chromium, path.as_uri(), ready=None)
        page.wait_for_load_state("load")
        assert any(e.startswith("pageerror") for e in errors), (name, errors)
        assert page.get_attribute("body", "data-ready") is None
    monkeypatch.undo()
    np.testing.assert_equal(real("common.js"), page_common.web_file("common.js"))
