"""Per-head metrics computed from attention patterns: pure functions on tensors.

Every function takes `pattern` of shape `(..., B, n_head, T, T)` (query on the second-to-last axis, key on
the last; rows sum to 1 over the visible keys) and returns one score per head, shape `(..., n_head)`: the
mean over the batch and over the query rows the metric is defined on (rows are pooled across the batch,
so every counted row weighs the same). Leading dims are free, so `model.attention_patterns(idx)`'s
`(n_layer, B, n_head, T, T)` gives `(n_layer, n_head)` tables directly.

Definitions, formulas and sources are in docs/heads.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def _row_mean(row_scores: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `row_scores (..., B, H, T)` over the rows where `row_mask` is true -> `(..., H)`.

    `row_mask` broadcasts against `(B, H, T)`: `(T,)` for position-only masks, `(B, 1, T)` for masks
    that depend on the tokens of each sequence. Heads with no counted row get NaN.
    """
    mask = row_mask.to(row_scores.dtype).expand(row_scores.shape[-3:])  # (B, H, T)
    total = (row_scores * mask).sum(dim=(-3, -1))  # (..., H)
    count = mask.sum(dim=(-3, -1))  # (H,)
    return total / count


def _positions(pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key indices `(T, 1)` and `(1, T)` on the pattern's device."""
    T = pattern.shape[-1]
    i = torch.arange(T, device=pattern.device)
    return i[:, None], i[None, :]


def visible_keys(T: int, window: int | None = None, device=None) -> torch.Tensor:
    """Number of keys query i can see under the causal mask (and a sliding window, if any): `(T,)`."""
    n = torch.arange(1, T + 1, device=device)
    return n if window is None else n.clamp(max=window)


def entropy(pattern: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Normalised attention entropy: `-sum_j A_ij log A_ij / log n_i`, n_i = keys visible to query i.

    1.0 for uniform attention over everything visible, 0.0 for attention on one key. Rows with a single
    visible key (query 0) are skipped because log 1 = 0.
    """
    T = pattern.shape[-1]
    p = pattern.clamp_min(0)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (..., B, H, T)
    n = visible_keys(T, window, pattern.device).to(pattern.dtype)  # (T,)
    rows = n > 1
    return _row_mean(h / torch.log(n.clamp_min(2)), rows)


def mean_distance(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention distance in tokens: `sum_j A_ij (i - j)`, averaged over queries i >= 1."""
    qi, kj = _positions(pattern)
    dist = (qi - kj).clamp_min(0).to(pattern.dtype)  # (T, T)
    d = (pattern * dist).sum(-1)  # (..., B, H, T)
    return _row_mean(d, torch.arange(pattern.shape[-1], device=pattern.device) >= 1)


def prev_token(pattern: torch.Tensor) -> torch.Tensor:
    """Previous-token score: mean attention from query i to key i-1, over queries i >= 1."""
    sub = torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1)  # (..., B, H, T-1): A[i+1, i]
    return sub.mean(dim=(-3, -1))


def sink(pattern: torch.Tensor) -> torch.Tensor:
    """First-token (attention sink) mass: mean attention from query i to key 0, over queries i >= 1."""
    return pattern[..., 1:, 0].mean(dim=(-3, -1))


def local(pattern: torch.Tensor, width: int = 4) -> torch.Tensor:
    """Local mass: mean attention from query i to the `width` most recent keys i-width+1..i, queries i >= 1."""
    qi, kj = _positions(pattern)
    near = ((qi - kj) >= 0) & ((qi - kj) < width)  # (T, T)
    m = (pattern * near.to(pattern.dtype)).sum(-1)  # (..., B, H, T)
    return _row_mean(m, torch.arange(pattern.shape[-1], device=pattern.device) >= 1)


def duplicate_mask(tokens: torch.Tensor) -> torch.Tensor:
    """`(B, T, T)` bool: key j < i holds the same token as query i."""
    qi, kj = _positions(tokens)
    same = tokens[:, :, None] == tokens[:, None, :]  # (B, T, T)
    return same & (kj < qi)


def induction_mask(tokens: torch.Tensor) -> torch.Tensor:
    """`(B, T, T)` bool: key j is the token right after an earlier occurrence of query i's token.

    Target j satisfies tokens[j-1] == tokens[i] with 1 <= j < i (so j-1 < i-1: a real earlier copy, and
    never the query itself). Position 0 (BOS / first token) is never a target.
    """
    B, T = tokens.shape
    qi, kj = _positions(tokens)
    prev_tok = torch.roll(tokens, 1, dims=1)  # prev_tok[:, j] = tokens[:, j-1] (j >= 1)
    match = tokens[:, :, None] == prev_tok[:, None, :]  # (B, T, T): tokens[i] == tokens[j-1]
    return match & (kj >= 1) & (kj < qi)


def _target_score(pattern: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean attention mass on `target (B, T, T)` keys, over query rows (>= 1) that have a target."""
    tgt = target[:, None].to(pattern.dtype)  # (B, 1, T, T)
    mass = (pattern * tgt).sum(-1)  # (..., B, H, T)
    rows = target.any(-1)  # (B, T)
    rows[:, 0] = False  # the BOS / first-token query is never counted
    return _row_mean(mass, rows[:, None, :])


def induction(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Induction (prefix-matching) score: attention from query i to the token after i's earlier copies.

    Averaged only over the query rows that have such a target (on a random sequence repeated twice, the
    second repeat), so an ideal induction head scores 1.0. `tokens` is `(B, T)`.
    """
    return _target_score(pattern, induction_mask(tokens))


def duplicate(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Duplicate-token score: attention from query i to earlier keys with the same token, over rows with one."""
    return _target_score(pattern, duplicate_mask(tokens))


def pattern_metrics(pattern: torch.Tensor, window: int | None = None) -> dict[str, torch.Tensor]:
    """The content-independent metrics of `pattern (..., B, H, T, T)`, each `(..., H)` (registry order)."""
    return {m.name: m.fn(pattern, window) for m in HEAD_METRICS if m.source == "pattern"}


def probe_metrics(pattern: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The token-matching metrics of `pattern` on a repeated-random-token probe `tokens (B, T)`."""
    return {m.name: m.fn(pattern, tokens) for m in HEAD_METRICS if m.source == "probe"}


def icl_positions(T: int) -> tuple[int, int]:
    """Early and late positions for the in-context-learning score, Olsson et al.'s 50 and 500 of 512 scaled to T."""
    early = max(1, round(50 * T / 512))
    late = min(T - 1, max(early + 1, round(500 * T / 512)))
    return early, late


def icl_score(token_losses: torch.Tensor, band: int | None = None) -> float:
    """In-context-learning score: mean loss around the late position minus around the early one.

    `token_losses (B, T)` is the per-token cross-entropy over sequences of the model's block size. Each
    position is widened to a band of +-`band` positions (default `T // 64`: +-4 at T = 256, +-8 at 512) so a
    few sequences give a stable number. Negative means later tokens are predicted better thanks to the
    context (Olsson et al. 2022).
    """
    T = token_losses.shape[-1]
    early, late = icl_positions(T)
    w = T // 64 if band is None else int(band)
    e = token_losses[:, max(1, early - w) : early + w + 1]
    la = token_losses[:, late - w : min(T, late + w + 1)]
    return float(la.mean() - e.mean())


def kv_head_of(head: int, n_head: int, n_kv_head: int | None) -> int:
    """The KV head a query head reads from under GQA/MQA: `head // (n_head // n_kv_head)`."""
    n_kv = n_kv_head or n_head
    return head // (n_head // n_kv)


def chance_prev_token(T: int) -> float:
    """Previous-token (or sink) score of uniform causal attention: mean over i >= 1 of 1/(i+1)."""
    return sum(1.0 / (i + 1) for i in range(1, T)) / (T - 1)


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class HeadMetric:
    """One per-head score: a column of heads.csv / heads.json, a heatmap, a column on the pages.

    source says what it is measured on and who computes it: "probe" (`fn(pattern, tokens)` on repeated random
    tokens) and "pattern" (`fn(pattern, window)` on any text) are computed from this entry; "ablation"
    (gptlab/interp/ablation.py) and "circuit" (gptlab/interp/circuits.py) by the report. kind/threshold: a head scoring at
    least threshold is of that kind (the first such entry in registry order wins; docs/heads.md).
    """

    name: str
    source: str
    fn: Callable[..., torch.Tensor] | None = None
    kind: str | None = None
    threshold: float | None = None


# The one list of head metrics, in display order. Adding a metric is one entry here (plus its function above
# for a probe or pattern metric); the report, the CSV/JSON, the heatmaps and both pages read this list.
HEAD_METRICS = (
    HeadMetric("induction", "probe", induction, "induction", 0.4),
    HeadMetric("duplicate", "probe", duplicate),
    HeadMetric("prev_token", "pattern", lambda p, w: prev_token(p), "previous-token", 0.5),
    HeadMetric("sink", "pattern", lambda p, w: sink(p), "sink", 0.5),
    HeadMetric("local", "pattern", lambda p, w: local(p), "local/positional", 0.6),
    HeadMetric("entropy", "pattern", entropy, "broad", 0.8),
    HeadMetric("mean_distance", "pattern", lambda p, w: mean_distance(p)),
    HeadMetric("zero_ablation", "ablation"),
    HeadMetric("mean_ablation", "ablation"),
    HeadMetric("copying", "circuit"),
    HeadMetric("copying_ratio", "circuit"),
    HeadMetric("dla", "circuit"),
    HeadMetric("dla_share", "circuit"),
)
METRIC_NAMES = tuple(m.name for m in HEAD_METRICS)
# (kind, metric, threshold), checked in this order; a head gets the first kind whose score passes
KIND_RULES = tuple((m.kind, m.name, m.threshold) for m in HEAD_METRICS if m.kind)


def check_registered(tables: dict) -> None:
    """Raise if a computed per-head table has no registry entry (it would be missing from every output)."""
    unknown = sorted(set(tables) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"head metric(s) {unknown} are computed but not in interp.metrics.HEAD_METRICS")


__all__ = [
    "HEAD_METRICS",
    "KIND_RULES",
    "METRIC_NAMES",
    "HeadMetric",
    "check_registered",
    "chance_prev_token",
    "duplicate",
    "duplicate_mask",
    "entropy",
    "icl_positions",
    "icl_score",
    "induction",
    "induction_mask",
    "kv_head_of",
    "local",
    "mean_distance",
    "pattern_metrics",
    "probe_metrics",
    "prev_token",
    "sink",
    "visible_keys",
]
