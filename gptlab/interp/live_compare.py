"""The live viewer with two models (``heads.py run=<A> compare=<B> serve=true``): one text through both.

:class:`LiveCompare` holds two :class:`interp.live.LiveModel` s of the same tokenizer and answers
``POST /api/compare`` (docs/heads.md): each model's answer as ``/api/attention`` gives it (patterns, metrics,
predictions, with its own ablations), and the heads of A matched to heads of B on this text
(gptlab/interp/pairing.py: the same similarity, depth groups and assignment as compare.csv, on the typed text only and
on the models without their ablations, so ticking an ablation does not reshuffle the pairs).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .html import decode_pattern
from .live import FIELDS, BadRequest, LiveModel, parse_request
from .pairing import head_rows, layer_groups, match_heads, similarity_matrix

COMPARE_FIELDS = FIELDS | {"ablate_b"}


def parse_compare_request(obj, shape_a: tuple[int, int], shape_b: tuple[int, int]) -> dict:
    """Check a decoded ``/api/compare`` request: ``/api/attention``'s fields, ``ablate`` for A's heads and
    ``ablate_b`` for B's."""
    if not isinstance(obj, dict):
        raise BadRequest(f'send a JSON object like {{"text": "..."}}, not a JSON {type(obj).__name__}')
    unknown = sorted(set(obj) - COMPARE_FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(COMPARE_FIELDS))}"
        )
    base = {k: v for k, v in obj.items() if k != "ablate_b"}
    a = parse_request(base, *shape_a)
    try:
        b = parse_request({**base, "ablate": obj.get("ablate_b", [])}, *shape_b)
    except BadRequest as e:
        raise BadRequest(str(e).replace('"ablate"', '"ablate_b"')) from None
    return {**a, "ablate_b": b["ablate"]}


def _finite(a: np.ndarray, digits: int = 4) -> list:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(a).reshape(-1)]


class LiveCompare:
    """Two live models answering one text; texts are cut at the shorter of the two contexts."""

    def __init__(self, a: LiveModel, b: LiveModel, method: str = "similarity"):
        self.a, self.b, self.method = a, b, method
        self.a.max_tokens = self.b.max_tokens = min(a.max_tokens, b.max_tokens)  # the same tokens for both

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return tuple((m.model.config.n_layer, m.model.config.n_head) for m in (self.a, self.b))

    def info(self) -> dict:
        return {
            "a": self.a.info(),
            "b": self.b.info(),
            "method": self.method,
            "max_tokens": self.a.max_tokens,
        }

    @staticmethod
    def _clean_patterns(live: LiveModel, answer: dict, ablated: bool) -> np.ndarray:
        """`(L, H, T, T)` without ablations: decoded from the answer, or one more forward when it had some."""
        if ablated:
            x = torch.tensor([answer["ids"]], dtype=torch.long, device=live.device)
            with live.lock, torch.no_grad():
                return live.model.attention_patterns(x)[:, 0].float().cpu().numpy()
        L, H, T = answer["n_layer"], answer["n_head"], answer["n_tokens"]
        if "patterns" in answer:
            return np.asarray(answer["patterns"], dtype=np.float32)
        return np.stack([decode_pattern(s, T) for s in answer["patterns_b64"]]).reshape(L, H, T, T)

    def analyse(self, text: str, ablate=(), ablate_b=(), encoding: str = "json", top_k: int = 10) -> dict:
        t0 = time.perf_counter()
        ra = self.a.analyse(text, ablate, encoding, top_k)
        rb = self.b.analyse(text, ablate_b, encoding, top_k)
        out = {"a": ra, "b": rb, "method": self.method}
        (La, _), (Lb, _) = self.shapes()
        groups = layer_groups(La, Lb)
        out["groups"] = [[list(ga), list(gb)] for ga, gb in groups]
        if ra["n_tokens"] < 2:  # query 0 attends only to itself in every head: nothing to match on
            out.update(pairs=[], unmatched_a=[], unmatched_b=[], similarity=None, mean_similarity=None)
            out["timing_ms"] = {"total": round(1000 * (time.perf_counter() - t0), 2)}
            return out
        pa = self._clean_patterns(self.a, ra, bool(ablate))
        pb = self._clean_patterns(self.b, rb, bool(ablate_b))
        m = match_heads(similarity_matrix([head_rows(pa)], [head_rows(pb)], groups), groups, self.method)
        out.update(
            pairs=[[*p[:4], round(p[4], 5)] for p in m.pairs],
            unmatched_a=[list(k) for k in m.unmatched_a],
            unmatched_b=[list(k) for k in m.unmatched_b],
            similarity=_finite(m.similarity),
            mean_similarity=round(m.mean_similarity, 5),
        )
        out["timing_ms"] = {"total": round(1000 * (time.perf_counter() - t0), 2)}
        return out
