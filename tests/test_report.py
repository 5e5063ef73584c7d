"""report.md from metrics shaped as the evaluate stage writes them (statistics computed on synthetic per-item
scores): intervals in the table, significance stated in words, the resampled unit (plays and their count, or
items), degenerate outputs flagged against the references, the genre tests and near-constant genre predictors
flagged; the plot data carries the intervals and the charts draw them."""

import numpy as np

from tinylm.evaluation import report
from tinylm.evaluation.statistics import bootstrap_ci, degenerate_rates, paired_test


def decoder_metrics(correct: np.ndarray, logprobs: np.ndarray, outputs: list[list[int]]) -> dict:
    return {"exact_match": correct.mean(), "exact_match_ci": bootstrap_ci(correct),
            "mean_logprob": logprobs.mean(), "mean_logprob_ci": bootstrap_ci(logprobs),
            "mean_length": 1.0, "mean_length_ci": [1.0, 1.0],
            "degenerate": degenerate_rates(outputs)}


def synthetic_metrics() -> dict:
    rng = np.random.default_rng(0)
    greedy = (rng.random(100) < 0.1).astype(float)
    beam2, sample = greedy.copy(), np.zeros(100)
    beam2[np.argmin(greedy)] = 1  # one more item right: not a significant difference
    lp = {d: rng.normal(m, 1, 100) for d, m in (("greedy", -5), ("beam2", -3), ("sample", -5))}
    correct = {"greedy": greedy, "beam2": beam2, "sample": sample}
    majority = np.zeros(100)
    names = [[1, 2, 3]] * 100
    outputs = {"greedy": names, "beam2": [[1]] * 90 + names[:10], "sample": names}
    tasks = {"speaker": {d: decoder_metrics(correct[d], lp[d], outputs[d]) for d in correct}}
    paired = {"speaker": {
        **{f"{d}_vs_greedy": {"exact_match": paired_test(correct[d], greedy), "mean_logprob": paired_test(lp[d],
                                                                                                       lp["greedy"])}
           for d in ("beam2", "sample")},
        **{f"{d}_vs_majority": {"exact_match": paired_test(correct[d], majority)} for d in correct}}}
    cls, cls_majority = (rng.random(80) < 0.9).astype(float), (rng.random(80) < 0.3).astype(float)
    return {"decoder-sft": {"tasks": tasks, "beam_vs_greedy": {"beam2": {"higher": 0.5, "lower": 0.1, "same": 0.4}},
                            "paired": paired},
            "majority_baseline": {"speaker": 0.0, "speaker_ci": [0.0, 0.0]},
            "reference_degenerate": {"speaker": degenerate_rates(names)},
            "encoder": {"mlm_acc": 0.2},
            "genre": {"classifier_acc": cls.mean(), "classifier_acc_ci": bootstrap_ci(cls),
                      "decoder_acc": 0.3, "decoder_acc_ci": [0.2, 0.4],
                      "majority_acc": cls_majority.mean(), "majority_acc_ci": bootstrap_ci(cls_majority),
                      "bow_acc": 0.5, "bow_acc_ci": [0.4, 0.6], "bow_l2": 0.001,
                      "paired": {"classifier_vs_majority": paired_test(cls, cls_majority),
                                 "classifier_vs_bow": paired_test(cls, cls),
                                 "decoder_vs_majority": paired_test(cls_majority, cls_majority),
                                 "classifier_vs_decoder": paired_test(cls, cls_majority)}},
            "perplexity": {"decoder": 100.0}}


def test_report_states_significance_intervals_and_degenerate_outputs(tmp_path):
    metrics = synthetic_metrics()
    table = report.rows(metrics, ["decoder-sft"])
    md = report.markdown(metrics, table, [], ["greedy", "beam2", "sample"])
    lo, hi = metrics["decoder-sft"]["tasks"]["speaker"]["greedy"]["exact_match_ci"]
    assert f"| decoder-sft | speaker | greedy | {table[0]['score']:.3f} [{lo:.3f}, {hi:.3f}] (exact_match) |" in md
    lines = md.splitlines()
    logprob = next(x for x in lines if x.startswith("- decoder-sft / speaker, mean log-prob against greedy"))
    assert "significant: beam2 +" in logprob and "Not significant: sample" in logprob
    em = next(x for x in lines if x.startswith("- decoder-sft / speaker, exact match against greedy"))
    assert "significant: sample -" in em and "Not significant: beam2 +0.010" in em
    vs_majority = next(x for x in lines if x.startswith("- decoder-sft / speaker, exact match against the majority"))
    assert "significant: greedy" in vs_majority and "sample +0.000 [+0.000, +0.000], p = 1" in vs_majority
    assert "| decoder-sft | speaker | beam2 | 0.00 | **0.90 !** | 0.00 |" in md
    assert "Flagged: decoder-sft / speaker / beam2: one-token 0.90 (references 0.00)." in md
    assert "- fine-tuned classifier against the majority class: +" in md and "p < 0.001: significant." in md
    assert "- SFT decoder (zero-shot) against the majority class: +0.000" in md and "not significant." in md
    assert "| bag-of-words logistic regression (L2 0.001, picked on val) | 0.500 [0.400, 0.600] |" in md
    assert "- fine-tuned classifier against the bag-of-words logistic regression: +0.000" in md
    assert "BERT masked-LM accuracy on val: 0.200." in md
    assert table[0]["score_lo"] == round(lo, 4) and table[0]["score_hi"] == round(hi, 4)
    assert "tokens/s" not in md.split("\n\n")[2]  # the table holds no wall-clock figure (reports/speed/ does)
    report.plot(table, tmp_path / "quality.png")
    speed = {"decoder-sft": {"speaker": {d: {"tokens_per_s": 10.0 * (i + 1), "ms_per_item": 5.0}
                                         for i, d in enumerate(("greedy", "beam2", "sample"))}}}
    report.plot_speed(table, speed, tmp_path / "speed.png")
    assert all((tmp_path / p).stat().st_size > 1000 for p in ("quality.png", "speed.png"))


def test_a_share_exactly_the_flag_above_the_references_is_flagged():
    """0.3 against 0.2 is +0.10 (in floating point 0.2 + 0.1 > 0.3)."""
    metrics = synthetic_metrics()
    metrics["reference_degenerate"] = {"speaker": {"empty": 0.0, "one_token": 0.2, "repetition": 0.0}}
    metrics["decoder-sft"]["tasks"]["speaker"]["greedy"]["degenerate"] = {"empty": 0.0, "one_token": 0.3,
                                                                          "repetition": 0.0}
    md = report.markdown(metrics, report.rows(metrics, ["decoder-sft"]), [], ["greedy", "beam2", "sample"])
    assert "| decoder-sft | speaker | greedy | 0.00 | **0.30 !** | 0.00 |" in md
    assert "decoder-sft / speaker / greedy: one-token 0.30 (references 0.20)" in md


def test_report_names_the_resampled_plays_and_flags_a_near_constant_genre_predictor():
    metrics = synthetic_metrics()
    metrics["clusters"] = {"genre": 24, "speaker": 7}
    genres = ["comedy", "history", "roman", "tragedy"]
    metrics["genre"]["predicted"] = {
        "classifier": dict(zip(genres, [0.5, 0.2, 0.1, 0.2], strict=True)),
        "decoder": dict(zip(genres, [0.02, 0.02, 0.94, 0.02], strict=True)),
        "bow": dict(zip(genres, [0.8, 0.1, 0.0, 0.1], strict=True)),  # exactly the threshold: not flagged
        "majority": dict(zip(genres, [1.0, 0.0, 0.0, 0.0], strict=True)),  # constant by design: not flagged
        "decoder_norm": dict(zip(genres, [0.3, 0.1, 0.2, 0.4], strict=True))}
    metrics["genre"] |= {"decoder_norm_acc": 0.31, "decoder_norm_acc_ci": [0.2, 0.4]}  # an extra row, no test
    md = report.markdown(metrics, report.rows(metrics, ["decoder-sft"]), [], ["greedy", "beam2", "sample"])
    assert ("95% bootstrap intervals over the test items, resampled by document, the play an item comes from (7 "
            "clusters).") in md
    assert "swapped at random per document; resampled by document, the play an item comes from (7 clusters))" in md
    assert ("Brackets: 95% bootstrap intervals, resampled by document, the play an item comes from (24 clusters); "
            "paired tests likewise.") in md
    assert "| **degenerate: predicts 'roman' for 94% of passages** |" in md
    assert md.count("degenerate: predicts") == 1 and "| comedy (50%) |" in md and "| comedy (80%) |" in md
    assert "| majority class | " in md and "| comedy (100%) |" in md
    assert "| SFT decoder, zero-shot (highest log-prob per token) | 0.310 [0.200, 0.400] | tragedy (40%) |" in md
    decoder_tests = [x for x in md.splitlines() if x.startswith("- ") and "SFT decoder (zero-shot)" in x]
    assert len(decoder_tests) == 2
    assert all(x.endswith("(degenerate: the SFT decoder predicts 'roman' for 94% of passages).") for x in decoder_tests)


def test_report_without_clusters_says_items_were_resampled():
    md = report.markdown(synthetic_metrics(), report.rows(synthetic_metrics(), ["decoder-sft"]), [], ["greedy"])
    assert "over the test items, resampled by item." in md and "resampled by item; paired tests likewise" in md
