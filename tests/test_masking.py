"""BERT masked-LM corruption: rate, 80/10/10 split, specials, labels, determinism (data/masking.py)."""

import pytest
import torch

from tinylm.data.masking import mask_tokens

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = torch.tensor([PAD, CLS, SEP, MASK])
V = 50


def batch(B=64, T=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, T), generator=g)
    ids[:, 0], ids[:, T // 5], ids[:, T // 2] = CLS, SEP, SEP
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    attn = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids[attn == 0] = PAD
    return ids, attn


def corrupt(ids, attn, seed=1, rate=0.15):
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(ids, mask_token_id=MASK, special_ids=SPECIALS, vocab_size=V, rate=rate, generator=g,
                       attention_mask=attn)


def test_masking_statistics():
    ids, attn = batch()
    out, labels = corrupt(ids, attn)
    eligible = ~torch.isin(ids, SPECIALS) & attn.bool()
    chosen = labels != -100
    assert not (chosen & ~eligible).any()  # specials and padding are never chosen
    assert chosen.sum() / eligible.sum() == pytest.approx(0.15, abs=0.005)  # ~24k eligible: sd 0.0023
    # labels: the original id at chosen positions, -100 elsewhere; unchosen positions untouched
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(out[~chosen], ids[~chosen])
    n = chosen.sum().item()  # ~3.6k: sd of a 10% share 0.005
    masked = (out == MASK) & chosen
    kept = (out == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.025)
    assert kept.sum().item() / n == pytest.approx(0.1 + 0.1 / (V - 4), abs=0.02)  # random draw may hit itself
    assert replaced.sum().item() / n == pytest.approx(0.1 * (1 - 1 / (V - 4)), abs=0.02)
    # random replacements: any non-special id, never a special one
    random_ids = out[replaced]
    assert not torch.isin(random_ids, SPECIALS).any()
    assert set(random_ids.tolist()) == set(range(4, V))
    # [MASK] appears only where a token was chosen
    assert torch.equal(out == MASK, masked)


def test_without_attention_mask_only_specials_are_excluded():
    ids, _ = batch(B=8, T=256)
    out, labels = mask_tokens(ids, mask_token_id=MASK, special_ids=SPECIALS, vocab_size=V,
                              generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not torch.isin(ids[chosen], SPECIALS).any()
    assert chosen.sum() > 0


def test_the_attention_mask_excludes_positions_whatever_their_token():
    """Padding under a non-special id: only the attention mask keeps it out (with PAD there, the specials
    rule alone would)."""
    ids, attn = batch(B=16, T=256)
    ids[attn == 0] = 7
    _, labels = corrupt(ids, attn)
    assert not ((labels != -100) & (attn == 0)).any()
    _, unmasked = corrupt(ids, None)
    assert ((unmasked != -100) & (attn == 0)).any()


def test_rate_is_respected():
    ids, attn = batch(B=32, T=256)
    _, labels = corrupt(ids, attn, rate=0.5)
    eligible = ~torch.isin(ids, SPECIALS) & attn.bool()
    assert (labels != -100).sum() / eligible.sum() == pytest.approx(0.5, abs=0.02)


def test_seeded_generator_is_deterministic():
    ids, attn = batch(B=4, T=64)
    a, b, c = corrupt(ids, attn, seed=7), corrupt(ids, attn, seed=7), corrupt(ids, attn, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(ids, batch(B=4, T=64)[0])  # the input is not modified in place


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_bad_rate_raises(rate):
    ids, attn = batch(B=2, T=8)
    with pytest.raises(ValueError, match="mask rate"):
        corrupt(ids, attn, rate=rate)
