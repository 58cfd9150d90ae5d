"""The key/value cache used by generation: per layer (B, n_kv_head, T, hs) tensors plus their positions."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of the tokens seen so far, for every layer.

    Positions are contiguous: the cached keys hold positions ``start .. next_pos - 1``. With ``max_len`` set the
    cache rolls: after each forward only the last ``max_len`` positions are kept (a sliding window), which is
    exact for attention whose window is at most ``max_len``.
    """

    def __init__(self, n_layer: int, max_len: int | None = None):
        self.k: list[Tensor | None] = [None] * n_layer
        self.v: list[Tensor | None] = [None] * n_layer
        self.max_len = max_len
        self.start = 0  # position of the oldest cached key
        self.next_pos = 0  # position the next token will get
        self._pending = 0  # tokens added by the forward in progress

    def __len__(self) -> int:
        return self.next_pos - self.start

    def begin(self, T: int) -> int:
        """Start a forward of T new tokens; returns the position of the first one."""
        self._pending = T
        return self.next_pos

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, int]:
        """Append this forward's k, v (B, nkv, T, hs); return all keys, values to attend to and their first position."""
        old_k, old_v = self.k[layer], self.v[layer]
        k_all = k if old_k is None else torch.cat((old_k, k), dim=2)  # (B, nkv, Tk, hs)
        v_all = v if old_v is None else torch.cat((old_v, v), dim=2)
        keep = k_all.shape[2] if self.max_len is None else min(self.max_len, k_all.shape[2])
        self.k[layer] = k_all[:, :, -keep:]
        self.v[layer] = v_all[:, :, -keep:]
        return k_all, v_all, self.start

    def end(self) -> None:
        """Finish the forward: advance positions and drop what rolled out of the window."""
        self.next_pos += self._pending
        self._pending = 0
        if self.max_len is not None:
            self.start = max(self.start, self.next_pos - self.max_len)

    def bytes(self) -> int:
        """Memory held by the cached tensors."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)
