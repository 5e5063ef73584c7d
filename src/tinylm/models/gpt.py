"""Decoder-only language model (GPT-2 and Baichuan-2-style presets), in the shape of nanoGPT's model.py.

    h_0 = wte[x_t] (+ wpe[p_t]);  h_l = Block_l(h_{l-1}) with causal self-attention;  logits = ln_f(h_L) W^T

Positions p_t follow the attention mask (p = cumsum(mask) - 1), so left- and right-padded batches give
each real token the position it would have alone. With a KVCache, only new tokens are fed; their logits
equal the full forward's. NormHead (Baichuan 2) normalises each output row: logits = h W^T / ||W_row||.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.config import ModelConfig
from tinylm.models.init import init_weights
from tinylm.nn.block import Block
from tinylm.nn.kv_cache import KVCache
from tinylm.nn.linear_cross_entropy import linear_cross_entropy
from tinylm.nn.norms import build_norm
from tinylm.nn.pooling import pool
from tinylm.nn.positions import LearnedPositionEmbedding, RotaryEmbedding, SinusoidalPositionEmbedding, alibi_bias


def positions_from_mask(attention_mask: torch.Tensor | None, past: int, T: int, device) -> torch.Tensor:
    """Positions of all keys: (B, past + T) from a 0/1 mask, else (past + T,) = 0, 1, 2, ..."""
    if attention_mask is None:
        return torch.arange(past + T, device=device)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d = cfg.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, d),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=build_norm(cfg.norm, d, cfg.norm_eps, cfg.bias),
        ))
        if cfg.position == "learned":
            self.transformer["wpe"] = LearnedPositionEmbedding(cfg.block_size, d)
        elif cfg.position == "sinusoidal":
            self.transformer["wpe"] = SinusoidalPositionEmbedding(cfg.block_size, d)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_base) if cfg.position == "rope" else None
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        init_weights(self, cfg.n_layer)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def new_cache(self) -> KVCache:
        return KVCache(self.config.block_size)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: KVCache | None = None) -> torch.Tensor:
        """h_L (B, T, C): the last block's output, before ln_f (forward's arguments of the same names)."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size={self.config.block_size}")
        if attention_mask is not None and attention_mask.size(-1) != past + T:
            raise ValueError(f"attention_mask covers {attention_mask.size(-1)} tokens, expected past + T = {past + T}")
        key_pos = positions_from_mask(attention_mask, past, T, input_ids.device)  # (Tk,) or (B, Tk)
        pos = key_pos[..., past:]  # (T,) or (B, T)
        x = self.transformer.wte(input_ids)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        extra = {}
        if self.rope is not None:
            extra = dict(rope=self.rope, positions=pos)
        elif self.config.position == "alibi":
            extra = dict(attn_bias=alibi_bias(self.config.n_head, pos, key_pos))
        key_mask = attention_mask.bool() if attention_mask is not None else None  # once, not once per layer
        for i, block in enumerate(self.transformer.h):
            x = block(x, key_mask=key_mask, causal=True, cache=cache, layer=i, **extra)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, logits_to_keep: int = 0, targets: torch.Tensor | None = None,
                target_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V). attention_mask (B, past + T): 1 = real token, 0 = padding.

        logits_to_keep = n > 0: logits of the last n positions only, (B, n, V) (as in `transformers`):
        a decoding prefill needs one, and the output layer is the largest matmul of a small model.
        targets (B, T) (-100 = ignored): return the loss sum_t w_t CE_eps(logits_t, targets_t) instead, with
        w = target_weights (B, T) (default: the mean over non-ignored targets) and eps = label_smoothing,
        computed chunk by chunk with the output layer (`tinylm.nn.linear_cross_entropy`): no (B, T, V) logits.
        """
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0 (0 = all positions), got {logits_to_keep!r}")
        x = self.hidden_states(input_ids, attention_mask, cache)  # (B, T, C)
        x = self.transformer.ln_f(x[:, -logits_to_keep:])  # logits_to_keep = 0 keeps all: x[:, -0:] is x
        w = self.lm_head.weight
        w = F.normalize(w, dim=-1) if self.config.norm_head else w
        if targets is not None:
            weights = target_weights.flatten() if target_weights is not None else None
            return linear_cross_entropy(x.flatten(0, 1), w, targets.flatten(), weights, label_smoothing)
        return F.linear(x, w)  # (B, T, V)


class GPTClassifier(nn.Module):
    """Sequence classifier on a GPT (GPT-1's recipe): logits = W pool_t(ln_f(h_t)) + b, pooled over the
    non-padding tokens by their mean ("mean") or the last one, the only state that saw them all ("last").
    model(input_ids, attention_mask=None) -> (B, num_labels)."""

    POOLINGS = ("mean", "last")

    def __init__(self, cfg: ModelConfig, num_labels: int, pooling: str = "mean"):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS} for a GPT classifier, got {pooling!r}")
        self.config, self.num_labels, self.pooling = cfg, num_labels, pooling
        self.gpt = GPT(cfg)
        self.classifier = nn.Linear(cfg.n_embd, num_labels)
        init_weights(self.classifier, cfg.n_layer)

    @classmethod
    def from_pretrained_lm(cls, lm: GPT, num_labels: int, pooling: str = "mean") -> "GPTClassifier":
        model = cls(lm.config, num_labels, pooling)
        model.gpt.load_state_dict(lm.state_dict())
        return model

    def forward(self, input_ids, attention_mask=None):
        h = self.gpt.transformer.ln_f(self.gpt.hidden_states(input_ids, attention_mask))  # (B, T, C)
        return self.classifier(pool(h, attention_mask, self.pooling))  # (B, num_labels)
