"""The live head viewer's HTTP server: the page and a small JSON API over :class:`interp.live.LiveModel`.

Standard library only (``http.server.ThreadingHTTPServer``): three endpoints do not need a framework.

    GET  /                 the page (self-contained: inline CSS/JS, loads nothing from the network)
    GET  /api/info         the model: layers, heads, context, tokenizer
    POST /api/attention    {"text": ..., "ablate": [[l, h], ...], "encoding": "json"|"b64", "top_k": 10}
    POST /api/compare      the same and "ablate_b", for both models (a server started with compare=)

Every error is a JSON object ``{"error": "..."}`` with a 4xx status, one line in the server's log, and the end
of that connection (nothing sent after a refused request is read as a request); the server keeps serving: 400
bad JSON or fields, 403 a Host header that is not this loopback server's (DNS rebinding), 404 unknown path, 405
wrong method, 411 no Content-Length, 413 body over ``MAX_BODY``, 415 not ``application/json`` (which also
stops cross-site form posts: a page elsewhere cannot send JSON here without a CORS preflight, which this
server never grants); a failure inside the model is a 500 with one line (the traceback goes to stderr).
It binds 127.0.0.1 by default; anyone who can reach the port can run the model on
any text (and nothing else: no file is read or written for a request).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .live import BadRequest, LiveModel, parse_request
from .live_compare import LiveCompare, parse_compare_request
from .live_page import page

MAX_BODY = 1 << 20  # bytes of request body (a text of ~1 MB; the model sees at most its context anyway)
DRAIN_LIMIT = 64 << 20  # a larger refused body is not read: the connection is closed on it


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "gptlab-heads"
    protocol_version = "HTTP/1.1"  # keep-alive: the page sends a request per pause in typing
    timeout = 30  # seconds a client may take to send its request

    # ------------------------------------------------------------------------------------------ replies
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        """Refuse the request: a JSON error, one line in the server log, and the connection closed after it.

        Whatever the client sent after a refused request (its unread body, a second request behind it) is
        never parsed as a request: a body of sane size is read and dropped first (closing with unread bytes
        makes the client's TCP stack see a reset instead of this answer), then the connection ends.
        """
        self._discard_body()
        self.close_connection = True
        self.log_error("%d %s %s: %s", status, self.command, self.path.split("?", 1)[0][:80], message)
        body = json.dumps({"error": message, "status": status}, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", {"Connection": "close"})

    def _begin(self) -> None:
        """Note how many body bytes this request declares (None: not known, so no request may follow it)."""
        te, lengths = self.headers.get("Transfer-Encoding"), self.headers.get_all("Content-Length") or []
        if te or len(lengths) > 1:
            self._unread = None
        elif not lengths:
            self._unread = 0
        else:
            v = lengths[0].strip()
            self._unread = int(v) if v.isascii() and v.isdigit() else None  # not "²", not "-1", not "0x10"

    def _discard_body(self) -> None:
        """Read and drop the body not read yet; when that is not possible, end the connection after the answer."""
        n, self._unread = getattr(self, "_unread", 0), 0
        if n is None or n > DRAIN_LIMIT or (n and not self._drain(n)):
            self.close_connection = True

    def _host_ok(self) -> bool:
        """A loopback server answers only requests addressed to a loopback name (no DNS rebinding)."""
        self._begin()
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if _is_loopback(host):
            return True
        self._error(403, f"Host {host[:80]!r} is not this loopback server; open http://127.0.0.1:<port>/")
        return False

    def log_message(self, fmt, *args) -> None:  # quiet: one line per error only
        pass

    def log_error(self, fmt, *args) -> None:
        print(f"heads server: {fmt % args}", file=sys.stderr)

    # ------------------------------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._host_ok():
            return
        self._discard_body()  # a GET has no use for a body; what follows it is the next request, or nothing
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8", {"Content-Security-Policy": CSP})
        elif path == "/api/info":
            cmp = self.server.compare
            self._json(200, {**self.server.live.info(), **({"compare": cmp.info()} if cmp else {})})
        elif path in ("/api/attention", "/api/compare"):
            self._error(405, f'use POST {path} with a JSON body {{"text": "..."}}')
        else:
            self._error(
                404,
                f"no such page {path[:80]!r}; the endpoints are GET /, GET /api/info, POST /api/attention",
            )

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if self.headers.get("Transfer-Encoding"):
            return self._error(411, "send the body with a Content-Length (no chunked encoding)")
        if self._unread is None or self.headers.get("Content-Length") is None:
            return self._error(411, "send one Content-Length header (digits only) with the JSON body")
        n = self._unread
        if n > MAX_BODY:
            return self._error(413, f"the body has {n} bytes; send at most {MAX_BODY}")
        raw = self.rfile.read(n)  # read before any answer, so the connection stays usable
        self._unread = 0
        if len(raw) < n:
            self.close_connection = True  # the client stopped sending: nothing to answer on
            return
        if path not in ("/api/attention", "/api/compare"):
            return self._error(404, f"no such endpoint {path[:80]!r}; POST to /api/attention")
        cmp = self.server.compare
        if path == "/api/compare" and cmp is None:
            return self._error(
                404, "this server shows one model: start it with heads.py run=<A> compare=<B> serve=true"
            )
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return self._error(415, f"send Content-Type: application/json (got {ctype[:40] or 'none'!r})")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            # ValueError: bad JSON, and also an integer of more digits than Python converts; RecursionError:
            # arrays or objects nested past Python's recursion limit
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0][:80]
            return self._error(400, f'the body is not JSON ({why}); send {{"text": "..."}}')
        live = self.server.live
        cfg = live.model.config
        try:
            if path == "/api/compare":
                out = cmp.analyse(**parse_compare_request(obj, *cmp.shapes()))
            else:
                out = live.analyse(**parse_request(obj, cfg.n_layer, cfg.n_head))
        except BadRequest as e:
            return self._error(400, str(e))
        except Exception as e:  # the server's boundary: say so in one line, log the traceback, keep serving
            traceback.print_exc(file=sys.stderr)
            first = (str(e).splitlines() or [""])[0][:120]
            return self._error(500, f"the model failed on this text ({type(e).__name__}: {first})")
        self._json(200, out)

    def _drain(self, n: int) -> bool:
        """Read and discard ``n`` body bytes; False if the client stopped sending."""
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                return False
            n -= len(chunk)
        return True

    def _not_allowed(self) -> None:
        self._begin()
        self._error(405, f"{self.command} is not supported; use GET / or POST /api/attention")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815


CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)


class HeadServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the LiveModel and the page; daemon threads, so Ctrl-C stops it at once.

    Each connection gets a thread; the model work is serialised by LiveModel's lock. The listen backlog holds a
    burst of connections that arrive while the server is busy (a browser opens several at once; with the
    standard library's 5, the rest are dropped or reset).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog (the kernel may cap it: net.core.somaxconn)

    def __init__(
        self, live: LiveModel, host: str = "127.0.0.1", port: int = 8765, compare: LiveCompare | None = None
    ):
        if not host:
            raise ValueError(
                "host is empty, which would listen on every address; pass 127.0.0.1 or an address"
            )
        self.live = live
        self.compare = compare  # with a second model: / is the side-by-side page, /api/compare answers
        self.loopback_only = _is_loopback(host)
        if compare is not None:
            from .compare_live_page import compare_live_page

            self.page = compare_live_page(compare.info()).encode("utf-8")
        else:
            self.page = page(live.info()).encode("utf-8")
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address) -> None:
        """Anything that escapes a request (a client that hung up mid-answer): one line, and keep serving."""
        e = sys.exc_info()[1]
        first = (str(e).splitlines() or [""])[0][:120]
        print(f"heads server: {client_address[0]}: {type(e).__name__}: {first}", file=sys.stderr)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"
