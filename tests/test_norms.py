"""LayerNorm and RMSNorm against torch's LayerNorm, a float64 hand formula and transformers' LlamaRMSNorm."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tinylm.nn.norms import LayerNorm, RMSNorm, build_norm


def _randomise(norm):
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))
    return norm


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-6, 1e-12, 0.1])
def test_layernorm_matches_torch(bias, eps):
    ln = _randomise(LayerNorm(48, eps=eps, bias=bias))
    ref = torch.nn.LayerNorm(48, eps=eps, bias=bias)
    ref.load_state_dict(ln.state_dict())
    x = (torch.randn(3, 5, 48) * 3 + 1) * (eps ** 0.5 if eps < 0.1 else 1)  # variance near eps: eps matters
    torch.testing.assert_close(ln(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (48,), ln.weight, ln.bias, eps), rtol=1e-5, atol=1e-5)
    assert (ln.bias is None) == (not bias)


def test_layernorm_gradients_match_torch():
    ln = _randomise(LayerNorm(32))
    ref = torch.nn.LayerNorm(32)
    ref.load_state_dict(ln.state_dict())
    x = torch.randn(4, 7, 32, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(4, 7, 32)
    (ln(x) * g).sum().backward()
    (ref(x_ref) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ln.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ln.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.5])
def test_rmsnorm_matches_float64_formula_and_llama(eps):
    norm = _randomise(RMSNorm(40, eps=eps))
    x = torch.randn(2, 6, 40) * 2
    x64, w64 = x.double(), norm.weight.detach().double()
    expected = x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + eps) * w64
    torch.testing.assert_close(norm(x).double(), expected, rtol=1e-5, atol=1e-6)
    llama = LlamaRMSNorm(40, eps=eps)
    llama.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), llama(x), rtol=1e-6, atol=1e-6)


def test_rmsnorm_eps_matters_for_small_inputs():
    x = torch.full((1, 8), 1e-3)
    # mean(x^2) = 1e-6: with eps 1e-6 the output is 1e-3 / sqrt(2e-6) = 1/sqrt(2), not 1
    torch.testing.assert_close(RMSNorm(8, eps=1e-6)(x), torch.full((1, 8), 2**-0.5))


@pytest.mark.parametrize("norm", [LayerNorm(64), RMSNorm(64)], ids=["layernorm", "rmsnorm"])
def test_bf16_input_is_computed_in_float32_and_cast_back(norm):
    norm = _randomise(norm)
    x = (torch.randn(4, 64) * 5 + 3).bfloat16()
    y = norm(x)
    assert y.dtype == torch.bfloat16
    expected = norm(x.float()).to(torch.bfloat16)  # the float32 computation on the same (bf16) values
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    x64, w64 = x.double(), norm.weight.detach().double()
    if isinstance(norm, LayerNorm):
        ref = F.layer_norm(x64, (64,), w64, norm.bias.detach().double(), norm.eps)
    else:
        ref = x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + norm.eps) * w64
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2)  # bf16 round-off only


def test_build_norm():
    assert isinstance(build_norm("layernorm", 8, 1e-5, False), LayerNorm)
    assert build_norm("layernorm", 8, 1e-5, False).bias is None
    rms = build_norm("rmsnorm", 8, 1e-3, True)
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-3
    with pytest.raises(ValueError, match="batchnorm"):
        build_norm("batchnorm", 8, 1e-5, True)
