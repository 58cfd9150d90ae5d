"""Synthetic induction data: random token segments, each repeated, as used to find induction heads.

Every *sequence* is ``S = induction_len * induction_repeats`` tokens long. Sequences follow each other in the
token stream with no separator.

* Fixed length (``induction_len_min`` null, or equal to ``induction_len``): the sequence is a segment of
  ``L = induction_len`` ids drawn uniformly from ``[0, vocab)``, written ``k`` times in a row.
* Varied length (``induction_len_min < induction_len``): sequence ``i`` draws its own segment length ``L_i``
  uniformly from ``[induction_len_min, induction_len]`` and repeats its segment until it fills ``S`` tokens,
  the last copy truncated (so short segments get more than ``k`` copies).

Within a sequence every token after the first copy equals the token ``L_i`` positions earlier, so a model with
an induction head predicts everything after copy 1, while copy 1 stays at chance (loss ln(vocab)). With one
fixed ``L`` a head that always looks ``L - 1`` tokens back does the same job (even a 1-layer model learns it);
varying ``L_i`` leaves "find the earlier copy of this token, predict what followed it" as the only solution.

Prepared data records ``sample_align = S`` in meta.json; the BatchLoader then starts every window at a
sequence boundary, so a window of ``block_size <= S - 1`` tokens always holds one segment and its repeats.
"""

from __future__ import annotations

import numpy as np


def repeated_sequences(
    n: int, seg_len: int, repeats: int, vocab: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` sequences, each a random segment of ``seg_len`` ids repeated ``repeats`` times."""
    seg = rng.integers(0, vocab, size=(n, seg_len), dtype=np.int64)  # (n, L)
    return np.tile(seg, (1, repeats))  # (n, L*k)


def varied_sequences(
    n: int, len_min: int, len_max: int, total: int, vocab: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of ``total`` ids: row i repeats a random segment of length L_i ~ U[len_min, len_max].

    Returns ``(rows, lengths)``: ``rows`` is (n, total) int64 with ``rows[i, t] = seg_i[t mod L_i]``, and
    ``lengths`` is (n,) int64 holding each L_i.
    """
    lengths = rng.integers(len_min, len_max + 1, size=n, dtype=np.int64)  # (n,)
    seg = rng.integers(0, vocab, size=(n, len_max), dtype=np.int64)  # (n, Lmax); row i uses its first L_i
    col = np.arange(total, dtype=np.int64)[None, :] % lengths[:, None]  # (n, total) index into the segment
    return np.take_along_axis(seg, col, axis=1), lengths


def sequence_lengths(cfg) -> tuple[int | None, int, int]:
    """``(len_min, len_max, total)`` of a DataConfig; ``len_min`` is None when every segment has length len_max."""
    lo = cfg.induction_len_min
    L, k = int(cfg.induction_len), int(cfg.induction_repeats)
    lo = None if lo is None or int(lo) == L else int(lo)
    return lo, L, L * k


def induction_splits(cfg) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token streams for an induction DataConfig; val uses an independent random stream."""
    ss = np.random.SeedSequence(int(cfg.seed))
    train_rng, val_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    lo, L, S = sequence_lengths(cfg)
    k, V = int(cfg.induction_repeats), int(cfg.induction_vocab)
    n_train, n_val = int(cfg.induction_train_seqs), int(cfg.induction_val_seqs)
    if lo is None:  # fixed length: the original generator, so old configs prepare the same tokens
        train = repeated_sequences(n_train, L, k, V, train_rng)
        val = repeated_sequences(n_val, L, k, V, val_rng)
    else:
        train, _ = varied_sequences(n_train, lo, L, S, V, train_rng)
        val, _ = varied_sequences(n_val, lo, L, S, V, val_rng)
    return train.reshape(-1), val.reshape(-1)
