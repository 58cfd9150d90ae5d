"""The head pages' web code (gptlab/interp/web): inlined into self-contained pages, and loaded by real Chromium with no
console error and no page error (a syntax error in any script is a page error) for heads.html, its timeline
and the live viewer."""

import re
import threading

import numpy as np
import pytest
from test_heads_browser import _page, _random_patterns
from test_heads_live import META, _model

from gptlab.interp import page_common
from gptlab.interp.html import page_data, write_html
from gptlab.interp.live import LiveModel
from gptlab.interp.page_common import WEB, json_for_script, render
from gptlab.interp.serve import HeadServer


def _linked(template: str) -> list[str]:
    text = (WEB / template).read_text()
    return re.findall(r'href="([\w.-]+\.css)"', text) + re.findall(r'src="([\w.-]+\.js)"', text)


@pytest.mark.parametrize("template, block", [("heads.html", "data"), ("live.html", "info")])
def test_every_linked_file_is_inlined(template, block):
    files = _linked(template)
    assert "common.css" in files and "common.js" in files and len(files) >= 4
    page = render(template, "a <title>", **{block: {"x": "</script><!--"}})
    assert "<link" not in page and "<script src" not in page and "{{" not in page
    for name in files:
        assert (WEB / name).read_text() in page  # each file verbatim, once
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
