"""One Transformer layer: self-attention, optional cross-attention, and an MLP, each in a residual branch.

    pre-LN  (GPT-2, LLaMA, Baichuan):      x = x + f(norm(x))
    post-LN (original Transformer, BERT):  x = norm(x + f(x))

Names mirror GPT-2's checkpoint: ln_1/attn, ln_2/mlp; the decoder of an encoder-decoder adds
ln_cross/cross_attn between them.
"""

from torch import nn

from tinylm.nn.mha import MultiHeadAttention
from tinylm.nn.mlp import build_mlp
from tinylm.nn.norms import build_norm


class Block(nn.Module):
    def __init__(self, cfg, *, cross: bool = False, fused: bool = True):
        super().__init__()
        d = cfg.n_embd
        self.pre = cfg.norm_placement == "pre"
        attn = dict(bias=cfg.bias, dropout=cfg.dropout, kernel=cfg.attention)
        self.ln_1 = build_norm(cfg.norm, d, cfg.norm_eps, cfg.bias)
        self.attn = MultiHeadAttention(d, cfg.n_head, cfg.n_kv_head, fused=fused, **attn)
        if cross:
            self.ln_cross = build_norm(cfg.norm, d, cfg.norm_eps, cfg.bias)
            self.cross_attn = MultiHeadAttention(d, cfg.n_head, cfg.n_kv_head, fused=False, cross=True, **attn)
        self.ln_2 = build_norm(cfg.norm, d, cfg.norm_eps, cfg.bias)
        self.mlp = build_mlp(cfg.mlp, d, cfg.mlp_hidden, cfg.bias, cfg.dropout)

    def _residual(self, x, norm, f):
        return x + f(norm(x)) if self.pre else norm(x + f(x))

    def forward(self, x, *, key_mask=None, causal=False, memory=None, memory_mask=None, cache=None, layer=0, **pos):
        """x (B, T, C); pos: rope/positions/attn_bias for self-attention (see MultiHeadAttention)."""
        x = self._residual(x, self.ln_1, lambda h: self.attn(h, key_mask=key_mask, causal=causal, cache=cache,
                                                              layer=layer, **pos))
        if memory is not None:
            x = self._residual(x, self.ln_cross, lambda h: self.cross_attn(h, memory=memory, key_mask=memory_mask,
                                                                           cache=cache, layer=layer))
        return self._residual(x, self.ln_2, self.mlp)
