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
