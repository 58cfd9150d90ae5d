"""How attention patterns travel to the head pages (heads.html, the live viewer): compact base64 strings.

Each head's `(T, T)` pattern is causal, so only its lower triangle, row by row (`T (T + 1) / 2` weights), is
sent, in one of two encodings (`common.js`'s ``decodePattern`` reads both):

- ``u16``: every weight as little-endian uint16 `round(w * 65535)` (error <= 7.7e-6). Used up to
  :data:`U16_MAX_TOKENS` tokens: 12 x 12 heads at 256 tokens is about 12 MB.
- ``u8``: per row, its largest weight `m` as a little-endian float32 (the `T` scales come first), then each
  weight as uint8 `round(w / m * 255)`: the error is at most `m / 510` (half a step of the row's own scale),
  so a row of small weights keeps its shape. Half the size of ``u16``; used for longer texts, where a head
  at 2,048 tokens is 2.8 MB of base64 instead of 5.6 MB.

A thumbnail (:func:`thumbnail`) is the pattern max-pooled to at most 64 x 64 cells, as uint8
`round(255 * sqrt(max))` (the pages' colour scale), so a page can draw every head's thumbnail without
decoding any full pattern.
"""

from __future__ import annotations

import base64
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

U16_MAX_TOKENS = 512  # longer texts travel as u8
THUMB = 64  # thumbnail side in cells (at most)


@lru_cache(maxsize=4)
def _tril_mask(T: int) -> np.ndarray:
    return np.tril(np.ones((T, T), dtype=bool))


def encoding_for(T: int) -> str:
    """The encoding the pages use for a `T`-token text."""
    return "u16" if T <= U16_MAX_TOKENS else "u8"


def encode_pattern(pattern: np.ndarray) -> str:
    """Lower triangle of one `(T, T)` pattern, row by row, as base64 of little-endian uint16 (w * 65535)."""
    T = pattern.shape[-1]
    tri = np.asarray(pattern, dtype=np.float64)[_tril_mask(T)]
    q = np.clip(np.rint(tri * 65535), 0, 65535)
    return base64.b64encode(q.astype("<u2").tobytes()).decode("ascii")


def encode_pattern_u8(pattern: np.ndarray) -> str:
    """One `(T, T)` pattern as ``u8``: `T` float32 row maxima, then the lower triangle as uint8 of w / max."""
    p = np.clip(np.asarray(pattern, dtype=np.float32), 0, None)
    T = p.shape[-1]
    scale = np.where(_tril_mask(T), p, 0).max(axis=1)  # (T,)
    safe = np.where(scale > 0, scale, 1)
    q = np.rint(p / safe[:, None] * 255).clip(0, 255).astype(np.uint8)[_tril_mask(T)]
    return base64.b64encode(scale.astype("<f4").tobytes() + q.tobytes()).decode("ascii")


def encode(pattern: np.ndarray, encoding: str) -> str:
    """One pattern in ``encoding`` ("u16" or "u8")."""
    return encode_pattern(pattern) if encoding == "u16" else encode_pattern_u8(pattern)


def decode(data: str, T: int, encoding: str = "u16") -> np.ndarray:
    """Inverse of :func:`encode` (used by tests): `(T, T)` float64 with zeros above the diagonal."""
    raw = base64.b64decode(data)
    if encoding == "u16":
        tri = np.frombuffer(raw, dtype="<u2").astype(np.float64) / 65535
    else:
        scale = np.frombuffer(raw[: 4 * T], dtype="<f4").astype(np.float64)
        q = np.frombuffer(raw[4 * T :], dtype=np.uint8).astype(np.float64)
        rows = np.repeat(np.arange(T), np.arange(1, T + 1))
        tri = q * scale[rows] / 255
    out = np.zeros((T, T))
    out[_tril_mask(T)] = tri
    return out


def max_error(pattern: np.ndarray, encoding: str) -> np.ndarray:
    """The largest decoding error of each row of `pattern` (T,) in ``encoding``: what a test may allow."""
    T = pattern.shape[-1]
    if encoding == "u16":
        return np.full(T, 0.5 / 65535)
    return np.asarray(pattern, dtype=np.float64).max(axis=1) / 510 * (1 + 1e-6) + 1e-7


def encoded_bytes(n_heads: int, T: int, encoding: str) -> int:
    """Characters of base64 that `n_heads` patterns of `T` tokens take in ``encoding``."""
    n = T * (T + 1) // 2 * (2 if encoding == "u16" else 1) + (0 if encoding == "u16" else 4 * T)
    return n_heads * 4 * ((n + 2) // 3)


def thumb_bounds(T: int, n: int) -> np.ndarray:
    """First cell of each of the `n` thumbnail pixels along one axis (the pages' drawTri uses the same)."""
    return np.floor(np.arange(n) * (T / n)).astype(np.int64)


def thumbnails(patterns: np.ndarray, size: int = THUMB) -> list[str]:
    """Each `(T, T)` pattern of `patterns (..., T, T)` max-pooled to `n x n` (n = min(T, size)) as base64 uint8
    `round(255 * sqrt(max))`, in the order of the leading axes."""
    p = np.asarray(patterns, dtype=np.float32)
    T = p.shape[-1]
    p = p.reshape(-1, T, T) * _tril_mask(T)  # clipped to [0, 1] after pooling (the max commutes with it)
    n = min(T, size)
    if T % n == 0:  # equal blocks: torch's max pooling (numpy's max over a short axis is slow)
        r = T // n
        m = F.max_pool2d(torch.from_numpy(p)[:, None], r)[:, 0].numpy()
    else:
        b = thumb_bounds(T, n)
        m = np.maximum.reduceat(np.maximum.reduceat(p, b, axis=1), b, axis=2)
    q = np.rint(255 * np.sqrt(np.clip(m, 0, 1).astype(np.float64))).astype(np.uint8)  # (heads, n, n)
    return [base64.b64encode(x.tobytes()).decode("ascii") for x in q]


def thumbnail(pattern: np.ndarray, size: int = THUMB) -> str:
    """One pattern's thumbnail (:func:`thumbnails`)."""
    return thumbnails(pattern[None], size)[0]
