"""The original encoder-decoder Transformer (Vaswani et al. 2017).

    memory = Encoder(emb(src) * sqrt(d) + PE)                   self-attention with the source padding mask
    logits = Decoder(emb(tgt) * sqrt(d) + PE, memory) emb^T     causal self-attention + cross-attention
                                                                 (keys: memory, masked by source padding)
One embedding matrix is shared by source, target and the generator (one tokenizer for both sides); it starts
at N(0, 1/d), as in fairseq and tensor2tensor, so that emb * sqrt(d) has unit scale like the positions (at
GPT-2's N(0, 0.02) the positions would outweigh the tokens about 3:1 and the source would look alike).
`encode` runs once; `decode` steps the decoder, with a KVCache holding self- and cross-attention keys.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.config import ModelConfig
from tinylm.models.init import init_weights
from tinylm.nn.block import Block
from tinylm.nn.kv_cache import KVCache
from tinylm.nn.positions import SinusoidalPositionEmbedding


class Seq2SeqTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pe = SinusoidalPositionEmbedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(Block(cfg, fused=False) for _ in range(cfg.n_layer))
        self.decoder = nn.ModuleList(Block(cfg, cross=True, fused=False) for _ in range(cfg.n_layer))
        init_weights(self, cfg.n_layer)
        nn.init.normal_(self.embed.weight, 0.0, cfg.n_embd ** -0.5)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.block_size)

    def _embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = ids.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        pos = torch.arange(start, start + T, device=ids.device)
        return self.drop(self.embed(ids) * math.sqrt(self.config.n_embd) + self.pe(pos))

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids (B, S), src_mask (B, S) 0/1 -> memory (B, S, C)."""
        x = self._embed(src_ids)
        for block in self.encoder:
            x = block(x, key_mask=src_mask)
        return x

    def decode(self, tgt_ids, memory, src_mask=None, tgt_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        """tgt_ids (B, T) (only the new tokens when a cache is given) -> logits (B, T, V).

        tgt_mask (B, past + T) 0/1 marks target padding (right padding in training).
        """
        x = self._embed(tgt_ids, start=cache.length if cache is not None else 0)
        for i, block in enumerate(self.decoder):
            x = block(x, key_mask=tgt_mask, causal=True, memory=memory, memory_mask=src_mask, cache=cache, layer=i)
        return F.linear(x, self.embed.weight)  # (B, T, V): generator tied to the embeddings

    def forward(self, src_ids, tgt_ids, src_mask=None, tgt_mask=None) -> torch.Tensor:
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask, tgt_mask)
