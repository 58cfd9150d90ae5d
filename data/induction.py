"""Synthetic induction data: random token segments, each repeated, as used to find induction heads.

One *sequence* is a segment of ``L`` token ids drawn uniformly from ``[0, vocab)`` and written ``k`` times in
a row (``L * k`` tokens). Sequences follow each other in the token stream with no separator. Within a sequence,
every token after the first copy equals the token ``L`` positions earlier, so a model that has learned an
induction head predicts copies 2..k perfectly while copy 1 stays at chance (loss ln(vocab)).

Prepared data records ``sample_align = L * k`` in meta.json; the BatchLoader then starts every window at a
sequence boundary, so a window of ``block_size <= L * k - 1`` tokens always holds the segment and its repeats.
"""

from __future__ import annotations

import numpy as np
import torch


def repeated_sequences(
    n: int, seg_len: int, repeats: int, vocab: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` sequences, each a random segment of ``seg_len`` ids repeated ``repeats`` times."""
    seg = rng.integers(0, vocab, size=(n, seg_len), dtype=np.int64)  # (n, L)
    return np.tile(seg, (1, repeats))  # (n, L*k)


def make_induction_batch(
    batch: int, seg_len: int, vocab: int, repeats: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A (batch, seg_len*repeats) long tensor of repeated random segments, for head-study evaluation."""
    seg = torch.randint(0, vocab, (batch, seg_len), generator=generator)  # (B, L)
    return seg.repeat(1, repeats)  # (B, L*k)


def induction_splits(cfg) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token streams for an induction DataConfig; val uses an independent random stream."""
    ss = np.random.SeedSequence(int(cfg.seed))
    train_rng, val_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    L, k, V = int(cfg.induction_len), int(cfg.induction_repeats), int(cfg.induction_vocab)
    train = repeated_sequences(int(cfg.induction_train_seqs), L, k, V, train_rng).reshape(-1)
    val = repeated_sequences(int(cfg.induction_val_seqs), L, k, V, val_rng).reshape(-1)
    return train, val
