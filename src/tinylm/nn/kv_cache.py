"""Key/value cache for incremental decoding.

A decoder's self-attention at step t needs the keys and values of every earlier token. Recomputing them
costs O(T) forward passes per step; caching them makes each step one token. Buffers are preallocated per
layer as (B, H_kv, max_len, D) on first use and filled left to right; cross-attention keys/values (computed
once from the encoder output) are kept per layer too.

`reorder(index)` picks batch rows, as beam search needs after each step. It is lazy: a layer's rows are
gathered when that layer next reads its cache (`update`, `cross_kv`), so the freshly gathered keys and
values are still in the CPU cache when attention reads them (gathering every layer up front left them in
DRAM: beam search at 32 rows spent about 2x longer in attention). A gather copies only the filled positions,
and with `shared` only those from `shared` on (beams of one item share their prompt), into the buffers the
previous gather replaced (a fresh allocation per buffer and step, 1.5 MB at 32 rows, is a fresh mmap whose
page faults cost about as much as the copy).
"""

import torch


class KVCache:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.lengths: dict[int, int] = {}
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._order: dict[int, tuple[torch.Tensor, int]] = {}  # layer -> (rows, shared) still to gather
        self._spare: dict[tuple[int, str], tuple[torch.Tensor, ...]] = {}  # the buffers a gather replaced

    @property
    def length(self) -> int:
        """Tokens cached so far (in layer 0; all layers agree after a full forward)."""
        return self.lengths.get(0, 0)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H_kv, T, D) for `layer`; return all cached keys and values (B, H_kv, L + T, D)."""
        start = self.lengths.get(layer, 0)
        end = start + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} tokens exceed max_len={self.max_len} (the model's block_size)")
        if layer not in self.k:
            b, h, _, d = k.shape
            self.k[layer] = k.new_empty(b, h, self.max_len, d)
            self.v[layer] = v.new_empty(b, h, self.max_len, d)
        self._gather(layer)
        k_buf, v_buf = self.k[layer], self.v[layer]
        k_buf[:, :, start:end] = k
        v_buf[:, :, start:end] = v
        self.lengths[layer] = end
        return k_buf[:, :, :end], v_buf[:, :, :end]

    def cross_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached cross-attention keys and values of `layer`, or None before they are set."""
        if layer not in self.cross:
            return None
        self._gather(layer)
        return self.cross[layer]

    def reorder(self, index: torch.Tensor, shared: int = 0) -> None:
        """Keep batch rows `index` (LongTensor (B',)) in every buffer, in that order (applied lazily).

        shared > 0 promises that `index` moves rows only within groups (the beams of one item) whose rows
        have held equal keys and values at positions < shared, and equal cross-attention keys and values,
        ever since the batch took its current number of rows: those are not copied.
        """
        for layer in self.k.keys() | self.cross.keys():
            pending, before = self._order.get(layer, (None, shared))
            self._order[layer] = (index if pending is None else pending[index], min(before, shared))

    def _gather(self, layer: int) -> None:
        index, shared = self._order.pop(layer, (None, 0))
        if index is None:
            return
        if layer in self.k:
            bufs = (self.k[layer], self.v[layer])
            self.k[layer], self.v[layer] = self._select((layer, "self"), bufs, index, shared, self.lengths[layer])
        if layer in self.cross and not shared:
            k, v = self.cross[layer]
            self.cross[layer] = self._select((layer, "cross"), (k, v), index, 0, k.size(2))

    def _select(self, key, bufs, index: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, ...]:
        """Rows `index` of bufs at positions start..end-1, written into the buffers this gather last replaced."""
        spare = self._spare.get(key)
        if spare is None or spare[0].size(0) != index.numel():
            spare, start = tuple(b.new_empty(index.numel(), *b.shape[1:]) for b in bufs), 0
        for dst, src in zip(spare, bufs, strict=True):
            torch.index_select(src[:, :, start:end], 0, index, out=dst[:, :, start:end])
        self._spare[key] = bufs
        return spare
