"""The key/value cache used by generation: per layer (B, n_kv_head, T, hs) buffers written in place.

Each layer owns one preallocated key buffer and one value buffer of ``capacity`` positions. A forward writes
its new keys/values into the free slots right after the cached ones and attends to a view of the filled part,
so a decode step copies one position per layer instead of re-concatenating the whole cache (``torch.cat``
every step). All layers share one layout (``_lo``: buffer slot of the oldest cached position), decided once
per forward in ``begin``.

``StaticKVCache`` is the fixed-shape ring a compiled decode step uses (``GPT.decode_step``, sample.py
``compile=true``): same keys per query, shapes that never change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gptlab.errors import UserError


class KVCache:
    """Keys and values of the tokens seen so far, for every layer.

    Positions are contiguous: the cached keys hold positions ``start .. next_pos - 1``. With ``max_len`` set the
    cache rolls: after each forward only the last ``max_len`` positions are kept (a sliding window), which is
    exact for attention whose window is at most ``max_len``.

    ``capacity`` is the number of positions each buffer is allocated for (at the first forward, with that
    forward's batch, dtype and device). Default: ``max_len + max(16, max_len // 4)`` for a rolling cache (the
    slack lets the window slide in place; the kept positions move back to slot 0 once the slack is used up, a
    copy every ``slack`` steps), else grow by doubling as needed. A forward that needs more than the
    capacity still works: a full buffer grows, except that a rolling cache concatenates once for that forward
    (a prompt longer than the window) and keeps only the last ``max_len`` positions.
    """

    def __init__(self, n_layer: int, max_len: int | None = None, capacity: int | None = None):
        self.k: list[Tensor | None] = [None] * n_layer  # (B, nkv, capacity, hs) buffers
        self.v: list[Tensor | None] = [None] * n_layer
        self.max_len = max_len
        if capacity is None and max_len is not None:
            capacity = max_len + max(16, max_len // 4)
        self.capacity = capacity  # None: decided by the first forward, then grows by doubling
        self.start = 0  # position of the oldest cached key
        self.next_pos = 0  # position the next token will get
        self._lo = 0  # buffer slot holding position `start`
        self._pending = 0  # tokens added by the forward in progress
        self._mode = "append"  # this forward: append | shift | grow | concat

    def reset(self) -> None:
        """Forget every position (keeping the buffers for reuse): the next forward starts at position 0."""
        self.start = self.next_pos = self._lo = self._pending = 0
        self._mode = "append"

    def __len__(self) -> int:
        return self.next_pos - self.start

    def begin(self, T: int) -> int:
        """Start a forward of T new tokens (choosing where they go); returns the position of the first one."""
        n = len(self)
        need = n + T  # positions this forward attends to
        self._pending = T
        cap = self.capacity
        if cap is None:
            self.capacity = max(need, 64)
            self._mode = "append"
        elif self._lo + need <= cap:
            self._mode = "append"
        elif need <= cap:
            self._mode = "shift"  # move the cached positions back to slot 0, then append
        elif self.max_len is None:
            self.capacity = max(2 * cap, need)
            self._mode = "grow"
        else:  # a rolling cache fed more than fits: attend to a concatenation, keep the tail afterwards
            self._mode = "concat"
        return self.next_pos

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, int]:
        """Store this forward's k, v (B, nkv, T, hs); return all keys, values to attend to and their first position.

        The returned tensors are views of the buffers (no copy); they stay valid until the next forward.
        """
        T, n, lo = k.shape[2], len(self), self._lo
        cap = self.capacity
        assert cap is not None, "begin() sets the capacity before the first update"
        kb, vb = self.k[layer], self.v[layer]
        if kb is not None and kb.shape[0] != k.shape[0]:  # copy_ would broadcast silently
            raise UserError(
                f"this KVCache holds a batch of {kb.shape[0]}, got {k.shape[0]}; use a new KVCache per batch"
            )
        if self._mode == "concat":
            assert self.max_len is not None, "only a rolling cache concatenates"
            if n:
                kb, vb = self.buffers(layer)  # n cached positions live there
                k_all = torch.cat((kb[:, :, lo : lo + n], k), dim=2)  # (B, nkv, n + T, hs)
                v_all = torch.cat((vb[:, :, lo : lo + n], v), dim=2)
            else:
                k_all, v_all = k, v
            keep = min(self.max_len, n + T)
            if kb is None or vb is None or kb.shape[2] < keep:
                kb, vb = self._alloc(k, max(keep, cap)), self._alloc(v, max(keep, cap))
            kb[:, :, :keep].copy_(k_all[:, :, -keep:])
            vb[:, :, :keep].copy_(v_all[:, :, -keep:])
            self.k[layer], self.v[layer] = kb, vb
            return k_all, v_all, self.start
        if kb is None or vb is None or self._mode == "grow":
            nk, nv = self._alloc(k, cap), self._alloc(v, cap)
            if kb is not None and vb is not None and n:
                nk[:, :, :n].copy_(kb[:, :, lo : lo + n])
                nv[:, :, :n].copy_(vb[:, :, lo : lo + n])
            kb, vb, lo = nk, nv, 0
        elif self._mode == "shift":
            if n:  # clone: source and destination may overlap
                kb[:, :, :n].copy_(kb[:, :, lo : lo + n].clone())
                vb[:, :, :n].copy_(vb[:, :, lo : lo + n].clone())
            lo = 0
        self.k[layer], self.v[layer] = kb, vb
        kb[:, :, lo + n : lo + n + T].copy_(k)
        vb[:, :, lo + n : lo + n + T].copy_(v)
        return kb[:, :, lo : lo + n + T], vb[:, :, lo : lo + n + T], self.start

    def buffers(self, layer: int) -> tuple[Tensor, Tensor]:
        """The layer's key and value buffers, which exist once a forward has stored something."""
        kb, vb = self.k[layer], self.v[layer]
        assert kb is not None and vb is not None, f"layer {layer} has no cached keys yet"
        return kb, vb

    def held(self, layer: int) -> tuple[Tensor, Tensor]:
        """Views of the keys and values held between forwards: positions ``start .. next_pos - 1``."""
        lo, n = self._lo, len(self)
        kb, vb = self.buffers(layer)
        return kb[:, :, lo : lo + n], vb[:, :, lo : lo + n]

    @staticmethod
    def _alloc(like: Tensor, cap: int) -> Tensor:
        B, nkv, _, hs = like.shape
        return like.new_empty(B, nkv, cap, hs)

    def end(self) -> None:
        """Finish the forward: advance positions and drop what rolled out of the window."""
        n = len(self) + self._pending
        if self._mode in ("grow", "shift"):
            self._lo = 0
        elif self._mode == "concat":
            assert self.max_len is not None, "only a rolling cache concatenates"
            self._lo, n = 0, min(n, self.max_len)
            self.start = self.next_pos + self._pending - n
        self.next_pos += self._pending
        self._pending = 0
        self._mode = "append"
        if self.max_len is not None and n > self.max_len:
            drop = n - self.max_len
            self._lo += drop
            self.start += drop

    def bytes(self) -> int:
        """Memory of the cached keys and values: the positions held (``len(self)``), not the spare capacity."""
        used = len(self)
        return sum(t[:, :, :used].numel() * t.element_size() for t in self.k + self.v if t is not None)

    def allocated_bytes(self) -> int:
        """Memory allocated for the buffers (``capacity`` positions per layer)."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)


class StaticKVCache:
    """A fixed-shape ring of ``size`` positions per layer, for a compiled (or CUDA-graph) decode step.

    ``KVCache`` attends to a view of the filled slots, whose length grows every step, so each step has new
    shapes: fine eagerly, but a compiled step would recompile (or record a new CUDA graph) for each length.
    Here every shape is fixed: slot ``p % size`` holds position ``p``; a step writes its key and value there
    in place and attends to all ``size`` slots, with a mask built from ``slot_pos`` (the position each slot
    holds, -1 while empty). The next position ``pos`` is a device tensor the step advances itself, so a step
    needs no number from the host. With ``size`` = the window (relative schemes) or block_size (absolute
    schemes, which re-fill before they wrap), each query sees exactly the keys ``KVCache`` would show it.

    ``load(cache)`` takes over what a prefill through a ``KVCache`` left (the prompt runs eagerly at full
    width); then each ``GPT.decode_step`` adds one token. Buffers are allocated by ``load`` and reused.
    """

    def __init__(self, n_layer: int, size: int):
        self.n_layer, self.size = n_layer, size
        self.k: list[Tensor] = []  # (B, nkv, size, hs) per layer
        self.v: list[Tensor] = []
        # allocated by load (on the cache's device); empty until then
        self.slot_pos = torch.empty(
            0, dtype=torch.long
        )  # (size,) long: the position each slot holds, -1 = empty
        self.pos = torch.empty(0, dtype=torch.long)  # (1,) long: the position of the next token
        self.slot = torch.empty(0, dtype=torch.long)  # (1,) long: pos % size, set by begin()
        self.token = torch.empty(
            0, dtype=torch.long
        )  # (B, 1) long: the input of a compiled step (input_buffer)

    def load(self, cache: KVCache) -> None:
        """Copy the positions a prefilled KVCache holds into the ring (allocating it the first time)."""
        n = len(cache)
        if n > self.size:
            raise ValueError(f"the cache holds {n} positions, more than this ring's {self.size}")
        like, _ = cache.buffers(0)
        fresh = not self.k or self.k[0].shape[0] != like.shape[0] or self.k[0].dtype != like.dtype
        if fresh:
            B, nkv, _, hs = like.shape
            self.k = [like.new_zeros(B, nkv, self.size, hs) for _ in range(self.n_layer)]
            self.v = [like.new_zeros(B, nkv, self.size, hs) for _ in range(self.n_layer)]
            self.slot_pos = torch.empty(self.size, dtype=torch.long, device=like.device)
            self.pos = torch.empty(1, dtype=torch.long, device=like.device)
            self.slot = torch.empty(1, dtype=torch.long, device=like.device)
            self.token = torch.zeros(B, 1, dtype=torch.long, device=like.device)
            for t in (*self.k, *self.v, self.slot_pos, self.pos, self.slot, self.token):
                torch._dynamo.mark_static_address(t)  # CUDA graphs may update them in place
        positions = torch.arange(cache.start, cache.next_pos, device=like.device)  # (n,)
        slots = positions % self.size
        for layer in range(self.n_layer):
            k, v = cache.held(layer)
            self.k[layer].index_copy_(2, slots, k)
            self.v[layer].index_copy_(2, slots, v)
        self.slot_pos.fill_(-1).index_copy_(0, slots, positions)
        self.pos.fill_(cache.next_pos)

    def input_buffer(self) -> Tensor:
        """A (B, 1) long tensor that lives as long as the ring: copy each step's token into it, so a compiled
        step always gets the same tensor (same strides, and the fixed address a CUDA graph reads)."""
        return self.token

    def begin(self) -> None:
        """Start a step: the slot of position ``pos`` now holds it (its old key rolls out of the window)."""
        self.slot.copy_(self.pos % self.size)
        self.slot_pos.index_copy_(0, self.slot, self.pos)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write the new token's k, v (B, nkv, 1, hs); return every slot's keys, values (B, nkv, size, hs)
        and positions (size,)."""
        self.k[layer].index_copy_(2, self.slot, k)
        self.v[layer].index_copy_(2, self.slot, v)
        return self.k[layer], self.v[layer], self.slot_pos

    def visible(self, window: int | None) -> Tensor:
        """Bool (1, size): the slots the query at ``pos`` may attend to (filled, not ahead, in the window)."""
        ok = (self.slot_pos >= 0) & (self.slot_pos <= self.pos)
        if window is not None:
            ok = ok & (self.slot_pos > self.pos - window)
        return ok[None, :]

    def end(self) -> None:
        self.pos.add_(1)
