"""Cheap per-head metrics during training (no ablations), logged as `{"kind": "heads"}` rows of metrics.jsonl.

train.py calls `head_metrics_snapshot(raw_model, meta, device)` every `train.head_metrics_interval` steps.
Everything is measured on one small fixed batch of repeated random tokens (the induction probe, same seed
every time, so successive snapshots are comparable): induction and duplicate-token scores on its repeats,
and the content-independent metrics (entropy, distance, previous-token, sink, local) on the same batch.
"""

from __future__ import annotations

import torch

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
    """Per-head metrics of `model` now: `[{"layer", "head", "induction", "duplicate", "entropy", ...}]`.

    `model` is the plain GPT (not a DDP/compiled wrapper); its train/eval mode is restored afterwards.
    `seq_len` defaults to the block size; `batch_size` sequences of the probe are used.
    """
    was_training = model.training
    model.eval()
    try:
        probe = probe_for(model, meta, batch_size, seq_len, seed=seed, device=device)
        return tables_to_rows(head_metric_tables(model, probe))
    finally:
        model.train(was_training)
