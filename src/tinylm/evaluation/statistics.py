"""Statistics over test items and seeds: bootstrap intervals, paired tests of two systems on the same items, a
permutation test between two groups of runs, and degenerate outputs. numpy only; every procedure is seeded.

A score is a function of per-item statistics summed over the items. The items' statistics are an (n, k)
array S, one row per item, and `score` maps summed rows (..., k) to scores (...):
- a mean of per-item values x_i (exact match 0/1, log-probability, length): k = 1, score(s) = s / n;
- corpus chrF and BLEU: S holds sacrebleu's per-sentence n-gram counts and score is sacrebleu's own score of
  their sum (`corpus_stats`), which is exactly how sacrebleu scores a corpus.
Resampling items only changes how often each row counts, so a resample's score is score(c @ S) for a count
vector c: exact (integer counts stay integers in float64) and one matrix product for all resamples.

- `bootstrap_ci`: percentile bootstrap (Efron & Tibshirani 1993, ch. 13). R resamples of n items drawn with
  replacement, theta*_r = score(c_r @ S); the interval is the (1 - level) / 2 and (1 + level) / 2 quantiles
  of theta*_1..R.
- `paired_test`: systems A and B scored on the same n items, d = score(sum S_A) - score(sum S_B).
  The interval is the paired bootstrap's (Koehn 2004): the same resampled items for both,
  d*_r = score(c_r @ S_A) - score(c_r @ S_B). The p-value is approximate randomization's (Noreen 1989;
  Riezler & Maxwell 2005): under H0 "A and B are exchangeable on each item" each item's pair of rows is
  swapped with probability 1/2; with f_r in {0, 1}^n, D = S_B - S_A,
      d_r = score(sum S_A + f_r @ D) - score(sum S_B - f_r @ D),
      p = (1 + #{r : |d_r| >= |d|}) / (R + 1)          (two-sided; never 0: Davison & Hinkley 1997, 4.2).
  For a mean this approximates the exact sign-flip permutation test of the differences a_i - b_i.
- Clustered items (`groups=`: one hashable cluster id per item, e.g. the play a passage comes from): items of
  one cluster are not independent, so both procedures resample clusters instead (Davison & Hinkley 1997,
  3.8; Field & Welsh 2007). With G clusters and T = the (G, k) per-cluster sums of S's rows, the bootstrap
  draws G clusters with replacement, theta*_r = score(c_r @ T) (every item counted as often as its cluster
  is drawn), and the randomization test swaps A and B per cluster: d_r = score(sum S_A + f_r @ D_T) -
  score(sum S_B - f_r @ D_T), f_r in {0, 1}^G; exact, p = #{f : |d_f| >= |d|} / 2^G over all 2^G swaps,
  when 2^G <= resamples (the floor of p is then 2 / 2^G), else as above. A mean is then the mean of the
  items drawn (sum c_i x_i / sum c_i: clusters differ in size). One item per cluster, in the items' order, is
  the per-item procedure with the same draws (when 2^G > resamples; else its p is the exact one).
- `permutation_test`: two independent groups (a metric over the seeds of config A and of config B),
  d = mean(a) - mean(b); p = share of the C(n_a + n_b, n_a) splits of the pooled values into groups of
  those sizes with |d_split| >= |d|: exact by enumeration when there are at most `resamples` splits, else
  (1 + #) / (R + 1) over R random splits. With few runs p has a floor (`min_p`, e.g. 0.1 for 3 vs 3 seeds).
- `degenerate`: an empty answer, a one-token answer, or repetition: one n-gram (n <= 8) repeated back to
  back at least 3 times, the repeating stretch (a partial last copy included) at least half of the output.
"""

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
Score = Callable[[np.ndarray], np.ndarray]  # summed statistics (..., k) -> score (...)
DEGENERATE = ("empty", "one_token", "repetition")
MAX_NGRAM, MIN_REPEATS, MIN_COVER = 8, 3, 0.5


def _stats(x, score: Score | None, grouped: bool = False) -> tuple[np.ndarray, Score]:
    """(S, score): per-item values x with score None mean their mean (grouped: S = [x, 1], score the mean of
    the items a resample counts); else x is S, (n, k)."""
    s = np.asarray(x, dtype=np.float64)
    if score is None:
        if s.ndim != 1 or not len(s):
            raise ValueError(f"per-item values must be a non-empty 1-d sequence, got shape {s.shape}")
        if grouped:
            return np.stack([s, np.ones_like(s)], 1), lambda sums: sums[..., 0] / sums[..., 1]
        n = len(s)
        return s[:, None], lambda sums: sums[..., 0] / n
    if s.ndim != 2 or not len(s):
        raise ValueError(f"per-item statistics with a score function must be (n > 0, k), got shape {s.shape}")
    return s, score


def _cluster_sums(s: np.ndarray, groups: Sequence | None) -> np.ndarray:
    """(G, k): the sums of s's rows per cluster, clusters in order of first appearance (s itself without
    groups)."""
    if groups is None:
        return s
    if len(groups) != len(s):
        raise ValueError(f"groups must name one cluster per item: {len(groups)} groups for {len(s)} items")
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    sums = np.zeros((len(index), s.shape[1]))
    np.add.at(sums, [index[g] for g in groups], s)
    return sums


def _check(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how often each item is drawn in each bootstrap resample of n draws with replacement."""
    draws = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _interval(theta: np.ndarray, level: float) -> list[float]:
    return [float(q) for q in np.quantile(theta, [(1 - level) / 2, (1 + level) / 2])]


def bootstrap_ci(x, score: Score | None = None, *, groups: Sequence | None = None, level: float = 0.95,
                 resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """[lo, hi]: percentile bootstrap interval of the mean of x, or of score(sum of the rows of x); with groups
    (one cluster id per item) the clusters are resampled (see the module docstring)."""
    s, f = _stats(x, score, groups is not None)
    _check(level, resamples)
    t = _cluster_sums(s, groups)
    return _interval(f(_counts(np.random.default_rng(seed), len(t), resamples) @ t), level)


def paired_test(a, b, score: Score | None = None, *, groups: Sequence | None = None, level: float = 0.95,
                resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """{"diff": d, "ci": [lo, hi], "p_value": p} for A - B on the same items, in the same order: paired
    bootstrap interval, approximate randomization p-value (two-sided); with groups (one cluster id per item)
    both resample clusters, and p is exact when there are few (see the module docstring)."""
    sa, f = _stats(a, score, groups is not None)
    sb, _ = _stats(b, score, groups is not None)
    if sa.shape != sb.shape:
        raise ValueError(f"paired systems need the same items: shapes {sa.shape} and {sb.shape}")
    _check(level, resamples)
    ta, tb = _cluster_sums(sa, groups), _cluster_sums(sb, groups)
    rng = np.random.default_rng(seed)
    c = _counts(rng, len(ta), resamples)
    diff = float(f(sa.sum(0)) - f(sb.sum(0)))
    exact = groups is not None and 2 ** len(ta) <= resamples
    flips = (np.array(list(itertools.product([0.0, 1.0], repeat=len(ta)))) if exact
             else rng.integers(0, 2, (resamples, len(ta))).astype(np.float64))
    moved = flips @ (tb - ta)
    swapped = f(sa.sum(0) + moved) - f(sb.sum(0) - moved)
    extreme = int(np.sum(np.abs(swapped) >= abs(diff) * (1 - 1e-9)))
    p = extreme / len(flips) if exact else (1 + extreme) / (resamples + 1)
    return {"diff": diff, "ci": _interval(f(c @ ta) - f(c @ tb), level), "p_value": p}


def permutation_test(a: Sequence[float], b: Sequence[float], *, resamples: int = 20_000, seed: int = 0) -> dict:
    """{"diff": mean(a) - mean(b), "p_value": p, "exact": bool, "min_p": floor of p for these values} for two
    independent groups (see the module docstring); min_p is given for the exact test, else None."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError(f"two non-empty 1-d groups needed, got shapes {a.shape} and {b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    pooled, n = np.concatenate([a, b]), len(a)
    diff = float(a.mean() - b.mean())
    exact = math.comb(len(pooled), n) <= resamples
    if exact:
        groups = np.zeros((math.comb(len(pooled), n), len(pooled)), dtype=bool)
        for row, chosen in zip(groups, itertools.combinations(range(len(pooled)), n), strict=True):
            row[list(chosen)] = True
    else:
        rng = np.random.default_rng(seed)
        groups = np.argsort(rng.random((resamples, len(pooled))), axis=1) < n
    d = np.abs(groups @ pooled / n - ~groups @ pooled / (len(pooled) - n))
    hits = int(np.sum(d >= abs(diff) * (1 - 1e-9)))
    if exact:
        return {"diff": diff, "p_value": hits / len(d), "exact": True,
                "min_p": float(np.mean(d >= d.max() * (1 - 1e-9)))}
    return {"diff": diff, "p_value": (1 + hits) / (resamples + 1), "exact": False, "min_p": None}


def corpus_stats(metric, preds: list[str], refs: list[str]) -> tuple[np.ndarray, Score]:
    """(S, score) of a sacrebleu corpus metric (`sacrebleu.metrics.CHRF()` or `BLEU()`, one reference per item):
    S's rows are the per-sentence statistics sacrebleu sums for a corpus (chrF: hypothesis, reference and
    matching n-gram counts per character and word order; BLEU: hypothesis and reference lengths, matching and
    total n-grams per order), and score(S.sum(0)) == metric.corpus_score(preds, [refs]).score. sacrebleu's
    own significance tests resample these same statistics (its private `_extract_corpus_statistics` and
    `_compute_score_from_stats`, used here)."""
    if len(preds) != len(refs) or not preds:
        raise ValueError(f"one reference per prediction needed, got {len(preds)} predictions, {len(refs)} references")
    s = np.asarray(metric._extract_corpus_statistics(preds, [refs]), dtype=np.float64)

    def score(sums: np.ndarray) -> np.ndarray:
        rows = np.rint(sums).astype(np.int64).reshape(-1, sums.shape[-1])
        return np.array([metric._compute_score_from_stats(r.tolist()).score for r in rows]).reshape(sums.shape[:-1])

    return s, score


def degenerate(ids: Sequence[int]) -> str | None:
    """"empty", "one_token", "repetition" (see the module docstring) or None for a generated answer's ids."""
    if len(ids) <= 1:
        return ("empty", "one_token")[len(ids)]
    for n in range(1, min(MAX_NGRAM, len(ids) // MIN_REPEATS) + 1):
        run = longest = 0  # positions i with ids[i] == ids[i - n], consecutive: a run of r covers r + n tokens
        for i in range(n, len(ids)):
            run = run + 1 if ids[i] == ids[i - n] else 0
            longest = max(longest, run)
        if longest >= (MIN_REPEATS - 1) * n and longest + n >= MIN_COVER * len(ids):
            return "repetition"
    return None


def degenerate_rates(outputs: Sequence[Sequence[int]]) -> dict[str, float]:
    """Share of outputs of each degenerate kind: {"empty": ..., "one_token": ..., "repetition": ...}."""
    if not outputs:
        raise ValueError("no outputs")
    kinds = [degenerate(ids) for ids in outputs]
    return {k: kinds.count(k) / len(kinds) for k in DEGENERATE}
