"""Key/value cache for incremental decoding.

A decoder's self-attention at step t needs the keys and values of every earlier token. Recomputing them
costs O(T) forward passes per step; caching them makes each step one token. Buffers are preallocated per
layer as (B, H_kv, max_len, D) on first use and filled left to right; cross-attention keys/values (computed
once from the encoder output) are kept per layer too.

Beam search turns each input into K beams that share a prompt and then part ways. After `expand(K)` the
cache holds one sequence of keys per input (group): the prompt's P positions once, then every beam's token
of each step side by side (the key of beam slot s at generated position j sits at P + j K + s), and attention
runs each input's K beams as K queries over that sequence (`beam_bias`: a beam sees the prompt and its own
slot's keys). So the prompt is read once per input, not once per beam (`transformers` holds and reads K
copies), and one attention call serves all beams. After each step `reorder(index)` makes beam i continue beam
index[i] of the same input without moving what stays: each parent keeps its slot for its first child; a
later child of the same parent takes the slot of a beam that left no child and gets the parent's keys and
values copied in, from the first position where the two token histories differ, all layers in one copy
(default decoder, batch 8, K = 4, 64 new tokens: about 15 of 32 beams per step, 2.5% of the bytes of a full
gather). Logical beam i then lives in buffer row `slots[i]` (input i // K, slot slots[i] % K): the caller
feeds the model its rows in buffer order (`holders`) and reads logical rows `slots` of the output.
"""

import torch


class KVCache:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.lengths: dict[int, int] = {}
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.group = 0  # beams per input after expand(); 0: rows are independent sequences
        self.offset = 0  # after expand: the prompt's length P
        self.beams_kv: torch.Tensor | None = None  # after expand: all layers' keys, values (2 x layers, G, H, N, D)
        self.slots: torch.Tensor | None = None  # after expand: buffer row of each logical row
        self.holders: torch.Tensor | None = None  # after expand: logical row held by each buffer row (slots' inverse)
        self._slots: list[int] = []  # slots and holders as lists, for reorder's bookkeeping
        self._holders: list[int] = []
        self._seen: torch.Tensor | None = None  # after expand: beam_bias without a bias, for every key count
        self._biased: tuple = ()  # beam_bias' last biased answer

    @property
    def length(self) -> int:
        """Tokens cached so far per row (in layer 0; all layers agree after a full forward)."""
        return self.lengths.get(0, 0)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H_kv, T, D) (rows in buffer order) for `layer`; return all keys and values:
        (B, H_kv, L + T, D), or after expand (G, H_kv, P + K (L + 1 - P), D), one sequence per input."""
        start = self.lengths.get(layer, 0)
        end = start + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} tokens exceed max_len={self.max_len} (the model's block_size)")
        if self.group:
            if k.size(2) != 1:
                raise ValueError(f"after expand the cache takes one token per beam and step, got {k.size(2)}")
            a = self.offset + (start - self.offset) * self.group  # this step's K slots, one per beam
            n = a + self.group
            k, v = (t.reshape(-1, self.group, t.size(1), t.size(3)).transpose(1, 2) for t in (k, v))  # (G, H, K, D)
        else:
            a, n = start, end
            if layer not in self.k:
                b, h, _, d = k.shape
                self.k[layer] = k.new_empty(b, h, self.max_len, d)
                self.v[layer] = v.new_empty(b, h, self.max_len, d)
        self.k[layer][:, :, a:n] = k
        self.v[layer][:, :, a:n] = v
        self.lengths[layer] = end
        return self.k[layer][:, :, :n], self.v[layer][:, :, :n]

    def expand(self, group: int, prompt_mask: torch.Tensor | None = None) -> None:
        """After the prefill: every row becomes an input of `group` beams that continue from it.

        prompt_mask (B, P): which of the cached positions are real tokens (None: all).
        """
        if self.group:
            raise ValueError("KVCache.expand: the cache is already expanded (expand once, after the prefill)")
        if not self.k:
            raise ValueError("KVCache.expand continues what is cached: run the prefill first")
        p, layers = self.length, sorted(self.k)
        b, h, _, d = self.k[layers[0]].shape
        n = p + group * (self.max_len - p)
        self.beams_kv = self.k[layers[0]].new_empty(2 * len(layers), b, h, n, d)
        for i, layer in enumerate(layers):
            self.beams_kv[2 * i, :, :, :p] = self.k[layer][:, :, :p]
            self.beams_kv[2 * i + 1, :, :, :p] = self.v[layer][:, :, :p]
            self.k[layer], self.v[layer] = self.beams_kv[2 * i], self.beams_kv[2 * i + 1]
        self.cross = {layer: (k.repeat_interleave(group, 0), v.repeat_interleave(group, 0))
                      for layer, (k, v) in self.cross.items()}
        self.group, self.offset = group, p
        self._set_slots(list(range(b * group)), device=self.beams_kv.device)
        # what each slot sees: the prompt as its rows do, then its own key of every step (P + j K + s)
        device = self.beams_kv.device
        own = torch.arange(n - p, device=device) % group == torch.arange(group, device=device)[:, None]  # (K, N - P)
        prompt = prompt_mask.bool() if prompt_mask is not None else own.new_ones(b, p)
        seen = torch.cat([prompt[:, None, :].expand(b, group, p), own.expand(b, group, n - p)], -1)[:, None]
        self._seen = torch.zeros(seen.shape, dtype=self.beams_kv.dtype, device=device).masked_fill_(~seen, -torch.inf)

    def beam_bias(self, bias: torch.Tensor | None, n_keys: int) -> torch.Tensor:
        """After expand: the additive attention mask (G, 1 or H, K, N) of a step's K queries per input over its
        N keys: 0 where the slot sees the key, -inf elsewhere, plus the rows' bias (B or 1, H, 1, L) or (H, 1, L)
        if given (ALiBi; equal for the rows of an input): key P + j K + s gets position P + j's."""
        if bias is None:
            return self._seen[..., :n_keys]
        if self._biased and self._biased[0] == n_keys and self._biased[1] is bias:
            return self._biased[2]
        K, p = self.group, self.offset
        grouped = bias if bias.dim() == 4 else bias[None]
        grouped = grouped[::K] if grouped.size(0) > 1 else grouped
        out = self._seen[..., :n_keys] + torch.cat([grouped[..., :p], grouped[..., p:].repeat_interleave(K, -1)], -1)
        self._biased = (n_keys, bias, out)  # the other layers of this step reuse it
        return out

    def reorder(self, index: torch.Tensor, tokens: torch.Tensor) -> None:
        """After expand(K): logical row i continues logical row index[i] (LongTensor (B * K,)) of its own group.

        tokens (rows, >= length), the token ids the logical rows have cached: two rows of a group whose
        tokens agree on positions < p hold equal keys and values there, which are then not copied.
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
        self._set_slots(new, device)

    def _set_slots(self, slots: list[int], device) -> None:
        self._slots, self._holders = slots, [0] * len(slots)
        for i, row in enumerate(slots):
            self._holders[row] = i
        self.slots = torch.tensor(slots, device=device)
        self.holders = torch.tensor(self._holders, device=device)

    def _copy(self, pairs: list[tuple[int, int, int, int]], tokens: torch.Tensor, device) -> None:
        """Copy each pair's source slot into its destination slot (same input), from the first position where
        the histories of the child and of the slot's old holder differ, for every layer at once."""
        n, p, K = self.length, self.offset, self.group
        rows = torch.tensor([q[2] for q in pairs] + [q[3] for q in pairs], device=device)
        now, was = tokens[:, :n].index_select(0, rows).view(2, len(pairs), n)
        differ = torch.cat([now != was, now.new_ones(len(pairs), 1, dtype=torch.bool)], 1)
        starts = [max(a, p) for a in differ.int().argmax(1).tolist()]
        layers_kv, _, h, span, d = self.beams_kv.shape
        dst, src = [], []  # flat indices of (input, head, key) into beams_kv viewed as (2 x layers, -1, D)
        for (to, frm, _, _), a in zip(pairs, starts, strict=True):
            for head in range(h):
                base = (to // K * h + head) * span + p
                dst.extend(range(base + (a - p) * K + to % K, base + (n - p) * K, K))
                src.extend(range(base + (a - p) * K + frm % K, base + (n - p) * K, K))
        if dst:
            flat = self.beams_kv.view(layers_kv, -1, d)
            dst, src = torch.tensor(dst, device=device), torch.tensor(src, device=device)
            flat.index_copy_(1, dst, flat.index_select(1, src))
