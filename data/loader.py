"""BatchLoader: seeded, resumable, rank-aware (x, y) windows from a prepared token file.

The stream: epoch ``e`` cuts the token file into non-overlapping windows of ``block_size + 1`` tokens
starting at a random shift in ``[0, block_size)`` (drawn from ``(seed, e)``), shuffles them with a permutation
drawn from ``(seed, e)``, and deals them out in global batches of ``batch_size * world_size`` windows: rank
``r`` takes windows ``[r * batch_size, (r + 1) * batch_size)`` of each global batch. So every rank builds
the same permutation, ranks never read the same window, and one epoch reads each token about once.
A global batch never straddles two epochs (the epoch's last few windows are dropped).

If the prepared folder's meta.json has ``sample_align = a`` (the induction data), windows start at multiples
of ``a`` instead, with no shift, so each window begins at a sequence boundary.

The file is checked whole against meta.json's checksum when the loader is made (data/integrity.py), and
every batch's ids against the vocabulary, so damaged data is one line, never a silent run or an IndexError.

``state_dict()`` is ``{epoch, cursor}`` plus the settings it depends on; restoring it continues the identical
stream, even with a different ``world_size`` or ``batch_size`` (the cursor counts windows, not steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gptlab.errors import UserError

from .build import load_meta
from .integrity import check_token_ids, verify_token_file


class BatchLoader:
    """Batches of (x, y), each (batch_size, block_size) int64 on ``device``; y is x shifted by one token."""

    def __init__(
        self,
        path,
        block_size: int,
        batch_size: int,
        seed: int = 1337,
        rank: int = 0,
        world_size: int = 1,
        device="cpu",
        align: int | None = None,
    ):
        self.path = Path(path)
        meta = _meta_beside(self.path)
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist; prepare the data first (python -m data)")
        self.block_size, self.batch_size = int(block_size), int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        if self.block_size < 1 or self.batch_size < 1:
            raise UserError(f"block_size ({block_size}) and batch_size ({batch_size}) must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise UserError(f"rank {rank} must be in [0, world_size={world_size})")
        verify_token_file(self.path, meta)  # the whole file against meta.json's checksum (once per process)
        self.data = np.memmap(self.path, dtype=np.dtype(meta["dtype"]), mode="r")
        self.vocab_size = int(meta["vocab_size"])
        self.align = int(align if align is not None else meta.get("sample_align") or 0)  # 0 = random shift
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda"
        n, T = len(self.data), self.block_size
        if self.align:
            self.n_windows = (n - T - 1) // self.align + 1 if n >= T + 1 else 0
        else:
            self.n_windows = (n - T) // T if n > T else 0
        need = self.batch_size * self.world_size
        if n < 2 * (T + 1) or self.n_windows < need:
            raise UserError(
                f"{self.path.name} has {n:,} tokens: {self.n_windows} windows of block_size+1={T + 1}, fewer than "
                f"batch_size*world_size={need} (or 2 blocks); use more data, a smaller block_size or batch_size"
            )
        self.epoch, self.cursor = 0, 0
        self._perm_epoch: int | None = None
        self._perm: np.ndarray = np.empty(0, dtype=np.int64)
        self._shift = 0

    # ---------------------------------------------------------------- the stream

    def _epoch_windows(self, epoch: int) -> tuple[np.ndarray, int]:
        """(permutation of window indices, shift) for one epoch; the same on every rank."""
        if self._perm_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._shift = 0 if self.align else int(rng.integers(0, self.block_size))
            idx_dtype = np.int32 if self.n_windows < 2**31 else np.int64
            self._perm = rng.permutation(self.n_windows).astype(idx_dtype, copy=False)
            self._perm_epoch = epoch
        return self._perm, self._shift

    def _starts(self, epoch: int, cursor: int) -> np.ndarray:
        perm, shift = self._epoch_windows(epoch)
        lo = cursor + self.rank * self.batch_size
        step = self.align or self.block_size
        return shift + perm[lo : lo + self.batch_size].astype(np.int64) * step  # (B,)

    def _advance(self) -> tuple[int, int]:
        """The (epoch, cursor) of the next global batch, moving the state past it."""
        g = self.batch_size * self.world_size
        if self.cursor + g > self.n_windows:
            self.epoch, self.cursor = self.epoch + 1, 0
        here = (self.epoch, self.cursor)
        self.cursor += g
        return here

    def _gather(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = starts[:, None] + np.arange(self.block_size + 1)  # (B, T+1)
        buf = self.data[offsets]  # (B, T+1) in the file's dtype
        check_token_ids(buf, self.vocab_size, self.path)  # one line, not an IndexError deep in the model
        # numpy makes the contiguous int64 copies (torch's .contiguous() is much slower on a busy CPU)
        x = torch.from_numpy(buf[:, :-1].astype(np.int64))  # (B, T)
        y = torch.from_numpy(buf[:, 1:].astype(np.int64))  # (B, T)
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) of this rank: (batch_size, block_size) int64 each."""
        return self._gather(self._starts(*self._advance()))

    __next__ = next

    def __iter__(self):
        return self

    def fixed_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n`` batches of this loader's stream from its start, without touching its state.

        Use them as fixed evaluation batches: the same windows at every evaluation (and after a resume).
        """
        saved = (self.epoch, self.cursor)
        self.epoch, self.cursor = 0, 0
        try:
            return [self.next() for _ in range(int(n))]
        finally:
            self.epoch, self.cursor = saved

    # ---------------------------------------------------------------- resume

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "block_size": self.block_size,
            "align": self.align,
            "n_tokens": len(self.data),
        }

    def load_state_dict(self, sd: dict) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("block_size", self.block_size),
            ("align", self.align),
            ("n_tokens", len(self.data)),
        ):
            if sd.get(key) != mine:
                raise UserError(
                    f"the saved data-loader state has {key}={sd.get(key)} but this run has {key}={mine}; "
                    "resume with the same data and block_size, or start a new run"
                )
        self.epoch, self.cursor = int(sd["epoch"]), int(sd["cursor"])
        # a cursor saved with another batch_size*world_size may not fit a whole global batch: _advance rolls over


def _meta_beside(path: Path) -> dict:
    """meta.json of the prepared folder holding ``path`` (its dtype, vocabulary and sample_align)."""
    return load_meta(path.parent)
