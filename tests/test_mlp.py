"""Feed-forward blocks against hand formulas and transformers' LlamaMLP."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from tinylm.nn.mlp import MLP, SwiGLU, build_mlp

HAND_ACTS = {
    "relu": lambda x: x.clamp(min=0),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),  # x Phi(x)
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}


@pytest.mark.parametrize("act", sorted(HAND_ACTS))
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_hand_formula(act, bias):
    mlp = MLP(16, 40, bias=bias, activation=act)
    x = torch.randn(2, 5, 16) * 3
    x64 = x.double()
    h = x64 @ mlp.c_fc.weight.double().T
    if bias:
        h = h + mlp.c_fc.bias.double()
    y = HAND_ACTS[act](h) @ mlp.c_proj.weight.double().T
    if bias:
        y = y + mlp.c_proj.bias.double()
    torch.testing.assert_close(mlp(x).double(), y, rtol=1e-5, atol=1e-5)
    assert (mlp.c_fc.bias is None) == (not bias)


def test_activations_differ():
    x = torch.randn(4, 16)
    outs = {}
    for act in HAND_ACTS:
        torch.manual_seed(1)
        outs[act] = MLP(16, 32, activation=act)(x)
    assert not torch.allclose(outs["gelu"], outs["gelu_tanh"], atol=1e-7)
    assert not torch.allclose(outs["gelu"], outs["relu"], atol=1e-3)


def test_swiglu_matches_hand_formula_and_llama_mlp():
    swiglu = SwiGLU(32, 96)
    x = torch.randn(3, 4, 32)
    x64 = x.double()
    g = x64 @ swiglu.gate_proj.weight.double().T
    u = x64 @ swiglu.up_proj.weight.double().T
    expected = (g * torch.sigmoid(g) * u) @ swiglu.down_proj.weight.double().T
    torch.testing.assert_close(swiglu(x).double(), expected, rtol=1e-5, atol=1e-6)

    llama = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=96, hidden_act="silu", mlp_bias=False))
    llama.load_state_dict(swiglu.state_dict())  # same parameter names: gate_proj, up_proj, down_proj
    torch.testing.assert_close(swiglu(x), llama(x), rtol=1e-6, atol=1e-6)


def test_mlp_dropout_only_in_training():
    mlp = MLP(16, 32, dropout=0.5).eval()
    x = torch.randn(8, 16)
    torch.testing.assert_close(mlp(x), mlp(x))
    mlp.train()
    assert not torch.allclose(mlp(x), mlp(x))


def test_build_mlp():
    assert isinstance(build_mlp("swiglu", 8, 24, False, 0.0), SwiGLU)
    m = build_mlp("relu", 8, 24, True, 0.0)
    assert isinstance(m, MLP) and m.c_fc.out_features == 24
    with pytest.raises(ValueError, match="geglu"):
        build_mlp("geglu", 8, 24, True, 0.0)


@pytest.mark.parametrize("mlp", [MLP(16, 32, dropout=0.5), SwiGLU(16, 32, dropout=0.5)], ids=["mlp", "swiglu"])
def test_dropout_acts_on_the_output(mlp):
    # residual dropout (GPT-2's resid_pdrop): each output entry is 0 or its eval value / (1 - p)
    x = torch.randn(64, 16)
    want = mlp.eval()(x) / 0.5
    got = mlp.train()(x)
    dropped = got == 0
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(got[~dropped], want[~dropped])


@pytest.mark.parametrize("kind", [*sorted(HAND_ACTS), "swiglu"])
@pytest.mark.parametrize("bias", [True, False])
def test_build_mlp_passes_kind_bias_and_dropout(kind, bias):
    m = build_mlp(kind, 8, 24, bias, 0.25).eval()
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == (3 if kind == "swiglu" else 2)
    assert all((lin.bias is not None) == bias for lin in linears)
    assert m.dropout.p == 0.25
    if kind != "swiglu":
        x = torch.randn(5, 8) * 3
        torch.testing.assert_close(m(x), m.c_proj(HAND_ACTS[kind](m.c_fc(x))))
