"""Key/value cache for incremental decoding.

A decoder's self-attention at step t needs the keys and values of every earlier token. Recomputing them
costs O(T) forward passes per step; caching them makes each step one token. Buffers are preallocated per
layer as (B, H_kv, max_len, D) on first use and filled left to right; cross-attention keys/values (computed
once from the encoder output) are kept per layer too.

Beam search turns each row into K rows, the beams of one input, that share a prompt and then part ways.
`expand(K)` keeps the keys and values cached so far once per input, as `prefix[layer]` (B, H_kv, P, D) that
attention reads once for all K beams (`tinylm.nn.attention.prefix_attention`), with per-beam buffers
(B * K, H_kv, max_len - P, D) for later positions; for small caches, which stay in the CPU's cache anyway,
it copies them into every beam's rows instead (SHARE_MIN_BYTES). After each step `reorder(index)` makes beam
i continue beam index[i] of the same input. Most beams continue their parent, so rows are not gathered but
reassigned: each parent's buffer row goes to its first child; a later child of the same parent takes the
row of a beam that left no child and gets the parent's keys and values copied in, from the first position
where the two histories differ, all layers in one copy (default decoder, batch 8, K = 4, 64 new tokens:
about 15 of 32 rows per step, 2.5% of the bytes a full gather moves). Logical row i then lives in buffer
row `slots[i]`: the caller feeds the model its rows in buffer order (`holders`) and reads logical rows
`slots` of the output.
"""

import torch

SHARE_MIN_BYTES = 256 * 1024  # the crossover measured on CPU: 4 inputs x 4 beams x 32 prompt tokens, n_embd 128


class KVCache:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.lengths: dict[int, int] = {}
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # keys, values shared by each group
        self.group = 0  # rows per group after expand(); 0: not expanded
        self.offset = 0  # positions held in `prefix`, before the per-row buffers start
        self.slots: torch.Tensor | None = None  # buffer row of each logical row; None: row i is buffer row i
        self.holders: torch.Tensor | None = None  # logical row held by each buffer row (slots' inverse)
        self.rows_kv: torch.Tensor | None = None  # after expand: every layer's per-row keys and values
        self._slots: list[int] = []  # slots and holders as lists, for reorder's bookkeeping
        self._holders: list[int] = []

    @property
    def length(self) -> int:
        """Tokens cached so far (in layer 0; all layers agree after a full forward)."""
        return self.lengths.get(0, 0)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H_kv, T, D) (rows in buffer order) for `layer`; return the per-row keys and values
        (B, H_kv, L + T - offset, D), i.e. all of them unless `prefix` holds the first `offset`."""
        start = self.lengths.get(layer, 0)
        end = start + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} tokens exceed max_len={self.max_len} (the model's block_size)")
        if layer not in self.k:
            b, h, _, d = k.shape
            self.k[layer] = k.new_empty(b, h, self.max_len - self.offset, d)
            self.v[layer] = v.new_empty(b, h, self.max_len - self.offset, d)
        k_buf, v_buf = self.k[layer], self.v[layer]
        k_buf[:, :, start - self.offset:end - self.offset] = k
        v_buf[:, :, start - self.offset:end - self.offset] = v
        self.lengths[layer] = end
        return k_buf[:, :, :end - self.offset], v_buf[:, :, :end - self.offset]

    def expand(self, group: int, share: bool | None = None) -> None:
        """After the prefill: every row becomes `group` consecutive rows (beams) that continue from it.

        share: keep what is cached once per group as `prefix` instead of `group` copies; by default when the
        copies would hold at least SHARE_MIN_BYTES more per layer (below that, reading them costs less than
        the few more operations of prefix attention). The beams' own keys and values live in one tensor
        `rows_kv` (2 x layers, B * group, H_kv, max_len - offset, D), so that reorder copies in one go.
        """
        if self.group:
            raise ValueError("KVCache.expand: the cache is already expanded (expand once, after the prefill)")
        if not self.k:
            raise ValueError("KVCache.expand continues what is cached: run the prefill first")
        n, layers = self.length, sorted(self.k)
        if share is None:
            share = (group - 1) * 2 * self.k[layers[0]][:, :, :n].nbytes >= SHARE_MIN_BYTES
        b, h, _, d = self.k[layers[0]].shape
        self.offset = n if share else 0
        self.rows_kv = self.k[layers[0]].new_empty(2 * len(layers), b * group, h, self.max_len - self.offset, d)
        for i, layer in enumerate(layers):
            if share:
                self.prefix[layer] = (self.k[layer][:, :, :n], self.v[layer][:, :, :n])
            else:
                self.rows_kv[2 * i, :, :, :n] = self.k[layer][:, :, :n].repeat_interleave(group, 0)
                self.rows_kv[2 * i + 1, :, :, :n] = self.v[layer][:, :, :n].repeat_interleave(group, 0)
            self.k[layer], self.v[layer] = self.rows_kv[2 * i], self.rows_kv[2 * i + 1]
        self.cross = {layer: (k.repeat_interleave(group, 0), v.repeat_interleave(group, 0))
                      for layer, (k, v) in self.cross.items()}
        self.group = group
        self._slots, self._holders = list(range(b * group)), list(range(b * group))

    def reorder(self, index: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
        """After expand(K): logical row i continues logical row index[i] (LongTensor (B * K,)) of its own group.

        tokens (rows, >= length), the token ids the logical rows have cached: two rows of a group whose
        tokens agree on positions < p hold equal keys and values there, which are then not copied (without
        tokens every cached position of a copied row is).
        """
        if not self.group:
            raise ValueError("KVCache.reorder moves rows within the groups made by expand(); call expand first")
        slots, device, index = self._slots, index.device, index.tolist()
        new, pairs = [0] * len(index), []  # pairs: (buffer row to fill, its source row, child, old holder)
        for first in range(0, len(index), self.group):
            taken = {}  # buffer row -> the first child of the beam it holds
            for i in range(first, first + self.group):
                if not first <= index[i] < first + self.group:
                    raise ValueError(f"KVCache.reorder: row {i} continues row {index[i]}, outside its group")
                row = slots[index[i]]
                new[i] = row if taken.setdefault(row, i) == i else -1
            free = iter(r for r in range(first, first + self.group) if r not in taken)
            for i in range(first, first + self.group):
                if new[i] < 0:
                    new[i] = next(free)
                    pairs.append((new[i], slots[index[i]], index[i], self._holders[new[i]]))
        if pairs:
            self._copy(pairs, tokens, device)
        self._slots, self._holders = new, [0] * len(new)
        for i, row in enumerate(new):
            self._holders[row] = i
        self.slots = torch.tensor(new, device=device)
        self.holders = torch.tensor(self._holders, device=device)

    def _copy(self, pairs: list[tuple[int, int, int, int]], tokens: torch.Tensor | None, device) -> None:
        """Copy each pair's source buffer row into its destination row, from the first position where the
        histories of the child and of the row's old holder differ, for every layer at once."""
        n, offset = self.length, self.offset
        starts = [offset] * len(pairs)
        if tokens is not None:
            rows = torch.tensor([p[2] for p in pairs] + [p[3] for p in pairs], device=device)
            now, was = tokens[:, :n].index_select(0, rows).view(2, len(pairs), n)
            differ = torch.cat([now != was, now.new_ones(len(pairs), 1, dtype=torch.bool)], 1)
            starts = [max(a, offset) for a in differ.int().argmax(1).tolist()]
        layers_kv, _, h, span, d = self.rows_kv.shape
        dst, src = [], []  # flat indices of (row, head, position) into rows_kv viewed as (2 x layers, -1, D)
        for (to, frm, _, _), a in zip(pairs, starts, strict=True):
            for head in range(h):
                dst.extend(range((to * h + head) * span + a - offset, (to * h + head) * span + n - offset))
                src.extend(range((frm * h + head) * span + a - offset, (frm * h + head) * span + n - offset))
        if dst:
            flat = self.rows_kv.view(layers_kv, -1, d)
            dst, src = torch.tensor(dst, device=device), torch.tensor(src, device=device)
            flat.index_copy_(1, dst, flat.index_select(1, src))
