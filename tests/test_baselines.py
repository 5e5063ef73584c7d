"""The bag-of-words logistic-regression baseline: features against a brute-force count, the fit against the
optimality condition of its strictly convex objective (gradient zero), and its behaviour on toy texts."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.evaluation.baselines import (
    L2_GRID,
    build_vocab,
    featurize,
    fit_bow_classifier,
    fit_logreg,
    loss_and_grad,
    objective,
    words,
)

WORDS = ["love", "war", "king", "sweet", "blood", "o'er", "jest"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS + ["Love", "WAR", "zzz"]), max_size=12), min_size=1, max_size=6))
def test_features_are_normalized_log_counts(docs):
    texts = [" ".join(d) + "!" for d in docs]
    vocab = {w: i for i, w in enumerate(WORDS)}
    x = featurize(texts, vocab).to_dense()
    for i, d in enumerate(docs):
        raw = [math.log1p(sum(t.lower() == w for t in d)) for w in WORDS]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        assert x[i].tolist() == pytest.approx([v / norm for v in raw])


def test_words_and_vocab():
    assert words("O'er the KING's crown, sweet-love!") == ["o'er", "the", "king's", "crown", "sweet", "love"]
    assert build_vocab(["a b b", "b c", "c d"], min_count=2) == {"b": 0, "c": 1}


def test_min_count_counts_texts_not_occurrences():
    # a document frequency: "a" three times in one text is in one text, "b" once in each of two is in two
    assert build_vocab(["a a a", "b", "c b"], min_count=2) == {"b": 0}
    assert build_vocab(["a a a", "b", "c b"], min_count=1) == {"a": 0, "b": 1, "c": 2}


@pytest.mark.parametrize("l2", [1e-1, 1e-3])
def test_fit_is_the_minimum(l2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 9, generator=g, dtype=torch.float64)
    x = (x * (x > 0.5)).to_sparse()
    y = torch.randint(0, 3, (60,), generator=g)
    w, b = fit_logreg(x, y, 3, l2)
    w.requires_grad_(True), b.requires_grad_(True)
    gw, gb = torch.autograd.grad(objective(w, b, x, y, l2), (w, b))
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_logreg(x, y, 3, 0.0)


def test_classifier_learns_a_separable_toy_task():
    train = ["sweet love jest"] * 5 + ["war blood king"] * 5 + ["love jest", "king war"]
    labels = [0] * 5 + [1] * 5 + [0, 1]
    clf = fit_bow_classifier(train, labels, ["jest sweet", "blood war"], [0, 1], num_labels=2)
    assert clf.predict(["a sweet jest", "the king's blood", "war war"]) == [0, 1, 1]
    assert clf.l2 == max(L2_GRID)  # every grid value separates it: ties pick the strongest penalty
    with pytest.raises(ValueError, match="empty split"):
        fit_bow_classifier([], [], ["x"], [0], num_labels=2)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1e-1, 1e-4]))
def test_closed_form_gradient_is_autograds(seed, l2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(30, 7, generator=g, dtype=torch.float64)
    x = (x * (x > 0.6)).to_sparse().coalesce()
    y = torch.randint(0, 4, (30,), generator=g)
    w = torch.randn(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    loss = objective(w, b, x, y, l2)
    gw, gb = torch.autograd.grad(loss, (w, b))
    ours, gwt, gb2 = loss_and_grad(w.detach().T.contiguous(), b.detach(), x.to_sparse_csr(),
                                   x.t().coalesce().to_sparse_csr(), y, l2)
    assert ours.item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(gwt.T, gw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb2, gb, rtol=1e-10, atol=1e-12)


def test_warm_start_reaches_the_same_minimum():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(80, 12, generator=g, dtype=torch.float64)
    x = (x * (x > 0.5)).to_sparse()
    y = torch.randint(0, 3, (80,), generator=g)
    cold = fit_logreg(x, y, 3, 1e-3)
    warm = fit_logreg(x, y, 3, 1e-3, init=fit_logreg(x, y, 3, 1e-1))
    torch.testing.assert_close(warm, cold, rtol=0, atol=1e-4)


def test_the_path_walks_the_whole_grid(monkeypatch):
    """Validation accuracy rises, ties, falls, then rises past its first peak: the whole grid is walked
    (stopping at the first fall would miss the best penalty), a tie keeps the stronger penalty."""
    import tinylm.evaluation.baselines as bl

    grid = sorted(L2_GRID, reverse=True)
    seen, accs = [], iter([0.2, 0.5, 0.5, 0.4, 0.9, 0.9] + [0.1] * (len(grid) - 6))
    real = bl.fit_logreg

    def spy(x, y, num_labels, l2, **kw):
        seen.append(l2)
        return real(x, y, num_labels, l2, **kw)

    monkeypatch.setattr(bl, "fit_logreg", spy)
    monkeypatch.setattr(bl, "accuracy", lambda *_: next(accs))
    clf = bl.fit_bow_classifier(["a b", "b c"], [0, 1], ["a b"], [0], num_labels=2)
    assert seen == grid and clf.l2 == grid[4]
