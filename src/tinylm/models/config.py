"""ModelConfig: one typed description for every architecture, and the named presets.

Presets (overrides use the field names):
- gpt2: decoder-only, pre-LN LayerNorm, learned positions, tanh-GELU MLP (4d), biases, tied embeddings.
- baichuan: decoder-only (Baichuan 2), RMSNorm eps 1e-6, RoPE, SwiGLU with hidden 8/3 d rounded up to a
  multiple of 128, no biases, untied head with NormHead (unit-norm output rows), max-z loss weight 2e-4.
- bert: post-LN encoder, word + position + segment embeddings, exact GELU, LayerNorm eps 1e-12, MLM head.
- transformer: the original encoder-decoder (post-LN, sinusoidal positions, embeddings scaled by sqrt(d),
  ReLU MLP of 4d, tied source/target embeddings and generator).
"""

import math
from dataclasses import asdict, dataclass, fields

ARCHS = ("gpt", "bert", "seq2seq")
CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "norm_placement": ("pre", "post"),
    "position": ("learned", "sinusoidal", "rope", "alibi", "none"),
    "mlp": ("relu", "gelu", "gelu_tanh", "swiglu"),
    "attention": ("sdpa", "flash", "naive", "triton"),
}
ARCH_POSITIONS = {"bert": ("learned", "rope"), "seq2seq": ("sinusoidal",)}  # BERT's or RoFormer's; the 2017 one


@dataclass
class ModelConfig:
    arch: str = "gpt"
    vocab_size: int = 4096
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # None: = n_head (multi-head); 1: multi-query; else grouped-query
    n_embd: int = 128
    mlp_hidden: int | None = None  # None: 4 * n_embd (ReLU/GELU) or 8/3 * n_embd rounded up to 128 (SwiGLU)
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    position: str = "learned"
    rope_base: float = 10000.0
    mlp: str = "gelu_tanh"
    attention: str = "sdpa"
    tie_embeddings: bool = True
    norm_head: bool = False
    z_loss_weight: float = 0.0
    pad_token_id: int | None = None
    type_vocab_size: int = 2  # BERT segment embeddings

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch={self.arch!r} is not one of {ARCHS}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key}={getattr(self, key)!r} is not one of {allowed}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "type_vocab_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model.{key} must be a positive integer, got {v!r}")
        for key in ("bias", "tie_embeddings", "norm_head"):  # a string such as "no" would be true
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"model.{key} must be true or false, got {getattr(self, key)!r}")
        for key, ok, allowed in (("dropout", lambda v: 0 <= v < 1, "in [0, 1)"), ("norm_eps", lambda v: v > 0, "> 0"),
                                 ("rope_base", lambda v: v > 0, "> 0"), ("z_loss_weight", lambda v: v >= 0, ">= 0")):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"model.{key} must be a finite number {allowed}, got {v!r}")
        if self.position not in ARCH_POSITIONS.get(self.arch, CHOICES["position"]):
            raise ValueError(f"model.position={self.position!r}: the {self.arch} model takes "
                             f"{' or '.join(map(repr, ARCH_POSITIONS[self.arch]))}")
        if self.arch != "gpt":  # only the decoder-only LM reads them: elsewhere they would be ignored, silently
            for key, default in (("norm_head", False), ("z_loss_weight", 0.0), ("tie_embeddings", True)):
                if getattr(self, key) != default:
                    raise ValueError(f"model.{key}={getattr(self, key)!r}: the {self.arch} model has no such option "
                                     f"(it would be ignored); leave it at {default!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model.n_head={self.n_head} must be divisible by model.n_kv_head={self.n_kv_head}")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"position='rope' needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}")
        if self.position == "alibi" and self.attention in ("flash", "triton"):
            raise ValueError(f"position='alibi' adds a float bias that the {self.attention} kernel does not take: "
                             "use attention='sdpa'")
        if self.mlp_hidden is None:
            self.mlp_hidden = (
                128 * math.ceil(8 * self.n_embd / 3 / 128) if self.mlp == "swiglu" else 4 * self.n_embd
            )
        if not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 1:
            raise ValueError(f"model.mlp_hidden must be a positive integer, got {self.mlp_hidden!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"model.pad_token_id={self.pad_token_id} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


_PRESETS = {
    "gpt2": dict(arch="gpt", norm="layernorm", norm_eps=1e-5, norm_placement="pre", position="learned",
                 mlp="gelu_tanh", bias=True, tie_embeddings=True),
    "baichuan": dict(arch="gpt", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre", position="rope",
                     mlp="swiglu", bias=False, tie_embeddings=False, norm_head=True, z_loss_weight=2e-4),
    "bert": dict(arch="bert", norm="layernorm", norm_eps=1e-12, norm_placement="post", position="learned",
                 mlp="gelu", bias=True, tie_embeddings=True),
    "transformer": dict(arch="seq2seq", norm="layernorm", norm_eps=1e-5, norm_placement="post",
                        position="sinusoidal", mlp="relu", bias=True, tie_embeddings=True),
}


def presets(name: str, **overrides) -> ModelConfig:
    """The named architecture with field overrides, e.g. presets("gpt2", n_layer=6, n_embd=384)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(_PRESETS)}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown} for preset {name!r}; known fields: {sorted(known)}")
    return ModelConfig(**{**_PRESETS[name], **overrides})
