"""Key/value cache for incremental decoding.

A decoder's self-attention at step t needs the keys and values of every earlier token. Recomputing them
costs O(T) forward passes per step; caching them makes each step one token. Buffers are preallocated per
layer as (B, H_kv, max_len, D) on first use and filled left to right; cross-attention keys/values (computed
once from the encoder output) are kept per layer too. `reorder(index)` picks batch rows, as beam search
needs after each step.
"""

import torch


class KVCache:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.lengths: dict[int, int] = {}
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

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
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        self.lengths[layer] = end
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (LongTensor (B',)) in every buffer, in that order."""
        for store in (self.k, self.v):
            for layer, buf in store.items():
                store[layer] = buf.index_select(0, index)
        for layer, (k, v) in self.cross.items():
            self.cross[layer] = (k.index_select(0, index), v.index_select(0, index))
