"""tinylm.nn.pooling against a loop over each item's real tokens alone."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.nn.pooling import pool


@st.composite
def padded(draw):
    """Hidden states (B, T, C) and a mask whose real tokens sit in one run per item, padded on either side."""
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 7))
    h = torch.randn(b, t, 3, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    mask = torch.zeros(b, t, dtype=torch.long)
    for i in range(b):
        n = draw(st.integers(1, t))
        start = draw(st.sampled_from([0, t - n]))  # right- or left-padded
        mask[i, start:start + n] = 1
    return h, mask


@settings(max_examples=60, deadline=None)
@given(padded())
def test_mean_and_last_see_each_items_real_tokens_only(case):
    h, mask = case
    real = [h[i][mask[i].bool()] for i in range(h.size(0))]  # (n_i, C) each
    torch.testing.assert_close(pool(h, mask, "mean"), torch.stack([r.mean(0) for r in real]))
    assert torch.equal(pool(h, mask, "last"), torch.stack([r[-1] for r in real]))
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])


def test_no_mask_means_every_token_is_real_and_unknown_poolings_are_refused():
    h = torch.randn(2, 5, 3)
    torch.testing.assert_close(pool(h, None, "mean"), h.mean(1))
    assert torch.equal(pool(h, None, "last"), h[:, -1])
    with pytest.raises(ValueError, match=r"pooling must be one of \('cls', 'mean', 'last'\), got 'max'"):
        pool(h, None, "max")
