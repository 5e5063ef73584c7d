"""Position information for attention.

- Learned absolute (GPT-2, BERT): a table wpe[t] added to the token embedding.
- Sinusoidal (Vaswani et al. 2017): PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)).
- Rotary (RoPE, Su et al. 2021): rotate each (x_i, x_{i+d/2}) pair of q and k by angle t * theta_i,
  theta_i = base^(-2i/d), so q_m . k_n depends only on m - n. Split-half convention (HF `rotate_half`):
      rope(x, t) = x * cos(t theta) + rotate_half(x) * sin(t theta),  rotate_half([a, b]) = [-b, a]
- ALiBi (Press et al. 2022): no embedding; attention scores get -m_h * (i - j), with head slopes
  m_h = 2^(-8 h / H) for h = 1..H (H a power of two; otherwise the paper's interleaving rule).
"""

import math

import torch
from torch import nn


class LearnedPositionEmbedding(nn.Embedding):
    """wpe: (block_size, d); call with positions (T,) or (B, T)."""


class SinusoidalPositionEmbedding(nn.Module):
    """Fixed Vaswani table, stored as a non-persistent buffer; call with positions (T,) or (B, T)."""

    def __init__(self, max_len: int, dim: int, base: float = 10000.0):
        super().__init__()
        t = torch.arange(max_len, dtype=torch.float32)[:, None]
        inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(t * inv)
        pe[:, 1::2] = torch.cos(t * inv)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.pe[positions]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """rope = RotaryEmbedding(head_dim, base); rope(x, positions) on x (B, H, T, D), positions (T,) or (B, T)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq  # (T, D/2) or (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        if emb.dim() == 3:
            emb = emb[:, None]  # (B, 1, T, D): broadcast over heads
        cos, sin = emb.cos(), emb.sin()
        xf = x.float()
        return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes m_h (H,), geometric from 2^(-8/H) (interleaved for H not a power of two)."""

    def pow2(n):
        start = 2 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(pow2(n_head))
    p = 2 ** math.floor(math.log2(n_head))
    return torch.tensor(pow2(p) + pow2(2 * p)[0::2][: n_head - p])


def alibi_bias(n_head: int, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Additive bias -m_h * |i - j| of shape (H, Tq, Tk) (or (B, H, Tq, Tk) for batched positions)."""
    dist = (q_pos[..., :, None] - k_pos[..., None, :]).abs().float()  # (Tq, Tk) or (B, Tq, Tk)
    slopes = alibi_slopes(n_head).to(dist.device)
    return -slopes.view(-1, 1, 1) * dist.unsqueeze(-3)
