"""BERT (Devlin et al. 2019): a post-LN bidirectional encoder with a masked-LM head and a [CLS] classifier.

    h_0 = LayerNorm(word[x_t] + position[t] + token_type[s_t]);  h_l = Block_l(h_{l-1}) (padding mask only)
    position="rope" (RoFormer, Su et al. 2021): no position[t]; every layer rotates q and k by their positions,
    so attention sees offsets t - s directly (BENCHMARKS.md "Where pretraining pays": learned positions kept
    500 MLM steps at the unigram plateau)
    MLM logits = LayerNorm(gelu(h W_t + b_t)) word^T + b          (decoder tied to the word embeddings)
    class logits = W_c tanh(W_p pool(h) + b_p) + b_c               (pooler + classifier)
    pool(h) = h[CLS] (pooling="cls", BERT's) or the mean of h over the non-padding tokens (pooling="mean":
    MLM-only pretraining never trains the [CLS] state, so its mean does better; BENCHMARKS.md "Default quality")

Names mirror Hugging Face's BertForMaskedLM where the structure is the same (embeddings.word_embeddings,
...); each layer is a post-LN `Block` with separate q/k/v projections.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.config import ModelConfig
from tinylm.models.init import init_weights
from tinylm.nn.block import Block
from tinylm.nn.norms import LayerNorm
from tinylm.nn.pooling import pool
from tinylm.nn.positions import RotaryEmbedding


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.position == "learned":
            self.position_embeddings = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.n_embd)
        self.LayerNorm = LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.size(1)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "position_embeddings"):
            x = x + self.position_embeddings(torch.arange(T, device=input_ids.device))
        return self.dropout(self.LayerNorm(x))


class BertEncoder(nn.Module):
    """Embeddings + post-LN layers: (B, T) ids -> (B, T, C) hidden states."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layer = nn.ModuleList(Block(cfg, fused=False) for _ in range(cfg.n_layer))
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_base) if cfg.position == "rope" else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        T = input_ids.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size={self.config.block_size}")
        x = self.embeddings(input_ids, token_type_ids)
        pos = {} if self.rope is None else {"rope": self.rope, "positions": torch.arange(T, device=x.device)}
        for layer in self.layer:
            x = layer(x, key_mask=attention_mask, **pos)
        return x


class BERT(nn.Module):
    """Masked-LM model: model(input_ids, attention_mask=None, token_type_ids=None) -> logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertEncoder(cfg)
        self.transform = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.transform_norm = LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.decoder_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        init_weights(self, cfg.n_layer)

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings.weight  # tied

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        h = self.transform_norm(F.gelu(self.transform(h)))
        return F.linear(h, self.decoder_weight, self.decoder_bias)  # (B, T, V)


class BertClassifier(nn.Module):
    """Sequence classifier: model(input_ids, attention_mask=None, token_type_ids=None) -> (B, num_labels)."""

    POOLINGS = ("cls", "mean")

    def __init__(self, cfg: ModelConfig, num_labels: int, pooling: str = "cls"):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS} for a BERT classifier, got {pooling!r}")
        self.config, self.num_labels, self.pooling = cfg, num_labels, pooling
        self.bert = BertEncoder(cfg)
        self.pooler = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.n_embd, num_labels)
        init_weights(self, cfg.n_layer)

    @classmethod
    def from_pretrained_mlm(cls, mlm: BERT, num_labels: int, pooling: str = "cls") -> "BertClassifier":
        model = cls(mlm.config, num_labels, pooling)
        model.bert.load_state_dict(mlm.bert.state_dict())
        return model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = pool(self.bert(input_ids, attention_mask, token_type_ids), attention_mask, self.pooling)  # (B, C)
        return self.classifier(self.dropout(torch.tanh(self.pooler(h))))  # (B, num_labels)
