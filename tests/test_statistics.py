"""tinylm.evaluation.statistics against independent references: approximate randomization against the exact
permutation test (every one of the 2^n swaps, on means and on sacrebleu's corpus chrF recomputed from the
swapped texts), corpus scores from summed statistics against sacrebleu on random subsets, bootstrap coverage
and the test's false-positive rate on simulated data, the exact two-group test against all permutations;
hypothesis properties (p in (0, 1], intervals hold the estimate, symmetry under swapping, seeds); the cluster
versions (groups=) against the per-item ones with one item per cluster, all 3^3 cluster draws, scipy's exact
paired permutation test and sacrebleu on every swap of whole clusters; degenerate outputs; errors."""

import itertools
import math
import random

import numpy as np
import pytest
import sacrebleu
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import BLEU, CHRF

from tinylm.evaluation.statistics import (
    bootstrap_ci,
    corpus_stats,
    degenerate,
    degenerate_rates,
    paired_test,
    permutation_test,
)

WORDS = "the king queen love death night day lord sweet fair my good what is".split()


def sentences(rng: random.Random, n: int, max_words: int = 12) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, max_words))) for _ in range(n)]


def close_p(p_approx: float, p_exact: float, resamples: int) -> bool:
    """Within 4 standard errors of a Monte Carlo estimate of p_exact (+ the (1 + #) / (R + 1) offset)."""
    return abs(p_approx - p_exact) <= 4 * math.sqrt(p_exact * (1 - p_exact) / resamples) + 2 / resamples


@pytest.mark.parametrize("kind", ["binary", "float"])
@pytest.mark.parametrize("seed", range(4))
def test_randomization_matches_the_exact_sign_flip_test_on_means(kind, seed):
    rng = np.random.default_rng(seed)
    n = 10
    a, b = (rng.random(n) < 0.5, rng.random(n) < 0.3) if kind == "binary" else (rng.normal(0.5, 1, n),
                                                                                 rng.normal(0, 1, n))
    d = a.astype(float) - b.astype(float)
    flips = np.array(list(itertools.product([1, -1], repeat=n)))
    exact = np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)
    out = paired_test(a, b, resamples=20_000, seed=seed)
    assert out["diff"] == pytest.approx(d.mean())
    assert close_p(out["p_value"], exact, 20_000), (out["p_value"], exact)


def test_randomization_matches_the_exact_test_on_corpus_chrf():
    """The reference swaps the texts themselves and asks sacrebleu for both corpus scores each time."""
    rng = random.Random(0)
    n = 7
    refs, hyp_a, hyp_b = sentences(rng, n), sentences(rng, n), sentences(rng, n)
    observed = sacrebleu.corpus_chrf(hyp_a, [refs]).score - sacrebleu.corpus_chrf(hyp_b, [refs]).score
    hits = 0
    for swap in itertools.product([False, True], repeat=n):
        a = [y if s else x for x, y, s in zip(hyp_a, hyp_b, swap, strict=True)]
        b = [x if s else y for x, y, s in zip(hyp_a, hyp_b, swap, strict=True)]
        d = sacrebleu.corpus_chrf(a, [refs]).score - sacrebleu.corpus_chrf(b, [refs]).score
        hits += abs(d) >= abs(observed) - 1e-9
    exact = hits / 2 ** n
    sa, score = corpus_stats(CHRF(), hyp_a, refs)
    sb, _ = corpus_stats(CHRF(), hyp_b, refs)
    out = paired_test(sa, sb, score, resamples=5000, seed=1)
    assert out["diff"] == pytest.approx(observed, abs=1e-9)
    assert close_p(out["p_value"], exact, 5000), (out["p_value"], exact)


@pytest.mark.parametrize("metric,corpus", [(CHRF(), sacrebleu.corpus_chrf), (BLEU(), sacrebleu.corpus_bleu)])
def test_corpus_score_from_summed_statistics_is_sacrebleus_on_random_subsets(metric, corpus):
    rng = random.Random(1)
    refs = sentences(rng, 40, 20)
    hyps = [" ".join(r.split()[:rng.randint(0, 20)]) if rng.random() < 0.5 else h
            for r, h in zip(refs, sentences(rng, 40, 20), strict=True)]
    s, score = corpus_stats(metric, hyps, refs)
    assert score(s.sum(0)) == corpus(hyps, [refs]).score
    for _ in range(20):  # resamples with repeats, as the bootstrap draws them
        idx = [rng.randrange(40) for _ in range(rng.randint(1, 40))]
        counts = np.bincount(idx, minlength=40).astype(float)
        assert score(counts @ s) == pytest.approx(corpus([hyps[i] for i in idx], [[refs[i] for i in idx]]).score,
                                                  abs=1e-9)


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    for draw, mean in ((lambda: rng.random(60) < 0.3, 0.3), (lambda: rng.exponential(1.0, 60), 1.0)):
        covered = [lo <= mean <= hi for lo, hi in (bootstrap_ci(draw(), resamples=1000, seed=s) for s in range(400))]
        assert 0.90 <= np.mean(covered) <= 0.98


def test_paired_test_rejects_at_about_5_percent_under_the_null_and_finds_a_real_difference():
    rng = np.random.default_rng(1)
    null = [paired_test(rng.random(80) < 0.3, rng.random(80) < 0.3, resamples=500, seed=s)["p_value"]
            for s in range(300)]
    assert 0.01 <= np.mean(np.array(null) < 0.05) <= 0.10
    out = paired_test(rng.normal(0.5, 1, 100), rng.normal(0, 1, 100), seed=0)
    assert out["p_value"] < 0.05 and 0 < out["ci"][0] < out["ci"][1]


def test_permutation_test_equals_the_share_of_all_permutations():
    a, b = [0.31, 0.29, 0.35, 0.30], [0.25, 0.28, 0.27]
    pooled = a + b
    observed = abs(np.mean(a) - np.mean(b))
    perms = list(itertools.permutations(pooled))
    exact = np.mean([abs(np.mean(p[:4]) - np.mean(p[4:])) >= observed - 1e-12 for p in perms])
    out = permutation_test(a, b)
    assert out["exact"] and out["p_value"] == pytest.approx(exact) and out["min_p"] == pytest.approx(1 / 35)
    sampled = permutation_test(a, b, resamples=20, seed=0)  # 35 splits > 20: random splits instead
    assert not sampled["exact"] and sampled["min_p"] is None
    assert permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])["min_p"] == pytest.approx(0.1)  # 3 vs 3 seeds


def test_permutation_test_sampled_agrees_with_exact():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1, 8), rng.normal(0, 1, 8)
    exact = permutation_test(a, b)
    sampled = permutation_test(a, b, resamples=10_000, seed=3)
    assert exact["exact"] and not sampled["exact"]
    assert close_p(sampled["p_value"], exact["p_value"], 10_000)


values = st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(x=values, seed=st.integers(0, 2 ** 32 - 1))
def test_bootstrap_interval_holds_the_mean_and_is_seeded(x, seed):
    lo, hi = bootstrap_ci(x, resamples=300, seed=seed)
    tol = 1e-9 * (1 + max(map(abs, x)))
    assert lo - tol <= np.mean(x) <= hi + tol
    assert bootstrap_ci(x, resamples=300, seed=seed) == [lo, hi]


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(-50, 50, allow_nan=False), st.floats(-50, 50, allow_nan=False)),
                      min_size=1, max_size=25), seed=st.integers(0, 2 ** 32 - 1))
def test_paired_test_properties(pairs, seed):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    out = paired_test(a, b, resamples=300, seed=seed)
    tol = 1e-9 * (1 + max(abs(v) for p in pairs for v in p))
    assert 0 < out["p_value"] <= 1
    assert out["ci"][0] - tol <= out["diff"] <= out["ci"][1] + tol
    back = paired_test(b, a, resamples=300, seed=seed)
    assert back["p_value"] == out["p_value"] and back["diff"] == pytest.approx(-out["diff"], abs=tol)
    assert back["ci"] == pytest.approx([-out["ci"][1], -out["ci"][0]], abs=tol)
    assert paired_test(a, b, resamples=300, seed=seed) == out


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.floats(0, 1), min_size=1, max_size=6), b=st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_permutation_test_properties(a, b):
    out, back = permutation_test(a, b), permutation_test(b, a)
    assert 0 < out["min_p"] <= out["p_value"] <= 1
    assert back["p_value"] == pytest.approx(out["p_value"]) and back["diff"] == pytest.approx(-out["diff"])


@pytest.mark.parametrize("kind", ["binary", "float"])
def test_one_item_per_cluster_is_the_per_item_procedure(kind):
    rng = np.random.default_rng(0)
    a, b = (rng.random(40) < 0.5, rng.random(40) < 0.3) if kind == "binary" else rng.normal(size=(2, 40))
    groups = [f"item {i}" for i in range(40)]  # 2^40 sign flips: random, as per item
    assert bootstrap_ci(a, groups=groups, seed=3) == pytest.approx(bootstrap_ci(a, seed=3), abs=1e-12)
    out, alone = paired_test(a, b, groups=groups, seed=3), paired_test(a, b, seed=3)
    assert out["p_value"] == alone["p_value"]
    assert [out["diff"], *out["ci"]] == pytest.approx([alone["diff"], *alone["ci"]], abs=1e-12)


def test_cluster_bootstrap_against_all_cluster_draws():
    """3 clusters of 1, 2 and 3 items: the 27 equally likely draws of 3 clusters, each the mean of its items;
    the lowest and highest have probability 1/27 > 2.5% each, so they are the 95% interval's ends."""
    x, groups = [0.0, 1.0, 1.0, 5.0, 6.0, 7.0], ["a", "b", "b", "c", "c", "c"]
    members = {g: [v for v, h in zip(x, groups, strict=True) if h == g] for g in "abc"}
    means = [np.mean([v for g in draw for v in members[g]]) for draw in itertools.product("abc", repeat=3)]
    assert bootstrap_ci(x, groups=groups, resamples=20_000) == pytest.approx([min(means), max(means)], abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_exact_cluster_sign_flip_against_scipy(seed):
    """2^6 <= resamples: every swap of whole clusters, as scipy's exact paired permutation test of the cluster
    totals (a mean over all items is the sum of the cluster totals / n)."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 6, 60)
    a, b = (rng.random(60) < 0.6).astype(float), (rng.random(60) < 0.4).astype(float)
    ta, tb = (np.array([x[groups == g].sum() for g in range(6)]) for x in (a, b))
    ref = scipy.stats.permutation_test((ta, tb), lambda x, y, axis: np.sum(x - y, axis=axis), vectorized=True,
                                       permutation_type="samples", n_resamples=np.inf)
    out = paired_test(a, b, groups=groups.tolist(), resamples=1000)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert out["p_value"] == pytest.approx(ref.pvalue)


def test_exact_cluster_sign_flip_on_corpus_chrf_against_swapping_whole_clusters():
    rng = random.Random(2)
    n, groups = 12, [i % 5 for i in range(12)]
    refs, hyp_a, hyp_b = sentences(rng, n), sentences(rng, n), sentences(rng, n)
    observed = sacrebleu.corpus_chrf(hyp_a, [refs]).score - sacrebleu.corpus_chrf(hyp_b, [refs]).score
    hits = 0
    for swap in itertools.product([False, True], repeat=5):
        a = [y if swap[g] else x for x, y, g in zip(hyp_a, hyp_b, groups, strict=True)]
        b = [x if swap[g] else y for x, y, g in zip(hyp_a, hyp_b, groups, strict=True)]
        hits += abs(sacrebleu.corpus_chrf(a, [refs]).score - sacrebleu.corpus_chrf(b, [refs]).score) >= abs(
            observed) - 1e-9
    sa, score = corpus_stats(CHRF(), hyp_a, refs)
    sb, _ = corpus_stats(CHRF(), hyp_b, refs)
    out = paired_test(sa, sb, score, groups=groups, resamples=100)
    assert out["diff"] == pytest.approx(observed, abs=1e-9)
    assert out["p_value"] == pytest.approx(hits / 2 ** 5)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(-50, 50, allow_nan=False), st.integers(0, 7)), min_size=1, max_size=30),
       seed=st.integers(0, 2 ** 32 - 1))
def test_cluster_bootstrap_is_the_bootstrap_of_cluster_totals(rows, seed):
    """A cluster resample is an item resample of (sum of x, number of items) per cluster, scored as a ratio;
    the cluster ids' values do not matter, only which items share one."""
    x, groups = [r[0] for r in rows], [r[1] for r in rows]
    order = list(dict.fromkeys(groups))
    totals = [[sum(v for v, g in rows if g == h), groups.count(h)] for h in order]
    ratio = lambda s: s[..., 0] / s[..., 1]  # noqa: E731
    out = bootstrap_ci(x, groups=groups, resamples=200, seed=seed)
    tol = 1e-9 * (1 + max(map(abs, x)))
    assert out == pytest.approx(bootstrap_ci(totals, ratio, resamples=200, seed=seed), abs=tol)
    assert bootstrap_ci(x, groups=[f"play {g}" for g in groups], resamples=200, seed=seed) == out
    assert out[0] - tol <= np.mean(x) <= out[1] + tol
    test = paired_test(x, x[::-1], groups=groups, resamples=200, seed=seed)
    assert max(2 / 2 ** len(order), 1 / 201) - 1e-12 <= test["p_value"] <= 1


def test_randomization_p_value_counts_the_observed_split_and_is_never_zero():
    """p = (1 + #{|d_r| >= |d|}) / (R + 1): when no random swap is as extreme as the observed one, p = 1 / (R + 1)."""
    assert paired_test([1.0] * 40, [0.0] * 40, resamples=500)["p_value"] == 1 / 501


def test_identical_systems_are_not_different():
    x = np.random.default_rng(0).random(50)
    assert paired_test(x, x) == {"diff": 0.0, "ci": [0.0, 0.0], "p_value": 1.0}


@pytest.mark.parametrize("ids,kind", [
    ([], "empty"), ([7], "one_token"), ([5, 5, 5], "repetition"), ([1, 2, 1, 2, 1, 2], "repetition"),
    ([9, 8, 3, 4, 5, 3, 4, 5, 3, 4, 5], "repetition"),  # a 3-gram 3 times over 9 of 11 tokens
    ([1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 5, 6, 5, 6], None),  # a 2-gram 3 times over 6 of 14 tokens: under half
    ([1, 2], None), ([4, 4], None), ([1, 2, 3, 1, 2, 3], None),  # 2 copies are not a loop
])
def test_degenerate_examples(ids, kind):
    assert degenerate(ids) == kind


@settings(max_examples=80, deadline=None)
@given(gram=st.lists(st.integers(0, 50), min_size=1, max_size=8), copies=st.integers(3, 8),
       head=st.lists(st.integers(51, 99), max_size=8))
def test_a_repeated_ngram_filling_the_output_is_degenerate(gram, copies, head):
    assume(len(head) <= len(gram) * copies)  # the repeats are at least half of the output
    assert degenerate(head + gram * copies) == "repetition"


@given(ids=st.lists(st.integers(0, 10_000), min_size=2, max_size=48, unique=True))
def test_distinct_tokens_are_not_degenerate(ids):
    assert degenerate(ids) is None


def test_degenerate_rates():
    assert degenerate_rates([[1], [], [3, 3, 3], [1, 2], [4]]) == {"empty": 0.2, "one_token": 0.4, "repetition": 0.2}


def test_errors():
    with pytest.raises(ValueError, match="same items"):
        paired_test([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="non-empty 1-d"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"\(n > 0, k\)"):
        bootstrap_ci([1.0, 2.0], lambda s: s)
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_ci([1.0], level=95)
    with pytest.raises(ValueError, match="resamples must be"):
        paired_test([1.0], [0.0], resamples=0)
    with pytest.raises(ValueError, match="one cluster per item"):
        bootstrap_ci([1.0, 2.0], groups=["a"])
    with pytest.raises(ValueError, match="two non-empty"):
        permutation_test([], [1.0])
    with pytest.raises(ValueError, match="one reference per prediction"):
        corpus_stats(CHRF(), ["a"], [])
    with pytest.raises(ValueError, match="no outputs"):
        degenerate_rates([])
