"""Which head of model B does the job of which head of model A: matching by attention-pattern similarity.

Heads have no identity across models: two seeds learn the same heads in another order, and models of other
shapes have other numbers of them. So heads are paired by what they attend to on the same tokens, with an
optimal assignment (``scipy.optimize.linear_sum_assignment``, maximising the summed similarity), and only
within layers at the same depth (:func:`layer_groups`). docs/heads.md ("Comparing two models or two steps")
states the rules; pure functions on numpy arrays, nothing here knows about files or models.

- :func:`head_rows`: one model's patterns on one input as each head's query rows (query 0 dropped).
- :func:`overlap`: the similarity of two heads' rows: mean over query rows of ``sum_j min(A_ij, B_ij)``.
- :func:`layer_groups`: which layers of A meet which layers of B (by depth fraction).
- :func:`match_heads`: the pairs, their similarity and the heads left without a partner.
- :func:`matching_line`: one sentence on how the heads were paired (compare.md and the compare page).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

METHODS = ("similarity", "position")


def head_rows(patterns: np.ndarray) -> np.ndarray:
    """`(L, H, T, T)` (one text) or `(L, B, H, T, T)` (a batch) -> `(L, H, R, T)`: every query row i >= 1.

    Query 0 sees only itself, so every head puts all of its attention there: it says nothing about the head.
    A batch's rows are pooled (R = B (T - 1)).
    """
    p = np.asarray(patterns, dtype=np.float32)
    if p.ndim == 4:
        return p[:, :, 1:, :]
    if p.ndim == 5:
        L, B, H, T, _ = p.shape
        return p[:, :, :, 1:, :].transpose(0, 2, 1, 3, 4).reshape(L, H, B * (T - 1), T)
    raise ValueError(f"patterns of shape {p.shape}: expected (L, H, T, T) or (L, B, H, T, T)")


def overlap(rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """`(Na, R, T)`, `(Nb, R, T)` -> `(Na, Nb)`: mean over the R query rows of `sum_j min(a_j, b_j)`.

    Each row is a distribution over keys, so `sum_j min(a_j, b_j)` is the attention mass the two heads put
    on the same keys (1 - their total-variation distance): 1 for the same row, 0 for rows on disjoint keys.
    """
    a = np.asarray(rows_a, dtype=np.float32)
    b = np.asarray(rows_b, dtype=np.float32)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"rows {a.shape} and {b.shape} are not on the same tokens")
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    for i, r in enumerate(a):  # one head of A against every head of B: memory Nb * R * T, not Na * Nb * R * T
        out[i] = np.minimum(r[None], b).sum(-1, dtype=np.float64).mean(-1)
    return out


def layer_groups(n_a: int, n_b: int) -> list[tuple[list[int], list[int]]]:
    """Which layers of a model with `n_a` layers meet which of a model with `n_b`: `[(layers_a, layers_b)]`.

    Layer l of an L-layer model covers the depth fraction [l / L, (l + 1) / L) and sits at its middle,
    (l + 0.5) / L. Each layer of the deeper model joins the layer of the shallower one whose span holds its
    middle: l_shallow = floor((l_deep + 0.5) * L_shallow / L_deep). So every layer is in exactly one group, a
    group is one layer of the shallower model with one or more of the deeper, and equal depths pair l with l.
    """
    if n_a < 1 or n_b < 1:
        raise ValueError(f"layer counts {n_a}, {n_b} must be >= 1")
    if n_a > n_b:
        return [(la, lb) for lb, la in layer_groups(n_b, n_a)]
    return [([l], [d for d in range(n_b) if (2 * d + 1) * n_a // (2 * n_b) == l]) for l in range(n_a)]


@dataclass
class Matching:
    """Heads of A paired with heads of B. `pairs`: `(layer_a, head_a, layer_b, head_b, similarity)`."""

    method: str
    pairs: list[tuple[int, int, int, int, float]]
    unmatched_a: list[tuple[int, int]] = field(default_factory=list)
    unmatched_b: list[tuple[int, int]] = field(default_factory=list)
    groups: list[tuple[list[int], list[int]]] = field(default_factory=list)
    similarity: np.ndarray | None = None  # (L_a, H_a, L_b, H_b); NaN for heads in layers that never meet
    same_position: float | None = None  # mean similarity of head (l, h) with (l, h), when the shapes agree

    @property
    def mean_similarity(self) -> float:
        return float(np.mean([p[4] for p in self.pairs])) if self.pairs else float("nan")

    def partner_of_a(self) -> dict[tuple[int, int], tuple[int, int, float]]:
        return {(la, ha): (lb, hb, s) for la, ha, lb, hb, s in self.pairs}


def similarity_matrix(inputs_a: list[np.ndarray], inputs_b: list[np.ndarray], groups) -> np.ndarray:
    """`(L_a, H_a, L_b, H_b)`: the mean over the inputs of :func:`overlap`, for heads of layers in one group.

    `inputs_a[k]` and `inputs_b[k]` are the two models' :func:`head_rows` on the same tokens (`(L, H, R, T)`);
    every input weighs the same whatever its number of rows. Pairs of layers in different groups are NaN.
    """
    La, Ha = inputs_a[0].shape[:2]
    Lb, Hb = inputs_b[0].shape[:2]
    sim = np.full((La, Ha, Lb, Hb), np.nan)
    for ga, gb in groups:
        for la in ga:
            for lb in gb:
                sim[la, :, lb, :] = np.mean(
                    [overlap(a[la], b[lb]) for a, b in zip(inputs_a, inputs_b)], axis=0
                )
    return sim


def match_heads(sim: np.ndarray, groups, method: str = "similarity") -> Matching:
    """Pair the heads of A and B from their similarity `(L_a, H_a, L_b, H_b)` (:func:`similarity_matrix`).

    ``similarity``: in each group of layers, the assignment of A's heads to B's heads that maximises the
    summed similarity (each head in at most one pair; min(n_a, n_b) pairs, the rest unmatched).
    ``position``: head (l, h) of A with head (l, h) of B (the same shape only: two steps of one run).
    """
    La, Ha, Lb, Hb = sim.shape
    same = (La, Ha) == (Lb, Hb)
    same_pos = float(np.mean([sim[l, h, l, h] for l in range(La) for h in range(Ha)])) if same else None
    if method == "position":
        if not same:
            raise ValueError(f"position matching needs the same shape, not {La}x{Ha} and {Lb}x{Hb}")
        pairs = [(l, h, l, h, float(sim[l, h, l, h])) for l in range(La) for h in range(Ha)]
        return Matching(method, pairs, groups=groups, similarity=sim, same_position=same_pos)
    if method != "similarity":
        raise ValueError(f"unknown matching method {method!r}; one of {METHODS}")
    pairs, un_a, un_b = [], [], []
    for ga, gb in groups:
        heads_a = [(l, h) for l in ga for h in range(Ha)]
        heads_b = [(l, h) for l in gb for h in range(Hb)]
        block = np.array([[sim[la, ha, lb, hb] for lb, hb in heads_b] for la, ha in heads_a])
        rows, cols = linear_sum_assignment(np.nan_to_num(block, nan=-1.0), maximize=True)
        for r, c in zip(rows, cols):
            pairs.append((*heads_a[r], *heads_b[c], float(block[r, c])))
        un_a += [heads_a[i] for i in sorted(set(range(len(heads_a))) - set(rows.tolist()))]
        un_b += [heads_b[i] for i in sorted(set(range(len(heads_b))) - set(cols.tolist()))]
    pairs.sort()
    return Matching(method, pairs, un_a, un_b, groups, sim, same_pos)


__all__ = [
    "METHODS",
    "Matching",
    "head_rows",
    "layer_groups",
    "match_heads",
    "overlap",
    "similarity_matrix",
]


def head_label(l, h) -> str:
    return f"L{l}H{h}"


def matching_line(matching: Matching, n_a: int, n_b: int) -> str:
    """One sentence: how the heads were paired and how well."""
    if not matching.pairs:
        return "no heads matched"
    worst = min(matching.pairs, key=lambda p: p[4])
    how = (
        "by position (head l,h of A with head l,h of B)"
        if matching.method == "position"
        else "by pattern similarity (optimal assignment within layers of the same depth)"
    )
    s = (
        f"matched {len(matching.pairs)} of A's {n_a} heads with B's {n_b} {how}: mean similarity "
        f"{matching.mean_similarity:.3f}, lowest {worst[4]:.3f} ({head_label(*worst[:2])} <-> {head_label(*worst[2:4])})"
    )
    if matching.same_position is not None and matching.method != "position":
        s += f"; the same positions would give {matching.same_position:.3f}"
    return s
