"""The live viewer's analysis of one text: patterns, per-head metrics, logit attribution and predictions.

:class:`LiveModel` wraps a loaded model and its tokenizer. ``parse_request(obj)`` checks a decoded JSON request
and ``LiveModel.analyse(...)`` answers it with a JSON-ready dict (the API of ``POST /api/attention``,
documented in docs/heads.md). Nothing here knows about HTTP: gptlab/interp/serve.py does that.

One forward on the explicit attention path (with any zero-ablations as hook_z hooks) records the patterns and
everything the logit attribution and the logit lens need; with ablations a second, clean forward gives the
predictions without them for comparison. Calls are serialised by a lock: hooks are registered on the one model.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from gptlab.errors import UserError

from . import circuits as CI
from . import metrics as M
from .ablation import ablation_hooks
from .html import token_label, token_texts
from .pattern_codec import encode, encode_pattern, encoded_bytes, encoding_for, thumbnails

MAX_TOKENS = 2048  # the longest text the viewer runs (a learned-position model: at most its block_size)
PAGE_BUDGET = 2_000_000  # base64 bytes of patterns in a "page" answer; past it only the asked-for heads
ENCODINGS = ("json", "b64", "page")
FIELDS = {"text", "ablate", "encoding", "top_k", "heads"}
MAX_TOP_K = 50
DIGITS = 6  # attention weights in the JSON encoding are rounded to this many decimals


class BadRequest(ValueError):
    """A request the API cannot answer; the message says what to send instead (a 400 for the server)."""


def _head_pairs(obj: dict, key: str, n_layer: int, n_head: int) -> list[tuple[int, int]]:
    """The `[[layer, head], ...]` list under ``key``, checked, as sorted unique pairs."""
    items = obj.get(key, [])
    if not isinstance(items, list):
        raise BadRequest(f'"{key}" must be a list of [layer, head] pairs')
    pairs = []
    for p in items:
        ok = (
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in p)
        )
        if not ok or not (0 <= p[0] < n_layer and 0 <= p[1] < n_head):
            raise BadRequest(
                f'"{key}" entries are [layer, head] with layer in 0..{n_layer - 1} and head in 0..{n_head - 1}; '
                f"got {str(p)[:40]}"
            )
        pairs.append((p[0], p[1]))
    return sorted(set(pairs))


def parse_request(obj, n_layer: int, n_head: int) -> dict:
    """Check a decoded JSON request: `{"text": str, "ablate": [[l, h], ...], "encoding": ..., "top_k": int,
    "heads": [[l, h], ...]}` (``heads``: with ``"encoding": "page"``, the heads whose whole pattern is wanted)."""
    if not isinstance(obj, dict):
        raise BadRequest(f'send a JSON object like {{"text": "..."}}, not a JSON {type(obj).__name__}')
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(FIELDS))}")
    if "text" not in obj:
        raise BadRequest('missing "text": send {"text": "..."}')
    text = obj["text"]
    if not isinstance(text, str):
        raise BadRequest(f'"text" must be a string, got {type(text).__name__}')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON can carry "\ud800": half of a UTF-16 pair, no character at all
        raise BadRequest(
            f'"text" holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is no '
            "character; send valid Unicode"
        ) from None
    pairs = _head_pairs(obj, "ablate", n_layer, n_head)
    encoding = obj.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise BadRequest(f'"encoding" must be one of {", ".join(ENCODINGS)}, got {str(encoding)[:20]!r}')
    top_k = obj.get("top_k", 10)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise BadRequest(f'"top_k" must be an integer from 1 to {MAX_TOP_K}, got {str(top_k)[:20]}')
    out = {"text": text, "ablate": pairs, "encoding": encoding, "top_k": top_k}
    if "heads" in obj:  # only when asked: analyse's other callers need not know the field
        out["heads"] = _head_pairs(obj, "heads", n_layer, n_head)
    return out


def _nested(a: np.ndarray, digits: int = 4):
    """`a` as nested lists, rounded, NaN as None."""
    a = np.round(np.asarray(a, dtype=np.float64), digits)
    out = a.tolist()
    if np.isnan(a).any():
        out = np.where(np.isnan(a), None, a.astype(object)).tolist()
    return out


SAMPLE = "The cat sat on the mat. The cat sat on the"  # repeats, so induction heads have something to do


def default_sample(tokenizer, block_size: int) -> str:
    """A text the page can open with when the run's data is not at hand: :data:`SAMPLE` if the tokenizer takes
    it, else a random segment of ids repeated (an induction probe) as the tokenizer writes it."""
    try:
        if tokenizer.encode(SAMPLE):
            return SAMPLE
    except UserError:  # a char vocabulary without some of its letters, or the ids tokenizer
        pass
    rng = np.random.default_rng(0)
    n = max(1, min(block_size, 48) // 2)
    seg = rng.choice(tokenizer.vocab_size, size=min(n, tokenizer.vocab_size), replace=False).tolist()
    return tokenizer.decode(seg + seg)


class LiveModel:
    """A model and tokenizer answering live-viewer requests (see :func:`parse_request` for the fields).

    ``sample_text`` is what the page opens with (heads.py passes the start of the run's val text); by default
    :func:`default_sample`. Texts are cut at ``max_tokens`` (:data:`MAX_TOKENS`), and at the block size for a
    model whose positions stop there (``learned``); the other schemes run past their training length.

    The last analysis is kept (one entry: text, ablations, top_k), so asking again for other heads' patterns
    of the same text (the page does when a head is selected) only encodes them.
    """

    def __init__(
        self,
        model,
        tokenizer,
        title: str = "heads",
        info: dict | None = None,
        sample_text: str | None = None,
        max_tokens: int = MAX_TOKENS,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.sample_text = sample_text or default_sample(tokenizer, cfg.block_size)
        self.max_tokens = min(model.max_seq_len or max_tokens, max_tokens)
        self.title = title
        self.extra_info = info or {}
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()  # hooks live on the one model: one request at a time
        self._last = None  # (key, answer without patterns, patterns (L, H, T, T))

    def info(self) -> dict:
        cfg = self.model.config
        return {
            "title": self.title,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_kv_head": cfg.kv_heads,
            "block_size": cfg.block_size,
            "max_tokens": self.max_tokens,
            "position": cfg.position,
            "vocab_size": cfg.vocab_size,
            "tokenizer": self.tokenizer.name,
            "info": self.extra_info,
            "sample_text": self.sample_text,
        }

    def _labels(self, ids: list[int]) -> list[str]:
        return [token_label(t) for t in token_texts(self.tokenizer, ids)]

    def _predictions(self, logits: torch.Tensor, k: int) -> list[dict]:
        """Top-k next tokens after the last position: token, id, probability, logit."""
        p = torch.softmax(logits.float(), -1)
        top = torch.topk(p, min(k, p.shape[-1]))
        labels = self._labels(top.indices.tolist())
        return [
            {"token": t, "id": int(i), "prob": round(float(pr), 6), "logit": round(float(logits[i]), 4)}
            for t, i, pr in zip(labels, top.indices.tolist(), top.values.tolist())
        ]

    def analyse(self, text: str, ablate=(), encoding: str = "json", top_k: int = 10, heads=None) -> dict:
        """Everything the page shows for `text` with the `ablate` heads zero-ablated (see docs/heads.md).

        ``heads`` (with ``encoding="page"``): the heads whose whole pattern the answer must hold; all heads come
        when they fit :data:`PAGE_BUDGET`."""
        t0 = time.perf_counter()
        key = (text, tuple(map(tuple, ablate)), top_k)
        with self.lock:
            last = self._last
        hit = last is not None and last[0] == key
        if hit:
            out, p = dict(last[1]), last[2]
        else:
            out, p = self._analyse(text, ablate, top_k)
            with self.lock:
                self._last = (key, out, p)
            out = dict(out)
        L, H, T = p.shape[0], p.shape[1], p.shape[-1]
        if encoding == "page":
            enc = encoding_for(T)
            every = [(l, h) for l in range(L) for h in range(H)]
            fits = encoded_bytes(L * H, T, enc) <= PAGE_BUDGET
            out["pattern_encoding"] = enc
            out["patterns_page"] = {
                f"{l},{h}": encode(p[l, h], enc) for l, h in (every if heads is None or fits else heads)
            }
            out["thumbs"] = thumbnails(p)  # layer-major, as `every`
        elif encoding == "b64":
            out["patterns_b64"] = [encode_pattern(p[l, h]) for l in range(L) for h in range(H)]
        else:
            out["patterns"] = np.round(p.astype(np.float64), DIGITS).tolist()
        out["timing_ms"] = {  # a repeated question (other heads of the same text) runs no model
            "model": 0.0 if hit else out["timing_ms"]["model"],
            "total": round(1000 * (time.perf_counter() - t0), 2),
            "cached": hit,
        }
        return out

    @torch.no_grad()
    def _analyse(self, text: str, ablate, top_k: int) -> tuple[dict, np.ndarray]:
        """The answer without its patterns, and the patterns `(L, H, T, T)` as float32."""
        t0 = time.perf_counter()
        try:
            ids = self.tokenizer.encode(text)
        except UserError as e:
            raise BadRequest(str(e)) from None
        if not ids:
            raise BadRequest("the text encodes to no tokens; type something")
        total = len(ids)
        notices = []
        block = self.model.config.block_size
        if total > self.max_tokens:
            ids = ids[: self.max_tokens]
            why = (
                f"the model's context is {block} tokens"
                if self.model.max_seq_len is not None
                else f"the viewer runs at most {self.max_tokens}"
            )
            notices.append(f"the text has {total} tokens; only the first {self.max_tokens} are shown ({why})")
        if len(ids) > block:
            notices.append(
                f"{len(ids)} tokens is past the model's training length ({block}): "
                f"its {self.model.config.position} positions from {block} on are extrapolated"
            )
        notice = "; ".join(notices) or None
        m, L = self.model, self.model.config.n_layer
        x = torch.tensor(ids, dtype=torch.long, device=self.device)
        pat_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
        names = list(dict.fromkeys(pat_names + CI.dla_hook_names(m) + CI.lens_hook_names(m)))
        with self.lock:
            t1 = time.perf_counter()
            with m.hooks(ablation_hooks(ablate)):
                logits, cache = m.run_with_cache(x[None], names=names, attn_impl="explicit")
            clean = m(x[None])[0][0, -1] if ablate else None
            t2 = time.perf_counter()
        T = len(ids)
        pats = torch.stack([cache[n] for n in pat_names])  # (L, 1, H, T, T)
        metrics = M.pattern_metrics(pats.float(), window=m.config.window)
        metrics.update(M.probe_metrics(pats.float(), x[None]))  # induction / duplicate on the text itself
        top1 = int(logits[0, -1].argmax())
        # positions 0..T-2: the next token; T-1: the top prediction
        positions = torch.arange(T, device=self.device)
        targets = torch.cat([x[1:], torch.tensor([top1], device=self.device)])
        att = CI.attribution_from_cache(m, logits, cache, positions, targets)
        dla = att.heads[:-1].mean(0).numpy() if T > 1 else np.full(att.heads.shape[1:], np.nan)
        p = pats[:, 0].float().cpu().numpy()  # (L, H, T, T)
        out = {
            "tokens": self._labels(ids),
            "ids": ids,
            "n_tokens": T,
            "total_tokens": total,
            "truncated": total > len(ids),
            "notice": notice,
            "n_layer": L,
            "n_head": m.config.n_head,
            "n_kv_head": m.config.kv_heads,
            "ablate": [list(a) for a in ablate],
            "metrics": {k: _nested(metrics[k].cpu().numpy()) for k in M.METRIC_NAMES if k in metrics},
            "dla": _nested(dla),
            "dla_last": {
                "token": self._labels([top1])[0],
                "id": top1,
                "heads": _nested(att.heads[-1].numpy()),
            },
            "predictions": self._predictions(logits[0, -1], top_k),
            "predictions_clean": self._predictions(clean, top_k) if clean is not None else None,
            "logit_lens": CI.logit_lens_from_cache(m, cache, x) if T > 1 else [],
            "timing_ms": {
                "model": round(1000 * (t2 - t1), 2),
                "analysis": round(1000 * (time.perf_counter() - t0), 2),
            },
        }
        return out, p
