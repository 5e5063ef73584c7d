"""Multi-head attention: self-attention, causal self-attention and cross-attention.

    head_h = Attention(x W_q^h, s W_k^h, s W_v^h),   MHA(x, s) = concat(head_1..head_H) W_o

with s = x for self-attention and s = the encoder output ("memory") for cross-attention. Grouped-query
attention shares each key/value head among n_head / n_kv_head query heads (n_kv_head = 1: multi-query).
Projections are fused (one c_attn matrix, GPT-2 / Baichuan W_pack style) or separate (q/k/v_proj, needed
for cross-attention where keys and values come from another sequence). Attention-probability dropout is
applied only in training and only by the naive and SDPA kernels (the tiled flash kernel has none).
Beam-search steps (a KV cache after `expand`) run an input's beams as the queries of its one key sequence,
through SDPA with the cache's additive mask (`KVCache.beam_bias`), whatever the kernel.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.nn.attention import (
    flash_attention,
    full_mask,
    naive_attention,
    padding_mask,
    sdpa_attention,
)
from tinylm.nn.kv_cache import KVCache


def _triton_attention(q, k, v, *, mask=None, causal=False, dropout_p=0.0):
    """attention='triton': imports Triton on first use; like flash, no attention dropout."""
    from tinylm.nn.triton_attention import triton_attention

    return triton_attention(q, k, v, mask=mask, causal=causal)


KERNELS = {"sdpa": sdpa_attention, "flash": flash_attention, "naive": naive_attention, "triton": _triton_attention}


class MultiHeadAttention(nn.Module):
    def __init__(
        self,
        n_embd: int,
        n_head: int,
        n_kv_head: int | None = None,
        *,
        bias: bool = True,
        fused: bool = True,
        dropout: float = 0.0,
        kernel: str = "sdpa",
        cross: bool = False,
    ):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        if n_embd % n_head or n_head % self.n_kv_head:
            raise ValueError(f"n_embd={n_embd}, n_head={n_head}, n_kv_head={self.n_kv_head}: need n_embd % n_head == 0 "
                             "and n_head % n_kv_head == 0")
        if cross and fused:
            raise ValueError("cross-attention needs separate projections (fused=False)")
        if kernel not in KERNELS:
            raise ValueError(f"attention kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
        self.head_dim = n_embd // n_head
        self.cross, self.fused, self.kernel, self.dropout = cross, fused, kernel, dropout
        kv_dim = self.n_kv_head * self.head_dim
        if fused:
            self.c_attn = nn.Linear(n_embd, n_embd + 2 * kv_dim, bias=bias)
        else:
            self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
            self.k_proj = nn.Linear(n_embd, kv_dim, bias=bias)
            self.v_proj = nn.Linear(n_embd, kv_dim, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), n, self.head_dim).transpose(1, 2)  # (B, n, T, hs)

    def _project(self, x, memory, cache: KVCache | None, layer: int):
        if self.fused:
            # split, not one view unbound: the backward joins dq, dk, dv with one cat (as nanoGPT's), where
            # unbind's stack + reshape copied them twice (benchmarks/graph_ops.py)
            q, k, v = self.c_attn(x).split([self.n_head * self.head_dim, *(2 * [self.n_kv_head * self.head_dim])], -1)
            return self._heads(q, self.n_head), self._heads(k, self.n_kv_head), self._heads(v, self.n_kv_head)
        q = self._heads(self.q_proj(x), self.n_head)
        if self.cross and cache is not None and (cached := cache.cross.get(layer)) is not None:
            return (q, *cached)
        src = memory if self.cross else x
        k, v = self._heads(self.k_proj(src), self.n_kv_head), self._heads(self.v_proj(src), self.n_kv_head)
        if self.cross and cache is not None:
            cache.cross[layer] = (k, v)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        rope=None,
        positions: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C).

        key_mask: (B, Tk) 0/1 over all keys (cached ones included); causal: decoder self-attention,
        aligned bottom-right so new tokens see the cached prefix; rope/positions: rotary embedding applied to
        q and k at `positions` (T,) or (B, T); attn_bias: additive float bias (ALiBi), broadcastable to
        (B, H, Tq, Tk); cache/layer: append this step's keys and values to the KV cache.
        """
        B, T, C = x.shape
        q, k, v = self._project(x, memory, cache, layer)  # (B, nh, T, hs), (B, nkv, Tk, hs)
        if rope is not None:
            q, k = rope(q, positions), rope(k, positions)
        if cache is not None and not self.cross:
            k, v = cache.update(layer, k, v)
        mask = padding_mask(key_mask) if key_mask is not None else None
        if cache is not None and cache.group and not self.cross:  # beam search: an input's K beams are the
            q = q.reshape(-1, cache.group, self.n_head, self.head_dim).transpose(1, 2)  # K queries of one sequence
            mask, attn_bias = None, cache.beam_bias(attn_bias, k.size(2))  # (G, nh, K, hs), additive mask
        if self.n_kv_head != self.n_head and (self.kernel != "triton" or attn_bias is not None):
            rep = self.n_head // self.n_kv_head  # the Triton kernel maps query heads to their key/value head itself
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, nh, Tk, hs)
        align = "bottom_right" if causal and T > 1 else False  # one new query sees every key: no causal mask
        p = self.dropout if self.training else 0.0
        if attn_bias is not None:
            y = _biased_attention(q, k, v, mask, align, attn_bias, p)
        elif self.kernel == "flash":
            y = flash_attention(q, k, v, mask=mask, causal=align)
        else:
            y = KERNELS[self.kernel](q, k, v, mask=mask, causal=align, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C); beam queries (G, nh, K, hs) -> (G K, 1, C)
        return self.resid_dropout(self.c_proj(y))


def _biased_attention(q, k, v, mask, align, bias, dropout_p):
    """SDPA with an additive float bias (ALiBi) folded together with the boolean masks."""
    full = full_mask(q, k, mask, align)
    bias = bias.to(q.dtype)
    if full is not None:
        bias = bias.masked_fill(~full, float("-inf"))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    return y if full is None else y.masked_fill(~full.any(-1, keepdim=True), 0.0)
