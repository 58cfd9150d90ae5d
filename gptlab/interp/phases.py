"""Phase changes in training curves: when did a head's score (or the loss) jump, if it did at all?

`find_phase(steps, values, ...)` is a pure function over one metric's time series. Definition (docs/heads.md):

1. Keep the finite points in step order (at least ``MIN_POINTS``); flip the sign for a falling metric
   (``direction=-1``) so a phase is always a rise. Smooth with a centred 3-point moving average.
2. The **rise** is the largest increase of the smoothed curve from any point to a later one.
3. The **window** is the shortest stretch of steps over which the smoothed curve rises by ``share`` (60 %)
   of that rise: where the metric moves fastest.
4. It is a **phase** only when
   - the rise is at least ``min_change`` (a threshold on the metric's own scale: 0.15 for a score in [0, 1],
     a tenth of the initial loss for a loss), so a flat series has none;
   - the rise is at least ``NOISE_SIGMAS`` times the series' noise (the robust spread of its second
     differences, which a smooth trend hardly moves), so a noisy series has none;
   - the window spans at most ``max_width`` (half) of the steps, so a steady linear drift is no phase;
   - with ``after_plateau=True`` (the loss, whose fastest drop is usually at the very start), the window does
     not start the series, and over the stretch before it (as long as the window, or back to the first
     point) the curve moved at most a third as fast: a slope change.

`training_phases(rows)` applies it to a run's metrics.jsonl rows (each head's induction and previous-token
score, the ICL score, the val loss) and says in one sentence what formed when.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

MIN_POINTS = 5
NOISE_SIGMAS = 5.0
SHARE = 0.6
MAX_WIDTH = 0.5
PLATEAU_RATIO = 1 / 3
# the metric a head kind is named after, the smallest rise that counts, and the final score the head must
# reach to be called that kind (interp.metrics.KIND_RULES' thresholds)
HEAD_PHASES = (("induction", "induction", 0.15, 0.4), ("prev_token", "previous-token", 0.15, 0.5))


@dataclass(frozen=True)
class Phase:
    """A phase change of one series: it moved by ``change`` (signed, in the metric's units) from ``before`` to
    ``after`` over the whole rise, ``share`` of that inside steps ``start``..``end``."""

    start: int
    end: int
    before: float
    after: float
    change: float

    def overlaps(self, other: Phase) -> bool:
        return self.start <= other.end and other.start <= self.end


def _smooth(v: np.ndarray) -> np.ndarray:
    """Centred 3-point moving average (2 points at the ends)."""
    padded = np.concatenate([[np.nan], v, [np.nan]])
    win = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    return np.nanmean(win, axis=0)


def noise_level(values: np.ndarray) -> float:
    """Robust noise s.d. of a series: 1.4826 * MAD of its second differences / sqrt(6) (white noise of s.d.
    sigma gives second differences of s.d. sigma * sqrt(6); a smooth trend and a few jumps barely move it)."""
    if len(values) < 3:
        return 0.0
    d2 = np.diff(values, n=2)
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6))


def find_phase(
    steps,
    values,
    *,
    direction: int = 1,
    min_change: float,
    share: float = SHARE,
    max_width: float = MAX_WIDTH,
    after_plateau: bool = False,
) -> Phase | None:
    """The step window where ``values`` rise (``direction=1``) or fall (``-1``) fastest, if that is a phase.

    ``steps`` and ``values`` are equal-length sequences; NaN/None values are dropped. See the module docstring
    for the definition; returns None for a flat, noisy, steadily drifting or too short series.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"steps and values differ in length ({len(x)} and {len(y)})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], direction * y[order]
    if len(x) < MIN_POINTS or x[-1] <= x[0]:
        return None
    s = _smooth(y)
    low_before = np.minimum.accumulate(s)
    rise = float(np.max(s - low_before))
    if rise < max(min_change, NOISE_SIGMAS * noise_level(y)) or rise <= 0:
        return None
    # the shortest window [a, b] whose smoothed curve rises by share * rise
    need = share * rise
    best = None
    for a in range(len(s) - 1):
        ahead = np.maximum.accumulate(s[a + 1 :])
        b = a + 1 + int(np.searchsorted(ahead, s[a] + need))
        if b < len(s) and (best is None or x[b] - x[a] < x[best[1]] - x[best[0]]):
            best = (a, b)
    if best is None:  # pragma: no cover - the rise itself always qualifies
        return None
    a, b = best
    if x[b] - x[a] > max_width * (x[-1] - x[0]):
        return None
    if after_plateau:
        k = int(np.searchsorted(x, x[a] - (x[b] - x[a])))  # the stretch before, at most as long as the window
        if k >= a:
            return None  # the window starts the series: no slower stretch before it to change from
        prior_slope = (s[a] - s[k]) / (x[a] - x[k])
        if prior_slope > PLATEAU_RATIO * (s[b] - s[a]) / (x[b] - x[a]):
            return None
    j = int(np.argmax(s - low_before))
    i = int(np.argmin(s[: j + 1]))
    return Phase(
        start=int(x[a]),
        end=int(x[b]),
        before=round(float(direction * s[i]), 5),
        after=round(float(direction * s[j]), 5),
        change=round(float(direction * rise), 5),
    )


# ---------------------------------------------------------------------------------------------- a run's phases
def _series(rows: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get("kind") == kind and isinstance(r.get(key), int | float)]
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts]


def _head_series(head_rows: list[dict], metric: str) -> dict[tuple[int, int], tuple[list, list]]:
    out: dict[tuple[int, int], tuple[list, list]] = {}
    for r in head_rows:
        for h in r.get("heads") or []:
            v = h.get(metric)
            if isinstance(v, int | float):
                steps, vals = out.setdefault((int(h["layer"]), int(h["head"])), ([], []))
                steps.append(int(r["step"]))
                vals.append(float(v))
    return out


def _names(heads: list[tuple[int, int]]) -> str:
    return ", ".join(f"L{l}H{h}" for l, h in heads)


def _window(phases: list[Phase]) -> tuple[int, int]:
    return min(p.start for p in phases), max(p.end for p in phases)


def training_phases(rows: list[dict]) -> dict | None:
    """The phase changes of a run from its metrics.jsonl rows, or None when it logged no head metrics.

    Returns ``{"heads": {kind: [{"layer", "head", **Phase}]}, "icl_score": Phase | None, "val_loss": ...,
    "sentence": "..."}``; a head is listed under a kind when its score had a phase and ends at least at the
    kind's threshold (interp.metrics.KIND_RULES).
    """
    head_rows = sorted(
        (r for r in rows if r.get("kind") == "heads" and r.get("heads")), key=lambda r: r["step"]
    )
    if not head_rows:
        return None
    out: dict = {"heads": {}}
    for metric, kind, min_change, final in HEAD_PHASES:
        found = []
        for (l, h), (steps, vals) in sorted(_head_series(head_rows, metric).items()):
            p = find_phase(steps, vals, min_change=min_change)
            if p is not None and vals[-1] >= final:
                found.append({"layer": l, "head": h, **asdict(p)})
        out["heads"][kind] = found
    losses = _series(rows, "eval", "val_loss")
    scale = losses[1][0] if losses[1] else None
    icl = _series(head_rows, "heads", "icl_score")
    icl_min = 0.1 * scale if scale else 0.5  # nats: a tenth of the first val loss
    p_icl = find_phase(*icl, direction=-1, min_change=icl_min)
    p_loss = find_phase(*losses, direction=-1, min_change=icl_min, after_plateau=True) if scale else None
    out["icl_score"] = asdict(p_icl) if p_icl else None
    out["val_loss"] = asdict(p_loss) if p_loss else None
    out["sentence"] = phase_sentence(out, n_rows=len(head_rows), last_step=head_rows[-1]["step"])
    return out


def phase_sentence(ph: dict, n_rows: int | None = None, last_step: int | None = None) -> str:
    """One sentence: which heads formed when, and whether the ICL score and the loss moved with them."""

    def heads_of(kind):
        items = ph["heads"].get(kind) or []
        return [(d["layer"], d["head"]) for d in items], [Phase(**_phase_fields(d)) for d in items]

    ind_heads, ind = heads_of("induction")
    prev_heads, prev = heads_of("previous-token")
    parts = []
    window = None
    if ind:
        window = _window(ind)
        word = "head" if len(ind) == 1 else "heads"
        parts.append(f"induction {word} {_names(ind_heads)} formed between steps {window[0]} and {window[1]}")
    else:
        parts.append("no induction head formed (no head's induction score jumped to 0.4 or more)")
    for name, key in (("ICL score", "icl_score"), ("val loss", "val_loss")):
        d = ph.get(key)
        if d is None:
            continue
        p = Phase(**_phase_fields(d))
        how = "fell" if key == "icl_score" else "dropped"
        where = (
            "fastest in the same window"
            if window and p.overlaps(Phase(window[0], window[1], 0, 0, 0))
            else f"fastest between steps {p.start} and {p.end}"
        )
        parts.append(f"{name} {how} from {p.before:.2f} to {p.after:.2f}, {where}")
    if prev:
        pw = _window(prev)
        word = "head" if len(prev) == 1 else "heads"
        if window and pw[1] < window[0]:
            when = f"formed first, by step {pw[1]}"
        elif window and Phase(*pw, 0, 0, 0).overlaps(Phase(*window, 0, 0, 0)):
            when = f"formed with them, between steps {pw[0]} and {pw[1]}"
        else:
            when = f"formed between steps {pw[0]} and {pw[1]}"
        parts.append(f"previous-token {word} {_names(prev_heads)} {when}")
    tail = f" ({n_rows} head snapshots up to step {last_step})" if n_rows else ""
    return "; ".join(parts) + tail


def _phase_fields(d: dict) -> dict:
    return {k: d[k] for k in ("start", "end", "before", "after", "change")}
