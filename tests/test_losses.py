"""Losses: label smoothing (torch and the Szegedy formula), SFT masking, MLM, max-z."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.training.losses import label_smoothed_cross_entropy, max_z_loss, mlm_loss, sft_loss, target_weights


def szegedy(logits, targets, eps, ignore_index=-100):
    """H(q, p) with q = (1 - eps) onehot(y) + eps / V, averaged over kept targets, in float64 loops."""
    logp = torch.log_softmax(logits.double().reshape(-1, logits.size(-1)), -1)
    V, total, n = logits.size(-1), 0.0, 0
    for row, y in zip(logp, targets.reshape(-1).tolist(), strict=True):
        if y == ignore_index:
            continue
        q = torch.full((V,), eps / V, dtype=torch.float64)
        q[y] += 1 - eps
        total += -(q * row).sum().item()
        n += 1
    return total / n


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_label_smoothing_matches_torch_and_formula(eps):
    logits = torch.randn(3, 5, 11) * 3
    targets = torch.randint(0, 11, (3, 5))
    targets[0, :2] = -100
    ours = label_smoothed_cross_entropy(logits, targets, eps)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), label_smoothing=eps, ignore_index=-100)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours.item() == pytest.approx(szegedy(logits, targets, eps), rel=1e-5)


def test_label_smoothing_custom_ignore_index():
    logits, targets = torch.randn(6, 7), torch.tensor([0, 3, 3, 6, 3, 1])
    ours = label_smoothed_cross_entropy(logits, targets, 0.2, ignore_index=3)
    assert ours.item() == pytest.approx(szegedy(logits, targets, 0.2, ignore_index=3), rel=1e-5)
    assert ours.item() != pytest.approx(label_smoothed_cross_entropy(logits, targets, 0.2).item(), rel=1e-3)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_label_smoothing_out_of_range(eps):
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), eps)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), v=st.integers(2, 20), eps=st.floats(0.0, 0.95), seed=st.integers(0, 2**16),
       n_ignored=st.integers(0, 11))
def test_label_smoothing_property(n, v, eps, seed, n_ignored):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * 4
    targets = torch.randint(0, v, (n,), generator=g)
    targets[: min(n_ignored, n - 1)] = -100  # at least one kept target
    ours = label_smoothed_cross_entropy(logits, targets, eps)
    ref = F.cross_entropy(logits, targets, label_smoothing=eps)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.item() == pytest.approx(szegedy(logits, targets, eps), rel=1e-4, abs=1e-5)


def test_sft_loss_counts_only_response_tokens():
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[-100, -100, 2, 5], [-100, 1, -100, -100]])
    logp = torch.log_softmax(logits, -1)
    expected = -(logp[0, 2, 2] + logp[0, 3, 5] + logp[1, 1, 1]) / 3
    torch.testing.assert_close(sft_loss(logits, labels), expected)
    changed = logits.clone()
    changed[0, :2] = torch.randn(2, 6) * 10  # prompt positions
    changed[1, 2:] = torch.randn(2, 6) * 10  # padding positions
    torch.testing.assert_close(sft_loss(changed, labels), expected)
    changed[0, 3] += torch.randn(6)
    assert sft_loss(changed, labels).item() != pytest.approx(expected.item(), rel=1e-4)


def test_sft_loss_smoothing_and_all_ignored_batch():
    logits, labels = torch.randn(1, 3, 5), torch.tensor([[-100, 4, 0]])
    smoothed = sft_loss(logits, labels, smoothing=0.1)
    assert smoothed.item() == pytest.approx(szegedy(logits, labels, 0.1), rel=1e-5)
    with pytest.raises(ValueError, match="no response tokens"):
        sft_loss(logits, torch.full((1, 3), -100))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sft_loss_sample_average_weighs_every_sample_once(eps):
    logits = torch.randn(3, 4, 6)
    labels = torch.tensor([[-100, -100, 2, 5], [-100, 1, -100, -100], [-100, -100, -100, -100]])
    per_sample = [szegedy(logits[0:1], labels[0:1], eps), szegedy(logits[1:2], labels[1:2], eps)]  # row 3: none
    expected = sum(per_sample) / 2
    assert sft_loss(logits, labels, eps, average="sample").item() == pytest.approx(expected, rel=1e-5)
    assert sft_loss(logits, labels, eps, average="token").item() != pytest.approx(expected, rel=1e-3)
    full = torch.randint(0, 6, (3, 4))  # every position labelled (pretraining rows): both averages agree
    torch.testing.assert_close(sft_loss(logits, full, eps, "sample"), sft_loss(logits, full, eps, "token"))
    with pytest.raises(ValueError, match="average must be 'token' or 'sample'"):
        sft_loss(logits, labels, average="batch")


def test_mlm_loss_only_masked_positions():
    logits = torch.randn(2, 5, 9)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 4] = 3, 8
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(mlm_loss(logits, labels), -(logp[0, 1, 3] + logp[1, 4, 8]) / 2)


def test_max_z_loss():
    logits = torch.randn(2, 3, 7) * 5
    zmax = logits.max(-1).values  # (B, T)
    torch.testing.assert_close(max_z_loss(logits, 2e-4), 2e-4 * (zmax**2).mean())
    labels = torch.tensor([[4, 5, -100], [-100, 6, -100]])
    by_token = 2e-4 * (zmax[0, 0] ** 2 + zmax[0, 1] ** 2 + zmax[1, 1] ** 2) / 3
    torch.testing.assert_close(max_z_loss(logits, 2e-4, target_weights(labels, "token")), by_token)
    by_sample = 2e-4 * ((zmax[0, 0] ** 2 + zmax[0, 1] ** 2) / 2 + zmax[1, 1] ** 2) / 2
    torch.testing.assert_close(max_z_loss(logits, 2e-4, target_weights(labels, "sample")), by_sample)
    step = 2e-4 * (zmax[0, 0] ** 2 + zmax[0, 1] ** 2 + zmax[1, 1] ** 2) / 6  # the step's mean: 6 per micro-batch
    torch.testing.assert_close(max_z_loss(logits, 2e-4, target_weights(labels, "token", torch.tensor(6.0))), step)
    assert max_z_loss(logits, 2e-4, torch.zeros(2, 3)).item() == 0.0
    assert max_z_loss(logits.bfloat16(), 1.0).dtype == torch.float32


@pytest.mark.parametrize("average", ["token", "sample"])
def test_target_weights_of_a_batch_without_targets_are_nan(average):
    """0 / 0 on purpose: the non-finite loss stops training instead of a silent zero-gradient step."""
    assert target_weights(torch.full((2, 3), -100), average).isnan().all()
