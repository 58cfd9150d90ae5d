"""The live head viewer: its JSON API against the model, bad requests, `heads.py serve=true`, and the page in Chromium.

The server runs in a thread on an ephemeral port (port 0). The model is tiny and random, with its weights
scaled up so that every head matters (ablating one visibly moves the predictions).
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.data import get_tokenizer
from gptlab.interp import circuits as CI
from gptlab.interp import metrics as M
from gptlab.interp.ablation import ablation_hooks, head_ablation_hook
from gptlab.interp.html import decode_pattern
from gptlab.interp.live import LiveModel
from gptlab.interp.serve import MAX_BODY, HeadServer
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHARS = "\n !',.?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
META = {"tokenizer": "char", "chars": CHARS, "vocab_size": len(CHARS), "eot_id": None}
SENTENCE = "The cat sat on the mat. The cat sat on"


def _model(block_size=64, n_kv_head=2):
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=len(CHARS),
        block_size=block_size,
        n_layer=2,
        n_head=4,
        n_kv_head=n_kv_head,
        n_embd=32,
        position="rope",
        mlp="gelu",
    )
    m = GPT(cfg)
    with torch.no_grad():  # sharper patterns and heads that move the logits
        for name, p in m.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.mul_(12 if "o_proj" in name or "v_proj" in name else 6)
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def server():
    model = _model()
    live = LiveModel(model, get_tokenizer(META), title="test model")
    srv = HeadServer(live, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _post(srv, body, path="/api/attention", ctype="application/json", headers=None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": ctype, **(headers or {})})
    r = conn.getresponse()
    out = r.status, r.getheader("Content-Type"), json.loads(r.read())
    conn.close()
    return out


def _get(srv, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    out = r.status, r.getheader("Content-Type"), r.read()
    conn.close()
    return out


def _ids(text):
    return torch.tensor(get_tokenizer(META).encode(text))


def test_api_patterns_equal_attention_patterns(server):
    status, ctype, d = _post(server, {"text": SENTENCE})
    assert status == 200 and ctype.startswith("application/json")
    ids = _ids(SENTENCE)
    assert d["tokens"] == list(SENTENCE) and d["ids"] == ids.tolist() and d["n_tokens"] == len(SENTENCE)
    want = server.live.model.attention_patterns(ids[None])[:, 0].numpy()  # (L, H, T, T)
    got = np.array(d["patterns"])
    assert got.shape == want.shape == (2, 4, len(SENTENCE), len(SENTENCE))
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the page's compact encoding: the same weights to 1/65535
    _, _, b = _post(server, {"text": SENTENCE, "encoding": "b64"})
    assert "patterns" not in b and len(b["patterns_b64"]) == 8
    for i, enc in enumerate(b["patterns_b64"]):
        np.testing.assert_allclose(decode_pattern(enc, len(SENTENCE)), want[i // 4, i % 4], atol=1 / 65535)


def test_api_metrics_dla_and_predictions_match_the_model(server):
    m = server.live.model
    ids = _ids(SENTENCE)
    _, _, d = _post(server, {"text": SENTENCE, "top_k": 5})
    pat = m.attention_patterns(ids[None])
    for name, v in {**M.pattern_metrics(pat), **M.probe_metrics(pat, ids[None])}.items():
        np.testing.assert_allclose(np.array(d["metrics"][name], dtype=float), v.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        np.array(d["dla"]), CI.direct_logit_attribution(m, ids).heads.mean(0).numpy(), atol=1e-4
    )
    probs = torch.softmax(m(ids[None])[0][0, -1], -1)
    top = torch.topk(probs, 5)
    assert [p["id"] for p in d["predictions"]] == top.indices.tolist()
    assert [p["prob"] for p in d["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert d["dla_last"]["id"] == top.indices[0].item() and d["predictions_clean"] is None
    att = CI.direct_logit_attribution(m, ids, targets=torch.cat([ids[1:], top.indices[:1]]))
    np.testing.assert_allclose(np.array(d["dla_last"]["heads"]), att.heads[-1].numpy(), atol=1e-4)
    assert [r["layer"] for r in d["logit_lens"]] == ["embed", 0, 1]


def test_api_ablation_changes_predictions_like_the_hook(server):
    m = server.live.model
    ids = _ids(SENTENCE)
    _, _, d = _post(server, {"text": SENTENCE, "ablate": [[1, 2], [0, 1]]})
    logits, _ = m.run_with_hooks(
        ids[None],
        [("blocks.1.attn.hook_z", head_ablation_hook(2)), ("blocks.0.attn.hook_z", head_ablation_hook(1))],
    )
    probs = torch.softmax(logits[0, -1], -1)
    assert [p["prob"] for p in d["predictions"]] == pytest.approx(
        probs[[p["id"] for p in d["predictions"]]].tolist(), abs=1e-6
    )
    clean = torch.softmax(m(ids[None])[0][0, -1], -1)
    assert [p["prob"] for p in d["predictions_clean"]] == pytest.approx(
        clean[[p["id"] for p in d["predictions_clean"]]].tolist(), abs=1e-6
    )
    assert d["ablate"] == [[0, 1], [1, 2]]
    assert d["dla"][1][2] == 0 and d["dla"][0][1] == 0  # an ablated head adds nothing
    with m.hooks(ablation_hooks([(1, 2), (0, 1)])):  # the patterns of the ablated run
        want = m.attention_patterns(ids[None])[:, 0].numpy()
    np.testing.assert_allclose(np.array(d["patterns"]), want, atol=1e-6)


def test_long_text_runs_past_the_block_size_or_is_cut_with_a_notice(server):
    text = "abc " * 40  # 160 characters, context 64: rope runs past it
    _, _, d = _post(server, {"text": text})
    assert d["n_tokens"] == 160 and d["total_tokens"] == 160 and not d["truncated"]
    assert "past the model's training length (64)" in d["notice"]
    want = server.live.model.attention_patterns(_ids(text)[None])[:, 0].numpy()
    np.testing.assert_allclose(np.array(d["patterns"]), want, atol=1e-6)
    # the viewer's own limit, and a model whose positions stop at its block size (learned)
    tok = get_tokenizer(META)
    d = LiveModel(server.live.model, tok, max_tokens=100).analyse(text)
    assert d["n_tokens"] == 100 and d["truncated"] and "the viewer runs at most 100" in d["notice"]
    torch.manual_seed(0)
    learned = GPT(
        GPTConfig(vocab_size=len(CHARS), block_size=64, n_layer=1, n_head=2, n_embd=16, position="learned")
    )
    live = LiveModel(learned.eval(), tok)
    d = live.analyse(text)
    assert live.max_tokens == 64 and d["n_tokens"] == 64 and d["total_tokens"] == 160 and d["truncated"]
    assert "160 tokens" in d["notice"] and "first 64" in d["notice"] and "context is 64" in d["notice"]
    assert "past" not in d["notice"]
    assert np.array(d["patterns"]).shape == (1, 2, 64, 64)
    _, _, d = _post(server, {"text": "a"})  # one token: a 1 x 1 pattern, metrics undefined (null)
    assert d["n_tokens"] == 1 and d["patterns"] == [[[[1.0]]] * 4] * 2 and d["logit_lens"] == []
    assert d["metrics"]["prev_token"] == [[None] * 4] * 2


BAD = [
    (b"{not json", "application/json", 400, "not JSON"),
    (b"\xff\xfe", "application/json", 400, "not JSON"),
    (json.dumps(["text"]).encode(), "application/json", 400, "JSON object"),
    (json.dumps({}).encode(), "application/json", 400, 'missing "text"'),
    (json.dumps({"text": 3}).encode(), "application/json", 400, "must be a string"),
    (json.dumps({"text": None}).encode(), "application/json", 400, "must be a string"),
    (json.dumps({"txt": "hi"}).encode(), "application/json", 400, "unknown field"),
    (json.dumps({"text": "hi", "ablate": [[2, 0]]}).encode(), "application/json", 400, "layer in 0..1"),
    (json.dumps({"text": "hi", "ablate": [[0, "1"]]}).encode(), "application/json", 400, "[layer, head]"),
    (json.dumps({"text": "hi", "ablate": "0,1"}).encode(), "application/json", 400, "list of"),
    (json.dumps({"text": "hi", "encoding": "png"}).encode(), "application/json", 400, "encoding"),
    (json.dumps({"text": "hi", "top_k": 0}).encode(), "application/json", 400, "top_k"),
    (json.dumps({"text": "hi", "top_k": True}).encode(), "application/json", 400, "top_k"),
    (json.dumps({"text": ""}).encode(), "application/json", 400, "no tokens"),
    (
        json.dumps({"text": "naïve €"}).encode(),
        "application/json",
        400,
        "lacks",
    ),  # not in the char vocabulary
    (json.dumps({"text": "hi"}).encode(), "text/plain", 415, "application/json"),
    (json.dumps({"text": "a" * (MAX_BODY + 10)}).encode(), "application/json", 413, "at most"),
]


@pytest.mark.parametrize("body, ctype, status, message", BAD, ids=[b[3] + str(i) for i, b in enumerate(BAD)])
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, body, ctype, status, message):
    got, rtype, d = _post(server, body, ctype=ctype)
    assert got == status and rtype.startswith("application/json")
    assert message in d["error"] and d["status"] == status and "\n" not in d["error"]
    ok, _, d = _post(server, {"text": "still here"})
    assert ok == 200 and d["n_tokens"] == 10


def test_bad_paths_methods_hosts_and_lengths(server):
    for status, method, path in (
        (404, "GET", "/nope"),
        (405, "GET", "/api/attention"),
        (405, "PUT", "/api/attention"),
    ):
        got, rtype, body = _get(server, path, method=method)
        assert got == status and rtype.startswith("application/json") and json.loads(body)["status"] == status
    got, _, d = _post(server, {"text": "hi"}, path="/api/other")
    assert got == 404 and "/api/attention" in d["error"]
    got, _, body = _get(server, "/", headers={"Host": "attacker.example:80"})  # DNS rebinding
    assert got == 403 and "loopback" in json.loads(body)["error"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)  # no Content-Length
    conn.putrequest("POST", "/api/attention")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 411 and "Content-Length header" in json.loads(r.read())["error"]
    conn.close()
    assert _post(server, {"text": "fine"})[0] == 200


def test_page_and_info(server):
    status, ctype, body = _get(server, "/")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert (
        "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    )
    status, _, body = _get(server, "/api/info")
    info = json.loads(body)
    assert (info["n_layer"], info["n_head"], info["n_kv_head"], info["max_tokens"]) == (2, 4, 2, 2048)
    assert (
        info["sample_text"] == "The cat sat on the mat. The cat sat on the"
    )  # no run data: the built-in one


def _save_run(run_dir: Path) -> Path:
    m = _model()
    save_checkpoint(
        run_dir / "ckpt.pt",
        model=m.state_dict(),
        model_config=m.config.to_dict(),
        step=3,
        config={},
        tokenizer=META,
    )
    return run_dir


@pytest.mark.slow
def test_heads_py_serve_true(tmp_path):
    run = _save_run(tmp_path / "run")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "heads.py"), f"run={run}", "serve=true", "port=0", "host=127.0.0.1"]
    p = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("live head viewer: open http://127.0.0.1:"), line + p.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/api/attention",
            body=json.dumps({"text": "Hello"}),
            headers={"Content-Type": "application/json"},
        )
        assert json.loads(conn.getresponse().read())["tokens"] == list("Hello")
        conn.close()
        # a second server on the same port: one line, exit 2
        bad = subprocess.run(
            cmd[:-2] + [f"port={port}"], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert bad.returncode == 2 and bad.stderr.startswith(f"error: port {port} is in use")
        assert bad.stderr.count("\n") == 1
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0 and err.strip() == "stopped"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run"]  # nothing written


def test_serve_bad_port_is_one_line(tmp_path):
    run = _save_run(tmp_path / "run")
    r = subprocess.run(
        [sys.executable, str(ROOT / "heads.py"), f"run={run}", "serve=true", "port=99999"],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert (
        r.returncode == 2 and r.stderr.startswith("error: port=99999 must be") and r.stderr.count("\n") == 1
    )


def _shown(page, table):
    return page.eval_on_selector_all(
        f"#{table} td.wcell",
        "cs => cs.map(c => [+c.dataset.layer, +c.dataset.head, +c.dataset.q, +c.dataset.k, +c.dataset.w])",
    )


def _wait_update(page, n):
    page.wait_for_function(f"() => +(document.body.dataset.updated || 0) >= {n}", timeout=20_000)


@pytest.mark.browser
def test_live_page_in_chromium(server, chromium):
    errors = []
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on(
        "request",
        lambda r: None if r.url.startswith(server.url) else errors.append(f"off-server request {r.url}"),
    )
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert page.locator("#grid canvas").count() == 8
    # it opens with the sample text already analysed: tokens, patterns and predictions, no typing needed
    _wait_update(page, 1)
    sample = server.live.sample_text
    assert page.input_value("#text") == sample
    _, _, first = _post(server, {"text": sample, "top_k": 10})
    shown = page.eval_on_selector_all("#tokens .tok", "ts => ts.map(t => t.textContent)")
    assert shown == first["tokens"] and page.locator("#preds li").count() == 10
    painted = page.evaluate(
        "() => { const c = document.getElementById('thumb-1-3'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; return c.width > 0 && d.some((v, i) => i % 4 < 3 && v < 245); }"
    )
    assert painted  # the pattern is drawn, not a blank grid
    page.fill("#text", "")
    page.type("#text", SENTENCE, delay=5)  # real key presses: one input event each, debounced
    _wait_update(page, 2)
    page.wait_for_function(f"() => document.querySelectorAll('#tokens .tok').length === {len(SENTENCE)}")
    T = len(SENTENCE)
    _, _, api = _post(server, {"text": SENTENCE})
    pats = np.array(api["patterns"])

    # click a token in layer 1, head 3: what it attends to (its row) and what attends to it (its column)
    page.click("#thumb-1-3")
    q = 20
    page.click(f"#tokens .tok[data-i='{q}']")
    to, by = _shown(page, "attends-to"), _shown(page, "attended-by")
    assert len(to) == q + 1 and len(by) == T - q
    for l, h, qq, k, w in to:
        assert (l, h, qq) == (1, 3, q) and w == pytest.approx(pats[1, 3, q, k], abs=1.1e-4)
    shown_tokens = page.eval_on_selector_all(
        "#attends-to tbody tr", "rs => rs.map(r => [+r.cells[0].textContent, r.cells[1].textContent])"
    )
    assert dict(shown_tokens)[3] == "\u2423" and dict(shown_tokens)[4] == "c"  # SENTENCE[3] is a space
    for l, h, qq, k, w in by:
        assert (l, h, k) == (1, 3, q) and w == pytest.approx(pats[1, 3, qq, q], abs=1.1e-4)
    # the metrics and DLA shown are the API's
    for m, vals in (("prev_token", api["metrics"]["prev_token"]), ("dla", api["dla"])):
        cell = page.get_attribute(f"#metrics tr[data-l='1'][data-h='3'] td[data-m='{m}']", "data-v")
        assert float(cell) == pytest.approx(vals[1][3], abs=1e-4)

    # ablate the head that pushes the top prediction hardest: the predictions change, as the API says
    before = page.eval_on_selector_all("#preds li", "ls => ls.map(l => [+l.dataset.id, +l.dataset.prob])")
    assert [i for i, _ in before] == [p["id"] for p in api["predictions"]]
    heads = np.abs(np.array(api["dla_last"]["heads"]))
    l, h = np.unravel_index(heads.argmax(), heads.shape)
    n = int(page.get_attribute("body", "data-updated"))
    page.check(f"input.ablate[data-l='{l}'][data-h='{h}']")
    _wait_update(page, n + 1)
    after = page.eval_on_selector_all("#preds li", "ls => ls.map(l => [+l.dataset.id, +l.dataset.prob])")
    _, _, abl = _post(server, {"text": SENTENCE, "ablate": [[int(l), int(h)]]})
    assert [(p["id"], p["prob"]) for p in abl["predictions"]] == [tuple(x) for x in after]
    assert after != before and max(abs(a[1] - b[1]) for a, b in zip(after, before)) > 1e-3
    clean = page.eval_on_selector_all("#preds-clean li", "ls => ls.map(l => +l.dataset.id)")
    assert clean == [i for i, _ in before]  # the clean predictions stay beside them
    assert f"L{l}H{h}" in page.inner_text("#status")

    # a text past the training length (rope runs on), with a visible notice
    n = int(page.get_attribute("body", "data-updated"))
    page.fill("#text", "abc " * 30)
    _wait_update(page, n + 1)
    assert page.is_visible("#notice") and "past the model's training length (64)" in page.inner_text(
        "#notice"
    )
    assert page.eval_on_selector("#tokens", "b => +b.dataset.n") == 120
    page.fill("#text", SENTENCE)
    _wait_update(page, n + 2)
    assert page.inner_text("#notice") == ""
    page.click(f"#tokens .tok[data-i='{q}']")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heads_live.png"), full_page=True)
    assert not errors, errors


def test_a_failing_model_is_a_500_line_and_the_server_goes_on(server, monkeypatch):
    def boom(**kw):
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(server.live, "analyse", boom)
    status, _, d = _post(server, {"text": "hi"})
    assert status == 500 and d["error"].startswith(
        "the model failed on this text (RuntimeError: out of memory"
    )
    assert "\n" not in d["error"]
    monkeypatch.undo()
    assert _post(server, {"text": "hi"})[0] == 200


# ------------------------------------------------------------------------------------------ raw HTTP


def _raw(srv, data: bytes) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes the connection."""
    import socket

    with socket.create_connection(srv.server_address[:2], timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
    return out


def _request(body: bytes, host="127.0.0.1", extra=b"") -> bytes:
    return (
        b"POST /api/attention HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (host.encode(), len(body), extra)
        + body
    )


def test_a_refused_request_ends_the_connection_so_nothing_rides_behind_it(server):
    """A second request inside a refused one's body (or behind it) is never parsed: one answer, then EOF."""
    inner = _request(b'{"text": "smuggled"}', extra=b"Connection: close\r\n")
    for data in (
        _request(inner, host="evil.example"),  # in the body of a request the Host check refuses
        _request(b"", host="evil.example") + inner,  # pipelined right behind it
        _request(b"{}") + inner,  # behind a 400
        _request(b'{"text": "hi"}', extra=b"Content-Length: 0\r\n") + inner,  # two Content-Lengths
    ):
        out = _raw(server, data)
        assert out.count(b"HTTP/1.1 ") == 1, out[:300]
        assert out.split(b" ", 2)[1] in (b"400", b"403", b"411") and b"Connection: close" in out
        assert b"smuggled" not in out
    good = _raw(server, _request(b'{"text": "ok"}', extra=b"Connection: close\r\n"))
    assert good.startswith(b"HTTP/1.1 200") and b'"tokens":["o","k"]' in good


def test_malformed_json_is_a_json_400_and_one_log_line(server, capsys):
    cases = [
        (b'{"text": "ab\\ud800cd"}', "lone surrogate"),  # half of a UTF-16 pair, as a JSON escape
        (b"[" * 100_000, "nested too deeply"),
        (b'{"text": "hi", "top_k": ' + b"9" * 5000 + b"}", "not JSON"),  # past Python's int-conversion limit
    ]
    for body, message in cases:
        capsys.readouterr()
        status, ctype, d = _post(server, body)
        assert status == 400 and ctype.startswith("application/json") and message in d["error"]
        log = capsys.readouterr().err
        assert log.count("\n") == 1 and log.startswith("heads server: 400 POST /api/attention: "), log
    assert _post(server, {"text": "still here"})[0] == 200


def test_bursts_of_simultaneous_requests_are_all_answered():
    """A browser's burst: connections that arrive while the server is busy wait in the listen queue (the
    standard library's backlog of 5 drops or resets the rest), and 3 bursts of 20 parallel posts all get 200."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    srv = HeadServer(LiveModel(_model(), get_tokenizer(META)), "127.0.0.1", 0)
    serving = threading.Thread(target=srv.serve_forever, daemon=True)
    try:
        # not accepting yet (busy): the kernel completes these handshakes only while the backlog has room
        waiting = [socket.create_connection(srv.server_address[:2], timeout=5) for _ in range(20)]
        serving.start()
        for s in waiting:
            s.sendall(_request(b'{"text": "queued"}', extra=b"Connection: close\r\n"))
        for s in waiting:
            assert s.makefile("rb").readline().startswith(b"HTTP/1.1 200")
            s.close()
        for _ in range(3):
            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(lambda i: _post(srv, {"text": "burst " + "a" * i}), range(20)))
            assert [a[0] for a in answers] == [200] * 20
            assert [a[2]["n_tokens"] for a in answers] == [6 + i for i in range(20)]
    finally:
        if serving.is_alive():
            srv.shutdown()
        srv.server_close()
