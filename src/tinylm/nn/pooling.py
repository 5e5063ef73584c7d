"""One vector per sequence from its hidden states h (B, T, C), over the real (non-padding) tokens:

    cls:  h[b, 0]                              (BERT's [CLS] token)
    mean: sum_t m[b, t] h[b, t] / sum_t m[b, t]
    last: h[b, t_b], t_b = max{t : m[b, t] = 1}  (a causal model's only state that saw every token; any padding side)

m: the attention mask (B, T), 1 for a real token; None means every token is real.
"""

import torch

POOLINGS = ("cls", "mean", "last")


def pool(h: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, C) -> (B, C) by `how` (one of POOLINGS)."""
    if how == "cls":
        return h[:, 0]
    keep = torch.ones(h.shape[:2], dtype=torch.long, device=h.device) if attention_mask is None else attention_mask
    if how == "mean":
        w = keep.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1)
    if how == "last":
        last = keep.size(1) - 1 - keep.flip(1).argmax(1)  # (B,)
        return h[torch.arange(h.size(0), device=h.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
