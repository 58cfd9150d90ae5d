"""Long texts on the head pages: the pattern encodings (gptlab/interp/pattern_codec.py), the live API's "page" answers
(thumbnails for every head, whole patterns for the asked-for heads past a budget), heads.py's limits, and a
2,048-token heads.html in Chromium that keeps only what is in view in the DOM and shows the right numbers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_heads_browser import _random_patterns
from test_heads_live import CHARS, META, _model, _post, _wait_update

from gptlab.data import get_tokenizer
from gptlab.errors import UserError
from gptlab.interp import live as live_mod
from gptlab.interp import pattern_codec as PC
from gptlab.interp.html import page_data, write_html
from gptlab.interp.run_inputs import PAGE_MAX_BYTES, check_length
from gptlab.interp.run_report import run_report
from gptlab.model import GPT, GPTConfig


def _drawtri_pool(p, n):
    """The max-pooling of the pages' drawTri, written out cell by cell (the reference for thumbnails)."""
    T = p.shape[-1]
    s = T / n
    out = np.zeros((n, n))
    for y in range(n):
        for x in range(y + 1):
            m = 0.0
            for q in range(int(np.floor(y * s)), int(np.floor((y + 1) * s))):
                for k in range(int(np.floor(x * s)), min(int(np.floor((x + 1) * s)), q + 1)):
                    m = max(m, p[q, k])
            out[y, x] = m
    return out


def test_encodings_round_trip_within_their_error():
    p = _random_patterns(2, 2, 300, seed=3)[1, 1]
    p[200] = 0  # a row of zeros (no weight at all) stays zeros
    p[250, :251] = 1 / 251  # a flat row: every weight its row's maximum
    for enc in ("u16", "u8"):
        s = PC.encode(p, enc)
        assert len(s) == PC.encoded_bytes(1, 300, enc)
        got = PC.decode(s, 300, enc)
        err = np.abs(got - p).max(axis=1)
        assert (err <= PC.max_error(p, enc)).all()
        assert np.all(got[np.triu_indices(300, 1)] == 0)
    assert PC.max_error(p, "u8")[5] == pytest.approx(p[5].max() / 510, abs=2e-7)
    assert PC.encoding_for(512) == "u16" and PC.encoding_for(513) == "u8"
    assert PC.encoded_bytes(1, 2048, "u8") < 0.51 * PC.encoded_bytes(1, 2048, "u16")


@pytest.mark.parametrize("T", [5, 64, 100, 333])
def test_thumbnail_is_the_pages_max_pooling(T):
    import base64

    p = _random_patterns(2, 2, T, seed=T)[0, 1]
    n = min(T, 64)
    got = np.frombuffer(base64.b64decode(PC.thumbnail(p)), dtype=np.uint8).reshape(n, n)
    want = np.rint(255 * np.sqrt(_drawtri_pool(p, n)))
    np.testing.assert_array_equal(np.tril(got), np.tril(want))


@pytest.fixture
def live():
    return live_mod.LiveModel(_model(), get_tokenizer(META), title="long")


def test_page_answers_bring_every_head_until_the_budget_then_the_asked_ones(live, monkeypatch):
    text = "The cat sat on the mat. " * 5  # 120 tokens, past the block size of 64
    want = live.model.attention_patterns(torch.tensor(get_tokenizer(META).encode(text))[None])[:, 0].numpy()
    d = live.analyse(text, encoding="page", heads=[(1, 2)])
    assert d["pattern_encoding"] == "u16" and sorted(d["patterns_page"]) == [
        f"{l},{h}" for l in range(2) for h in range(4)
    ]
    for key, s in d["patterns_page"].items():
        l, h = map(int, key.split(","))
        np.testing.assert_allclose(PC.decode(s, 120, "u16"), want[l, h], atol=1 / 65535)
    assert len(d["thumbs"]) == 8 and d["thumbs"][6] == PC.thumbnail(want[1, 2])
    assert not d["timing_ms"]["cached"]
    monkeypatch.setattr(
        live_mod, "PAGE_BUDGET", 1000
    )  # now the patterns do not fit: only the asked-for heads
    d2 = live.analyse(text, encoding="page", heads=[(0, 3), (1, 2)])
    assert (
        sorted(d2["patterns_page"]) == ["0,3", "1,2"]
        and d2["patterns_page"]["1,2"] == d["patterns_page"]["1,2"]
    )
    assert d2["timing_ms"]["cached"] and d2["timing_ms"]["model"] == 0 and d2["thumbs"] == d["thumbs"]
    assert d2["predictions"] == d["predictions"] and d2["metrics"] == d["metrics"]
    d3 = live.analyse(
        text, ablate=[(0, 1)], encoding="page", heads=[(0, 0)]
    )  # other ablations: computed anew
    assert not d3["timing_ms"]["cached"] and list(d3["patterns_page"]) == ["0,0"]
    long = "abcdefghij" * 60  # 600 tokens: the u8 encoding
    d4 = live.analyse(long, encoding="page", heads=[(0, 0)])
    assert d4["pattern_encoding"] == "u8" and list(d4["patterns_page"]) == ["0,0"]
    want = live.model.attention_patterns(torch.tensor(get_tokenizer(META).encode(long))[None])[
        0, 0, 0
    ].numpy()
    got = PC.decode(d4["patterns_page"]["0,0"], 600, "u8")
    assert (np.abs(got - want).max(axis=1) <= PC.max_error(want, "u8")).all()


def test_bad_heads_field_is_a_400():
    with pytest.raises(live_mod.BadRequest, match='"heads" entries are'):
        live_mod.parse_request({"text": "a", "heads": [[5, 0]]}, 2, 4)
    with pytest.raises(live_mod.BadRequest, match='"heads" must be a list'):
        live_mod.parse_request({"text": "a", "heads": "0,0"}, 2, 4)
    assert "heads" not in live_mod.parse_request({"text": "a"}, 2, 4)
    assert live_mod.parse_request({"text": "a", "heads": [[1, 0], [0, 3], [1, 0]]}, 2, 4)["heads"] == [
        (0, 3),
        (1, 0),
    ]


def _gpt(position, block=64, n_layer=1, n_head=2, n_embd=16):
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=len(CHARS),
        block_size=block,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        position=position,
    )
    return GPT(cfg).eval().requires_grad_(False)


def test_heads_py_length_limits():
    assert check_length(64, _gpt("learned")) is None
    with pytest.raises(UserError, match="takes at most 64"):
        check_length(65, _gpt("learned"))
    note = check_length(2048, _gpt("rope"))
    assert "past the model's training length (64)" in note and "extrapolated" in note
    with pytest.raises(UserError, match="draws at most 2048"):
        check_length(2049, _gpt("alibi"))
    big = _gpt(
        "rope", n_layer=8, n_head=16, n_embd=64
    )  # 128 heads x 2.8 MB at 2,048 tokens: past the page's budget
    with pytest.raises(UserError, match=r"pass max_tokens=\d+") as e:
        check_length(2048, big)
    fit = int(str(e.value).rsplit("=", 1)[1])
    assert PC.encoded_bytes(128, fit, PC.encoding_for(fit)) <= PAGE_MAX_BYTES
    assert PC.encoded_bytes(128, fit + 64, PC.encoding_for(fit + 64)) > PAGE_MAX_BYTES


def _shown_rows(page):
    return page.eval_on_selector_all(
        "#weights td.wcell", "cs => cs.map(c => [+c.dataset.head, +c.dataset.q, +c.dataset.k, +c.dataset.w])"
    )


@pytest.mark.browser
def test_a_2048_token_page_in_chromium(tmp_path, chromium):
    T, q = 2048, 2000
    model = _gpt("rope")
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(1, len(CHARS), size=T))
    ids[::97] = 0  # some newlines
    pats = model.attention_patterns(ids[None])[:, 0].numpy()  # (1, 2, T, T): past the block size of 64
    tokens = [CHARS[i] for i in ids.tolist()]
    rows = [{"layer": 0, "head": h, "kv_head": h, "kind": "mixed"} for h in range(2)]
    path = write_html(tmp_path / "heads.html", page_data(tokens, pats, rows, title="long"))
    errors = []
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    # only what is in view is in the DOM: a few lines of tokens and rows of the table, never T^2 or even T
    assert page.eval_on_selector("#tokens", "b => +b.dataset.n") == T
    lines = page.locator("#tokens .strip-line").count()  # the ~11 lines in view and 4 either side
    assert 0 < lines <= 20 and 0 < page.locator("#tokens .tok").count() < T / 2
    assert page.evaluate("() => document.getElementsByTagName('*').length") < 3000
    # scroll the strip to its end and click token 2000: its row of the selected head
    page.eval_on_selector(
        "#tokens", "b => { b.scrollTop = b.scrollHeight; b.dispatchEvent(new Event('scroll')); }"
    )
    page.wait_for_selector(f"#tokens .tok[data-i='{q}']")
    page.click(f"#tokens .tok[data-i='{q}']")
    assert page.get_attribute("#weights", "data-rows") == str(q + 1)
    tol = PC.max_error(pats[0, 0], "u8") + 5.1e-5  # the quantisation and the 4 decimals shown
    shown = _shown_rows(page)
    assert 10 < len(shown) < 200 and {(h, qq) for h, qq, _, _ in shown} == {(0, q)}
    assert [k for _, _, k, _ in shown] == list(range(q, q - len(shown), -1))  # the nearest keys first
    for _, _, k, w in shown:
        assert abs(w - pats[0, 0, q, k]) <= tol[q]
    assert float(page.get_attribute(f"#tokens .tok[data-i='{q - 1}']", "data-w")) == pytest.approx(
        pats[0, 0, q, q - 1], abs=tol[q]
    )
    # the table scrolled to its middle draws the rows there
    page.eval_on_selector(
        "#weights-wrap", "d => { d.scrollTop = d.scrollHeight / 2; d.dispatchEvent(new Event('scroll')); }"
    )
    page.wait_for_function("() => !document.querySelector('#weights td.wcell[data-k=\"2000\"]')")
    ks = [k for _, _, k, _ in _shown_rows(page)]
    assert 600 < min(ks) < 1400 and len(ks) < 200
    for _, _, k, w in _shown_rows(page):
        assert abs(w - pats[0, 0, q, k]) <= tol[q]
    # head 1, the same query: the other head's numbers
    page.select_option("#head", "1")
    for h, _, k, w in _shown_rows(page):
        assert h == 1 and abs(w - pats[0, 1, q, k]) <= PC.max_error(pats[0, 1], "u8")[q] + 5.1e-5
    # zoom the large pattern in: it draws the window's cells one pixel each, from the page's (u8) weights
    box = page.locator("#big").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7)
    for _ in range(6):
        page.mouse.wheel(0, -100)
    page.wait_for_function("() => +document.getElementById('big').dataset.n < 512")
    q0, k0, n, px = page.evaluate(
        "() => { const c = document.getElementById('big'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " return [+c.dataset.q0, +c.dataset.k0, +c.dataset.n, Array.from(d.filter((_, i) => i % 4 === 0))]; }"
    )
    assert n < 512 and 0 < q0 and 0 < k0 and q0 + n <= T and len(px) == n * n
    dec = PC.decode(PC.encode(pats[0, 1], "u8"), T, "u8")
    for y, x in [(0, 0), (n - 1, 0), (n // 2, n // 3), (n - 1, n - 1), (5, n - 1)]:
        qq, kk = q0 + y, k0 + x
        want = 245 if kk > qq else round(255 * (1 - np.sqrt(dec[qq, kk])))
        assert abs(px[y * n + x] - want) <= 1, (y, x, qq, kk)
    assert "of 2048" in page.inner_text("#big-window")
    page.dblclick("#big")
    assert page.eval_on_selector("#big", "c => +c.dataset.n") == T
    assert not errors, errors


@pytest.mark.browser
def test_live_page_asks_for_a_head_it_was_not_sent(chromium, monkeypatch):
    import threading

    from gptlab.interp.serve import HeadServer

    monkeypatch.setattr(live_mod, "PAGE_BUDGET", 0)  # every answer brings only the selected head
    srv = HeadServer(live_mod.LiveModel(_model(), get_tokenizer(META), title="t"), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    errors = []
    try:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(srv.url)
        _wait_update(page, 1)
        assert page.evaluate("() => Object.keys(state.data.patterns_page)") == ["0,0"]
        page.click("#thumb-1-3")
        _wait_update(page, 2)
        assert page.evaluate("() => Object.keys(state.data.patterns_page)") == ["1,3"]
        assert page.evaluate("() => state.data.timing_ms.cached")  # the same text: no second model run
        q = 10
        page.click(f"#tokens .tok[data-i='{q}']")
        text = srv.live.sample_text
        _, _, api = _post(srv, {"text": text})
        pats = np.array(api["patterns"])
        to = page.eval_on_selector_all(
            "#attends-to td.wcell",
            "cs => cs.map(c => [+c.dataset.layer, +c.dataset.head, +c.dataset.k, +c.dataset.w])",
        )
        assert len(to) == q + 1
        for l, h, k, w in to:
            assert (l, h) == (1, 3) and w == pytest.approx(pats[1, 3, q, k], abs=1.1e-4)
    finally:
        srv.shutdown()
        srv.server_close()
    assert not errors, errors


def test_heads_report_past_the_block_size(tmp_path, monkeypatch):
    """heads.py on a RoPE run with a text of 599 tokens, block_size 64: the page holds the u8 patterns of the
    whole text (the model's own, past its training length) and the report says they are extrapolated."""
    from hydra import compose, initialize_config_dir
    from test_heads_live import ROOT, _save_run
    from test_heads_observatory import _page_data

    from gptlab.interp import head_report as report

    def no_png(*args, **kw):  # the PNGs are not what this test is about (and take seconds)
        return next(Path(a) for a in args if str(a).endswith(".png"))

    for name in ("metric_heatmap", "pattern_grid", "head_pattern", "composition_matrices", "logit_lens"):
        monkeypatch.setattr(report.plots, name, no_png)
    run = _save_run(tmp_path / "run")
    text = ("The cat sat on the mat. " * 25).rstrip()  # 599 characters, 599 tokens (u8: past 512)
    overrides = [f"run={run}", f"text={text}", f"out={tmp_path / 'out'}", "ablation.enabled=false"]
    overrides += ["icl.batches=0", "probe.batch_size=2", "timeline=false"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        res = run_report(compose("heads", overrides=overrides))
    assert any("past the model's training length (64)" in n for n in res["notes"])
    d = _page_data(tmp_path / "out" / "heads.html")
    assert d["T"] == 599 and d["encoding"] == "u8" and len(d["thumbs"]) == 8
    ids = torch.tensor(get_tokenizer(META).encode(text))
    want = _model().attention_patterns(ids[None])[:, 0].numpy()
    for j, s in enumerate(d["patterns"]):
        got = PC.decode(s, 599, "u8")
        assert (
            np.abs(got - want[j // 4, j % 4]).max(axis=1) <= PC.max_error(want[j // 4, j % 4], "u8")
        ).all()
