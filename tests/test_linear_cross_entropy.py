"""The fused output layer + cross-entropy against logits + torch's cross-entropy, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.models import build_model, presets
from tinylm.nn.linear_cross_entropy import linear_cross_entropy
from tinylm.training.losses import sft_loss, target_weights


def _inputs(n, c, v, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, c, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    return x, w, y


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), c=st.integers(1, 6), v=st.integers(2, 9), chunk=st.integers(1, 16),
       eps=st.sampled_from([0.0, 0.1, 0.5]), ignored=st.integers(0, 2**40), seed=st.integers(0, 1000))
def test_equals_logits_then_cross_entropy(n, c, v, chunk, eps, ignored, seed):
    x, w, y = _inputs(n, c, v, seed)
    y = torch.where(torch.tensor([(ignored >> i) & 1 for i in range(n)], dtype=torch.bool), -100, y)
    y[0] = 0  # at least one target counts
    ref = F.cross_entropy(x @ w.t(), y, label_smoothing=eps)
    ours = linear_cross_entropy(x, w, y, smoothing=eps, chunk_size=chunk)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(2 * ours, (x, w)), torch.autograd.grad(2 * ref, (x, w)), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_explicit_weights_equal_weighted_cross_entropy_and_skip_ignored_targets(eps):
    """sum_i w_i CE_eps(x_i W^T, y_i) over the targets that count: a -100 target weighs 0 whatever its w_i."""
    x, w, y = _inputs(11, 4, 7)
    y[3] = -100
    weights = torch.rand(11, dtype=torch.float64)
    ref = (weights * F.cross_entropy(x @ w.t(), y, reduction="none", label_smoothing=eps)).sum()
    ours = linear_cross_entropy(x, w, y, weights, eps, chunk_size=4)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, (x, w)), torch.autograd.grad(ref, (x, w)), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b: linear_cross_entropy(a, b, y, weights, eps, chunk_size=4), (x, w))


def test_per_sample_weights_give_sft_loss():
    x, w, y = _inputs(12, 5, 9)
    labels = y.view(3, 4).clone()
    labels[0, :3] = labels[1, :1] = -100
    for average in ("token", "sample"):
        ref = sft_loss((x @ w.t()).view(3, 4, 9), labels, 0.1, average)
        ours = linear_cross_entropy(x, w, labels.flatten(), target_weights(labels, average).flatten(), 0.1, 5)
        torch.testing.assert_close(ours.float(), ref)  # sft_loss computes in float32


def test_no_grad_path_gives_the_same_value():
    x, w, y = _inputs(9, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(x, w, y, chunk_size=2), F.cross_entropy(x @ w.t(), y))


@pytest.mark.parametrize("preset", ["gpt2", "baichuan"])  # tied embeddings / NormHead
def test_gpt_forward_with_targets_equals_loss_of_logits(preset):
    torch.manual_seed(0)
    model = build_model(presets(preset, n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=16))
    ids = torch.randint(0, 50, (3, 10))
    labels = torch.randint(0, 50, (3, 10))
    labels[1, :4] = -100
    weights = target_weights(labels, "sample")
    ref = sft_loss(model(ids), labels, 0.1, "sample")
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    ours = model(ids, targets=labels, target_weights=weights, label_smoothing=0.1)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_is_close_to_float32():
    x, w, y = _inputs(64, 16, 32, dtype=torch.float32)
    ref = F.cross_entropy(x @ w.t(), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(x, w, y, chunk_size=16)
    gx, gw = torch.autograd.grad(ours, (x, w))
    assert ours.dtype == torch.float32 and gx.dtype == gw.dtype == torch.float32
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w))
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, ref_gx, rtol=5e-2, atol=5e-3)
    torch.testing.assert_close(gw, ref_gw, rtol=5e-2, atol=5e-3)


def test_bad_input_is_named():
    x, w, y = _inputs(4, 3, 5)
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(x, w, y[:3])
    with pytest.raises(ValueError, match="smoothing"):
        linear_cross_entropy(x, w, y, smoothing=1.0)


@pytest.mark.parametrize("grads", [True, False])
def test_custom_op_registration_passes_opcheck(grads):
    """The op's schema, fake kernel (shapes for torch.compile) and registered autograd agree with its eager
    kernel (torch.library.opcheck)."""
    from tinylm.nn.linear_cross_entropy import fused_linear_cross_entropy

    x, w = torch.randn(70, 8, requires_grad=grads), torch.randn(30, 8, requires_grad=grads)
    y = torch.randint(0, 30, (70,))
    y[::7] = -100
    weights = torch.full((70,), 1 / 60)
    torch.library.opcheck(fused_linear_cross_entropy, (x, w, y, weights, 0.1, 16, torch.float32, grads))
