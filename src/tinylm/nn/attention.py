"""Scaled dot-product attention and its masks.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V

where M is 0 where a query may attend a key and -inf where it may not. Masks here are boolean,
True = attend, broadcastable to (B, H, Tq, Tk):

- causal (decoder self-attention): query i sees keys j <= i. With Tq == Tk this is the usual
  lower triangle. With Tq != Tk there are two alignments: "top_left" (torch's `is_causal`: j <= i)
  and "bottom_right" (the last query sees every key: j <= i + Tk - Tq), which is what incremental
  decoding with a KV cache needs. `causal=True` means top-left.
- padding (encoder self-attention, cross-attention, batched decoding): key j is attended only if it
  is a real token: shape (B, 1, 1, Tk).

Combining masks is a logical AND. A query row with no key to attend to gives zeros, not NaN.

Three implementations share one signature `f(q, k, v, *, mask=None, causal=False)` on (B, H, T, D):
`naive_attention` materialises the (Tq, Tk) score matrix, `sdpa_attention` calls PyTorch's fused
kernel, `flash_attention` is the tiled online-softmax algorithm (see `flash.py`).
"""

import math

import torch
import torch.nn.functional as F

from tinylm.nn.flash import _resolve_causal, flash_attention  # one copy of the causal-argument rules

__all__ = [
    "causal_mask",
    "padding_mask",
    "combine_masks",
    "full_mask",
    "naive_attention",
    "sdpa_attention",
    "flash_attention",
    "sdpa_backend",
]


def causal_mask(tq: int, tk: int | None = None, *, align: str = "top_left", device=None) -> torch.Tensor:
    """(Tq, Tk) bool mask, True where query i may attend key j (j <= i, or j <= i + Tk - Tq bottom-right)."""
    tk = tq if tk is None else tk
    if align not in ("top_left", "bottom_right"):
        raise ValueError(f"causal align must be 'top_left' or 'bottom_right', got {align!r}")
    offset = tk - tq if align == "bottom_right" else 0
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=offset)


def padding_mask(lengths_or_mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B, 1, 1, Tk) key mask from lengths (B,) or a 0/1 attention_mask (B, Tk); True = real token."""
    x = lengths_or_mask
    if x.dim() == 1:
        max_len = int(x.max()) if max_len is None else max_len
        keep = torch.arange(max_len, device=x.device)[None, :] < x[:, None]
    elif x.dim() == 2:
        keep = x.bool()
    else:
        raise ValueError(f"padding_mask takes lengths (B,) or an attention_mask (B, T), got shape {tuple(x.shape)}")
    return keep[:, None, None, :]


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the given boolean masks (None entries are ignored; all None gives None)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def full_mask(q, k, mask, causal) -> torch.Tensor | None:
    """The boolean mask (True = attend) of `mask` and the causal rule together, None when neither applies."""
    align = _resolve_causal(causal)
    cm = causal_mask(q.size(-2), k.size(-2), align=align, device=q.device) if align else None
    return combine_masks(mask, cm)


def naive_attention(q, k, v, *, mask=None, causal: bool | str = False, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(D) + M) v with the full (B, H, Tq, Tk) score matrix (the textbook form)."""
    full = full_mask(q, k, mask, causal)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, Tq, Tk)
    if full is not None:
        att = att.masked_fill(~full, float("-inf"))
    att = torch.softmax(att, dim=-1)
    if full is not None:
        att = att.masked_fill(~full, 0.0)  # rows with no key: softmax gave NaN, the answer is zeros
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return att @ v  # (B, H, Tq, D)


def sdpa_attention(q, k, v, *, mask=None, causal: bool | str = False, dropout_p: float = 0.0):
    """PyTorch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels where available).

    SDPA must never get both a mask and `is_causal`: a lone top-left causal mask goes as `is_causal`,
    anything else is combined into one boolean mask.
    """
    align = _resolve_causal(causal)
    if mask is None and (align == "top_left" or (align and q.size(-2) == k.size(-2))):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    full = full_mask(q, k, mask, causal)
    if full is not None and full.dim() < 2:  # SDPA rejects a 1-D (Tk,) key mask; (1, Tk) broadcasts the same
        full = full.reshape(1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=full, dropout_p=dropout_p)
    if full is not None and q.device.type != "cpu":  # torch's CPU kernels already give no-key rows zeros
        out = out.masked_fill(~full.any(dim=-1, keepdim=True), 0.0)  # no-key rows -> zeros, not NaN
    return out


def sdpa_backend(q, k, v, *, mask=None, causal: bool = False) -> str:
    """The kernel PyTorch's SDPA dispatches to for these inputs: "flash_attention", "efficient_attention",
    "cudnn_attention" or "math" (the unfused fallback), as `torch._fused_sdp_choice` decides it."""
    from torch.nn.attention import SDPBackend

    choice = torch._fused_sdp_choice(q, k, v, mask, 0.0, causal)
    return next(name.lower() for name, b in SDPBackend.__members__.items() if int(b) == choice)
