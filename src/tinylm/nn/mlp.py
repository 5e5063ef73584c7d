"""Position-wise feed-forward networks.

MLP (Transformer, GPT-2, BERT):  y = W2 act(W1 x + b1) + b2, with act one of
    relu(x) = max(0, x)                                   (the original Transformer)
    gelu(x) = x Phi(x)                                    (BERT, exact)
    gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's "gelu_new")
SwiGLU (Shazeer 2020; LLaMA, Baichuan):  y = W_down (silu(W_gate x) * (W_up x)).
Parameter names mirror the checkpoints they load from: GPT-2's c_fc/c_proj, LLaMA's gate/up/down_proj.
"""

import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def build_mlp(kind: str, dim: int, hidden: int, bias: bool, dropout: float) -> nn.Module:
    """The MLP named by a ModelConfig: "relu", "gelu" (exact), "gelu_tanh" or "swiglu"."""
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias, dropout)
    if kind in ACTIVATIONS:
        return MLP(dim, hidden, bias, kind, dropout)
    raise ValueError(f"mlp must be one of {[*ACTIVATIONS, 'swiglu']}, got {kind!r}")
