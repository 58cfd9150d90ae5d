"""Cheap per-head metrics during training (no ablations), logged as `{"kind": "heads"}` rows of metrics.jsonl.

train.py calls `training_row(raw_model, meta, device, val_batches)` every `train.head_metrics_interval` steps.
The per-head part (`head_metrics_snapshot`) is measured on one small fixed batch of repeated random tokens (the
induction probe, same seed every time, so successive snapshots are comparable): induction and duplicate-token
scores on its repeats, the content-independent metrics (entropy, distance, previous-token, sink, local) on
the same batch, and from the weights each later-layer head's mean K-composition with the heads before it
(gptlab/interp/circuits.py). The row adds the model's in-context-learning score on the fixed val batches
(interp.metrics.icl_score).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import circuits as CI
from . import metrics as M
from .probe import repeated_random_tokens


def probe_for(
    model,
    meta: dict | None = None,
    batch_size: int = 4,
    seq_len: int | None = None,
    reps: int = 2,
    seed: int = 0,
    device=None,
) -> torch.Tensor:
    """The probe batch for `model`: BOS/EOT (or token 0) + a random segment repeated `reps` times."""
    cfg = model.config
    T = min(int(seq_len or cfg.block_size), cfg.block_size)
    eot = (meta or {}).get("eot_id")
    first = int(eot) if eot is not None and 0 <= int(eot) < cfg.vocab_size else 0
    device = device if device is not None else next(model.parameters()).device
    return repeated_random_tokens(cfg.vocab_size, T, batch_size, reps, first, seed, device)


@torch.no_grad()
def head_metric_tables(model, probe: torch.Tensor, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`{metric: (n_layer, n_head)}`: probe metrics on `probe`, pattern metrics on `x` (default: the probe)."""
    pat = model.attention_patterns(probe).float()  # (L, B, H, T, T)
    tables = M.probe_metrics(pat, probe)
    if x is not None:
        pat = model.attention_patterns(x).float()
    tables.update(M.pattern_metrics(pat, window=model.config.window))
    return tables


def tables_to_rows(tables: dict[str, torch.Tensor], digits: int = 4) -> list[dict]:
    """`{metric: (L, H)}` -> `[{"layer", "head", metric: float, ...}]`, one row per head, layer-major."""
    first = next(iter(tables.values()))
    L, H = first.shape
    rows = []
    for l in range(L):
        for h in range(H):
            row = {"layer": l, "head": h}
            for name, t in tables.items():
                v = float(t[l, h])
                row[name] = round(v, digits) if v == v else None  # NaN -> None (JSON null)
            rows.append(row)
    return rows


@torch.no_grad()
def head_metrics_snapshot(
    model,
    meta: dict | None = None,
    device=None,
    *,
    batch_size: int = 4,
    seq_len: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Per-head metrics of `model` now: `[{"layer", "head", "induction", "duplicate", "entropy", ...}]`; heads of
    layer 1 and later add `k_composition` (`mean_k_composition`).

    `model` is the plain GPT (not a DDP/compiled wrapper); its train/eval mode is restored afterwards.
    `seq_len` defaults to the block size; `batch_size` sequences of the probe are used.
    """
    was_training = model.training
    model.eval()
    try:
        probe = probe_for(model, meta, batch_size, seq_len, seed=seed, device=device)
        rows = tables_to_rows(head_metric_tables(model, probe))
    finally:
        model.train(was_training)
    kc = mean_k_composition(model)
    if kc is not None:
        for row in rows:
            v = float(kc[row["layer"], row["head"]])
            if v == v:  # layer 0 reads from no earlier head: no entry
                row["k_composition"] = round(v, 4)
    return rows


@torch.no_grad()
def mean_k_composition(model) -> torch.Tensor | None:
    """`(n_layer, n_head)`: each head's K-composition (interp.circuits) averaged over every head of the earlier
    layers writing into it; NaN for layer 0, None for a 1-layer model."""
    weights = CI.layer_weights(model)
    if len(weights) < 2:
        return None
    k = CI.composition_scores(weights, CI.offsets_for(model))["K"]  # (L, H, L, H), NaN unless la < lb
    L, H = k.shape[:2]
    flat = k.reshape(L * H, L, H)  # writers x readers
    return flat.nanmean(0)


@torch.no_grad()
def token_losses(model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per-token cross-entropy `(sum of B, T)` of `model` on `batches`."""
    out = []
    for x, y in batches:
        logits, _ = model(x)
        out.append(F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none"))  # (B, T)
    return torch.cat(out)


ICL_MIN_ROWS = 8  # sequences for the in-loop ICL score (docs/heads.md: 8 give a stable number)


@torch.no_grad()
def icl_now(model, batches, min_rows: int = ICL_MIN_ROWS) -> float | None:
    """The model's ICL score (interp.metrics.icl_score) on the first of `batches` that hold `min_rows`
    sequences; None without batches or for sequences shorter than 8 tokens. Train/eval mode is restored."""
    use, rows = [], 0
    for x, y in batches or []:
        if rows >= min_rows:
            break
        use.append((x, y))
        rows += x.shape[0]
    if not use or use[0][0].shape[1] < 8:
        return None
    was_training = model.training
    model.eval()
    try:
        return M.icl_score(token_losses(model, use))
    finally:
        model.train(was_training)


def training_row(model, meta: dict | None, device, val_batches=None) -> dict:
    """The in-loop `{"heads": [...], "icl_score": x}` (no icl_score without val batches) for metrics.jsonl."""
    row = {"heads": head_metrics_snapshot(model, meta, device)}
    icl = icl_now(model, val_batches)
    if icl is not None:
        row["icl_score"] = round(icl, 5)
    return row
