"""Drive heads.html in real headless Chromium: switch layer and head, hover a token, read the shown weights.

Skipped when /usr/bin/chromium or playwright is missing, unless GPTLAB_REQUIRE_BROWSER=1 (CI), then it fails.
The screenshot goes to test-artifacts/heads_page.png.
"""

from pathlib import Path

import numpy as np
import pytest

from gptlab.interp.html import decode_pattern, encode_pattern, page_data, write_html

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _random_patterns(L, H, T, seed=0):
    """Causal softmax patterns `(L, H, T, T)` with a few sharp heads, as a model would give."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(L, H, T, T)) * 2.0
    logits[0, 1] += 8 * np.eye(T, k=-1)  # a previous-token head
    logits[1, 0, :, 0] += 8  # a sink head
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _page(tmp_path, L=3, H=4, T=40, n_kv_head=2):
    pats = _random_patterns(L, H, T)
    tokens = [f"t{i}" if i % 7 else "\n" for i in range(T)]
    tokens[5] = "</script><b>"
    tokens[8], tokens[9] = " ", " a"  # spaces: a visible mark in the tables, not a blank cell
    rows = [
        {
            "layer": l,
            "head": h,
            "kv_head": h // (H // n_kv_head),
            "kind": "mixed",
            "prev_token": float(pats[l, h].diagonal(-1).mean()),
        }
        for l in range(L)
        for h in range(H)
    ]
    rng = np.random.default_rng(1)
    comp = {k: rng.uniform(0, 0.5, size=(L, H, L, H)) for k in "QKV"}
    for k in comp:  # only earlier -> later layers compose
        for la in range(L):
            comp[k][la, :, : la + 1] = np.nan
    circuits = {
        "composition": {k: v.reshape(L * H, L * H) for k, v in comp.items()},
        "baseline": {"Q": 0.1, "K": 0.11, "V": 0.12},
        "logit_lens": [
            {"layer": x, "loss": 3.0 - i, "rank": 9.0 - i, "top1": 0.1 * i}
            for i, x in enumerate(["embed", 0, 1, 2])
        ],
    }
    data = page_data(
        tokens,
        pats,
        rows,
        n_kv_head=n_kv_head,
        title="test page",
        info={"model": "random"},
        circuits=circuits,
    )
    return write_html(tmp_path / "heads.html", data), pats, comp


def test_pattern_encoding_roundtrip():
    p = _random_patterns(2, 2, 17)[1, 1]
    np.testing.assert_allclose(decode_pattern(encode_pattern(p), 17), p, atol=1 / 65535)


def test_page_is_self_contained(tmp_path):
    path, _, _ = _page(tmp_path)
    text = path.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<script src" not in text and "<link" not in text
    # the token "</script>" was escaped inside the JSON: every </script> ends one of the page's own scripts
    assert text.count("</script>") == text.count("<script") == 4


def _shown_weights(page):
    """The weights table: {(head, key): float} plus the query and layer it was drawn for."""
    cells = page.eval_on_selector_all(
        "#weights td.wcell",
        "cs => cs.map(c => [+c.dataset.head, +c.dataset.k, +c.dataset.q, +c.dataset.layer, c.dataset.w, c.textContent])",
    )
    return cells


@pytest.mark.browser
def test_heads_page_in_chromium(tmp_path, chromium):
    path, pats, comp = _page(tmp_path)
    L, H, T = pats.shape[:3]
    errors = []
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert page.locator("#grid canvas").count() == L * H
    assert page.locator("#tokens .tok").count() == T
    assert "heads 0, 1" in page.inner_text("#gqa") and "kv 1: heads 2, 3" in page.inner_text("#gqa")

    # switch layer and head, hover a query token, compare the table with the data
    page.select_option("#layer", "2")
    page.select_option("#head", "3")
    q = 23
    page.hover(f"#tokens .tok[data-i='{q}']")
    cells = _shown_weights(page)
    assert len(cells) == q + 1
    for h, k, qq, l, w, text in cells:
        assert (l, h, qq) == (2, 3, q)
        assert w == text
        assert float(w) == pytest.approx(pats[2, 3, q, k], abs=1.1e-4)
    token_cells = page.eval_on_selector_all(
        "#weights tr", "rs => rs.slice(1).map(r => [+r.cells[0].textContent, r.cells[1].textContent])"
    )
    assert dict(token_cells)[8] == "\u2423" and dict(token_cells)[9] == "\u2423a"
    # the token strip colours carry the same numbers
    w_tok = float(page.get_attribute(f"#tokens .tok[data-i='{q - 1}']", "data-w"))
    assert w_tok == pytest.approx(pats[2, 3, q, q - 1], abs=1.1e-4)
    assert page.get_attribute(f"#tokens .tok[data-i='{q + 1}']", "data-w") is None  # future: no weight

    # clicking a thumbnail selects that head; clicking a token pins the query
    page.click("#thumb-0-1")
    assert page.input_value("#layer") == "0" and page.input_value("#head") == "1"
    page.click("#tokens .tok[data-i='30']")
    page.hover("#tokens .tok[data-i='3']")  # pinned: hovering elsewhere keeps query 30
    cells = _shown_weights(page)
    assert {c[2] for c in cells} == {30}
    got = {c[1]: float(c[4]) for c in cells}
    assert got[29] == pytest.approx(pats[0, 1, 30, 29], abs=1.1e-4)  # the previous-token head

    # overlay: every head of the layer, coloured, same numbers
    page.select_option("#head", "all")
    cells = _shown_weights(page)
    assert len(cells) == 31 * H
    for h, k, _q, _l, w, _ in cells:
        assert float(w) == pytest.approx(pats[0, h, 30, k], abs=1.1e-4)

    # the metric table has a row per head, and clicking one selects it
    assert page.locator("#metrics tbody tr").count() == L * H
    page.click("#metrics tbody tr[data-l='1'][data-h='0']")
    assert page.input_value("#layer") == "1" and page.input_value("#head") == "0"
    # circuits: the selected head's strongest K-composition partners, with the numbers of the data
    pairs = page.eval_on_selector_all(
        "#comp-top .cpair", "ps => ps.map(p => [+p.dataset.l, +p.dataset.h, +p.dataset.v])"
    )
    into = sorted(((0, ha, comp["K"][0, ha, 1, 0]) for ha in range(H)), key=lambda t: -t[2])[:4]
    assert [(l, h) for l, h, _ in pairs[:4]] == [(l, h) for l, h, _ in into]
    for (_, _, v), (_, _, w) in zip(pairs, into):
        assert v == pytest.approx(w, abs=1e-4)
    _check_composition_labels(page, L, H, per_head=True)
    page.select_option("#ckind", "V")
    assert "V-composition" in page.inner_text("#comp-top")
    assert page.locator("#lens tbody tr").count() == 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.hover("#tokens .tok[data-i='20']")
    page.screenshot(path=str(ARTIFACTS / "heads_page.png"), full_page=True)
    assert not errors, errors


def _check_composition_labels(page, L, H, per_head):
    """The composition matrix has its writing heads (layers 0..L-2) left of the rows and its reading heads
    (layers 1..L-1) above the columns, each label centred on its row or column of the canvas."""
    box = page.locator("#comp").bounding_box()
    n = (L - 1) * H
    rows = page.eval_on_selector_all(
        "#comp-rows .clab",
        "ls => ls.map(l => { const r = l.getBoundingClientRect(); return [l.textContent, r.top + r.height / 2, r.right]; })",
    )
    cols = page.eval_on_selector_all(
        "#comp-cols .clab",
        "ls => ls.map(l => { const r = l.getBoundingClientRect(); return [l.textContent, r.left + r.width / 2, r.bottom]; })",
    )
    if per_head:
        assert [t for t, _, _ in rows] == [f"L{l}H{h}" for l in range(L - 1) for h in range(H)]
        assert [t for t, _, _ in cols] == [f"L{l}H{h}" for l in range(1, L) for h in range(H)]
        span = 1
    else:  # cells too small for a label each: one per layer, centred on the layer's block
        assert [t for t, _, _ in rows] == [f"L{l}" for l in range(L - 1)]
        assert [t for t, _, _ in cols] == [f"L{l}" for l in range(1, L)]
        span = H
    cell_h, cell_w = (box["height"] - 2) / n, (box["width"] - 2) / n  # 1 px border
    for i, (_, mid, right) in enumerate(rows):
        want = box["y"] + 1 + (i + 0.5) * span * cell_h
        assert abs(mid - want) <= cell_h / 2 and right <= box["x"] + 1
    for j, (_, mid, bottom) in enumerate(cols):
        want = box["x"] + 1 + (j + 0.5) * span * cell_w
        assert abs(mid - want) <= cell_w / 2 and bottom <= box["y"] + 1


@pytest.mark.browser
def test_composition_labels_per_layer_on_a_large_model(tmp_path, chromium):
    path, pats, _ = _page(tmp_path, L=8, H=8, T=12, n_kv_head=8)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    _check_composition_labels(page, 8, 8, per_head=False)
