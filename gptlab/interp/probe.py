"""The repeated-random-tokens probe used for induction and duplicate-token scores.

A probe row is `[first] + seg + seg (+ seg ...)`: one fixed first token (the tokenizer's BOS/EOT when it has
one), then a random segment repeated until the row is full (at least twice). In every repeat after the
first, each token has an earlier copy, and the token right after that copy is what an induction head
attends to.

The segment length differs from row to row (spread over [min_seg, (seq_len - 1) // reps]), so a head that
attends at a fixed distance (a positional head that fits a fixed period in the training data) lines up
with the induction targets in at most one row, while a real induction head follows the copies in all rows.
"""

from __future__ import annotations

import torch


def probe_seg_len(seq_len: int, reps: int = 2) -> int:
    """Longest segment that fits `reps` times after the first token in `seq_len` positions."""
    return (seq_len - 1) // reps


def probe_seg_lens(seq_len: int, batch_size: int, reps: int = 2) -> list[int]:
    """Segment length of each probe row: evenly spread from about half the longest up to the longest."""
    longest = probe_seg_len(seq_len, reps)
    shortest = max(2, longest // 2)
    if batch_size == 1:
        return [longest]
    return [round(longest - (longest - shortest) * b / (batch_size - 1)) for b in range(batch_size)]


def repeated_random_tokens(
    vocab_size: int,
    seq_len: int,
    batch_size: int = 4,
    reps: int = 2,
    first_token: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    vary: bool = True,
) -> torch.Tensor:
    """A `(batch_size, T)` long tensor of random segments repeated at least `reps` times.

    With `vary=False` every row uses the longest segment and `T = 1 + reps * seg` exactly; with `vary=True`
    (default) row b uses `probe_seg_lens(...)[b]`, repeated to fill `T = 1 + reps * longest` positions. The
    segment avoids `first_token` and has no repeated token inside it when the vocabulary is large enough
    (sampled without replacement), so every induction target is unambiguous.
    """
    if reps < 2:
        raise ValueError("the probe needs the segment at least twice (reps >= 2)")
    longest = probe_seg_len(seq_len, reps)
    if longest < 2:
        raise ValueError(f"sequence length {seq_len} is too short for a probe with {reps} repeats")
    T = 1 + reps * longest
    lens = probe_seg_lens(seq_len, batch_size, reps) if vary else [longest] * batch_size
    g = torch.Generator().manual_seed(seed)
    first = 0 if first_token is None else int(first_token)
    pool = torch.tensor([t for t in range(vocab_size) if t != first])  # candidate segment tokens
    rows = []
    for seg in lens:
        if len(pool) >= seg:
            s = pool[torch.randperm(len(pool), generator=g)[:seg]]
        else:
            s = pool[torch.randint(len(pool), (seg,), generator=g)]
        body = s.repeat((T - 1 + seg - 1) // seg)[: T - 1]
        rows.append(torch.cat([torch.tensor([first]), body]))
    return torch.stack(rows).to(device)  # (B, T)
