"""The evaluate stage's human-readable outputs: plot data (CSV), PNG charts and report.md, all a function of
the models and data alone; the speed chart (quality against generated tokens/s) goes with the other
wall-clock figures to reports/speed/.

report.md states which paired differences are significant (p < ALPHA) and which are not, with their 95%
intervals and the unit resampled (documents: the play an item comes from, an instruction item alone; with
their count where metrics["clusters"] has it, else items),
flags a decoder's degenerate outputs where a kind's share is at least FLAG above the references', and a genre
predictor as degenerate where its most frequent prediction exceeds CONSTANT of the passages (the majority
class is constant by design: not flagged).
"""

from collections import defaultdict
from pathlib import Path

from tinylm.evaluation.statistics import DEGENERATE, MAX_NGRAM, MIN_COVER, MIN_REPEATS
from tinylm.plots import pyplot, save_png

ALPHA = 0.05
FLAG = 0.1
CONSTANT = 0.8
NAMES = {"exact_match": "exact match", "chrf": "chrF", "bleu": "BLEU", "mean_logprob": "mean log-prob",
         "greedy": "greedy", "majority": "the majority answer"}
GENRE_MODELS = {"classifier": ("fine-tuned classifier (models/classifier)", "the classifier"),  # table, test
                "decoder": ("SFT decoder, zero-shot (most likely genre name)", "the SFT decoder"),
                "decoder_norm": ("SFT decoder, zero-shot (highest log-prob per token)", "the SFT decoder per token"),
                "bow": ("bag-of-words logistic regression", "the bag-of-words model"),
                "majority": ("majority class", "the majority class")}
GENRE_TESTS = {"classifier_vs_majority": "fine-tuned classifier against the majority class",
               "classifier_vs_bow": "fine-tuned classifier against the bag-of-words logistic regression",
               "decoder_vs_majority": "SFT decoder (zero-shot) against the majority class",
               "classifier_vs_decoder": "fine-tuned classifier against the SFT decoder (zero-shot)"}


def score_of(task_metrics: dict) -> tuple[str, float]:
    """The headline quality number of a task: exact match for QA tasks, chrF for continuation."""
    key = "chrf" if "chrf" in task_metrics else "exact_match"
    return key, task_metrics[key]


def rows(metrics: dict, models: list[str]) -> list[dict]:
    """Flat rows model/task/decoder/metric/score (with its 95% interval)/log-prob/length for the plot data and
    tables."""
    out = []
    for model in models:
        for task, by_decoder in metrics[model]["tasks"].items():
            for decoder, m in by_decoder.items():
                key, score = score_of(m)
                (lo, hi), (lp_lo, lp_hi) = m[f"{key}_ci"], m["mean_logprob_ci"]
                out.append({"model": model, "task": task, "decoder": decoder, "metric": key, "score": round(score, 4),
                            "score_lo": round(lo, 4), "score_hi": round(hi, 4),
                            "mean_logprob": round(m["mean_logprob"], 4), "mean_logprob_lo": round(lp_lo, 4),
                            "mean_logprob_hi": round(lp_hi, 4), "mean_length": round(m["mean_length"], 2)})
    return out


def plot(table: list[dict], path: Path) -> None:
    """quality_by_decoder.png: one panel per model/task, 95% intervals as error bars."""
    plt = pyplot()
    groups = sorted({(r["model"], r["task"]) for r in table})
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, (model, task) in zip(axes[0], groups, strict=True):
        sel = [r for r in table if (r["model"], r["task"]) == (model, task)]
        err = [[max(0, r["score"] - r["score_lo"]) for r in sel], [max(0, r["score_hi"] - r["score"]) for r in sel]]
        ax.bar([r["decoder"] for r in sel], [r["score"] for r in sel], yerr=err, capsize=3, color="tab:blue")
        ax.set_title(f"{model}\n{task} ({sel[0]['metric']})", fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_speed(table: list[dict], speed: dict, path: Path) -> None:
    """quality_vs_speed.png: each decoder's score against its generated tokens/s (speed: model -> task ->
    decoder -> {"tokens_per_s", "ms_per_item"}, as the evaluate stage writes reports/speed/eval.json)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, task in sorted({(r["model"], r["task"]) for r in table}):
        sel = [(r, speed[model][task][r["decoder"]]["tokens_per_s"]) for r in table
               if (r["model"], r["task"]) == (model, task)]
        ax.plot([tps for _, tps in sel], [r["score"] for r, _ in sel], marker="o", label=f"{model}/{task}")
        for r, tps in sel:
            ax.annotate(r["decoder"], (tps, r["score"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens / s (log)")
    ax.set_ylabel("exact match or chrF")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def markdown(metrics: dict, table: list[dict], examples: list[dict], decoders: list[str]) -> str:
    """report.md: headline tables with 95% intervals, which differences are significant, what beam bought over
    greedy, degenerate outputs, genre classification, and examples."""
    models = list(dict.fromkeys(r["model"] for r in table))
    lines = ["# Evaluation: greedy vs beam search", "",
             "Held-out SFT test items. Exact match for `speaker` and `play`, chrF for `continue` "
             "(BLEU in metrics.json). Brackets: 95% bootstrap intervals over the test items, "
             f"{_resampled(metrics, [t for t in metrics.get('clusters', {}) if t != 'genre'])}. What each decoder "
             "costs (generated tokens/s, ms per item on this machine): reports/speed/eval.json and "
             "quality_vs_speed.png.", ""]
    lines += ["| model | task | decoder | score [95% CI] | mean log-prob [95% CI] | mean length |",
              "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['task']} | {r['decoder']} | {r['score']:.3f} [{r['score_lo']:.3f}, "
              f"{r['score_hi']:.3f}] ({r['metric']}) | {r['mean_logprob']:.2f} [{r['mean_logprob_lo']:.2f}, "
              f"{r['mean_logprob_hi']:.2f}] | {r['mean_length']:.1f} |" for r in table]
    if metrics.get("majority_baseline"):
        base = metrics["majority_baseline"]
        lines += ["", "Majority-answer baseline (always the most frequent training answer): " + ", ".join(
            f"{t} {v:.3f} {_ci(base[f'{t}_ci'])}" for t, v in base.items() if not t.endswith("_ci")) + "."]
    lines += _significance(metrics, models)
    lines += ["", "## Did beam search find more likely answers?", "",
              "Share of items where the beam output's log-probability under the model exceeds greedy's "
              "(ties excluded), and where it is lower (possible: beam ranks with a length penalty).", "",
              "| model | decoder | higher than greedy | lower | equal (within 1e-6) |", "|---|---|---:|---:|---:|"]
    for model, m in metrics.items():
        for decoder, c in m.get("beam_vs_greedy", {}).items():
            lines.append(f"| {model} | {decoder} | {c['higher']:.2f} | {c['lower']:.2f} | {c['same']:.2f} |")
    lines += _degenerate(metrics, models)
    if "genre" in metrics:
        lines += _genre(metrics)
    if "encoder" in metrics:
        lines += ["", f"BERT masked-LM accuracy on val: {metrics['encoder']['mlm_acc']:.3f}."]
    if "perplexity" in metrics:
        lines += ["", "## Perplexity on the val split", "", "| model | perplexity |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in metrics["perplexity"].items()]
    lines += ["", "## Examples", ""]
    for ex in examples:
        lines += [f"### {ex['model']} / {ex['task']}", "", "Prompt:", "", "```", ex["prompt"], "```", "",
                  f"- reference: `{_one_line(ex['reference'])}`"]
        lines += [f"- {d}: `{_one_line(ex['outputs'][d]['text'])}` (log-prob {ex['outputs'][d]['logprob']:.2f})"
                  for d in decoders if d in ex["outputs"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def _resampled(metrics: dict, sets: list[str]) -> str:
    """The unit the intervals and tests resampled: documents and how many (per test set), else items."""
    clusters = metrics.get("clusters", {})
    if not sets:
        return "resampled by item"
    if len(sets) == 1:
        return f"resampled by document, the play an item comes from ({clusters[sets[0]]} clusters)"
    return ("resampled by document, the play an item comes from (clusters: "
            + ", ".join(f"{t} {clusters[t]}" for t in sets) + ")")


def _most_predicted(metrics: dict, model: str) -> tuple[str, float] | None:
    """(genre, share of passages) of a genre predictor's most frequent prediction, None if not recorded."""
    shares = metrics["genre"].get("predicted", {}).get(model)
    return max(shares.items(), key=lambda kv: kv[1]) if shares else None


def _constant(metrics: dict, model: str) -> str | None:
    """"predicts 'X' for 94% of passages" where a genre predictor's most frequent class exceeds CONSTANT."""
    top = _most_predicted(metrics, model)
    if model == "majority" or top is None or top[1] <= CONSTANT:
        return None
    return f"predicts '{top[0]}' for {top[1]:.0%} of passages"


def _genre(metrics: dict) -> list[str]:
    """The genre table (accuracy, most predicted genre) and its paired tests, degenerate predictors flagged."""
    g = metrics["genre"]
    unit = _resampled(metrics, ["genre"] if "genre" in metrics.get("clusters", {}) else [])
    lines = ["", "## Genre classification (test passages)", "",
             f"Brackets: 95% bootstrap intervals, {unit}; paired tests likewise. Degenerate: a predictor whose "
             f"most frequent prediction exceeds {CONSTANT:.0%} of the passages (its accuracy is about that "
             "genre's share).", "", "| model | accuracy [95% CI] | most predicted genre |", "|---|---:|---|"]
    for model, (name, _) in ((m, v) for m, v in GENRE_MODELS.items() if f"{m}_acc" in g):
        flag, top = _constant(metrics, model), _most_predicted(metrics, model)
        name += f" (L2 {g['bow_l2']:g}, picked on val)" if model == "bow" else ""
        most = f"**degenerate: {flag}**" if flag else f"{top[0]} ({top[1]:.0%})" if top else ""
        lines.append(f"| {name} | {g[f'{model}_acc']:.3f} {_ci(g[f'{model}_acc_ci'])} | {most} |")
    lines.append("")
    for k, t in g["paired"].items():
        flags = [f"{GENRE_MODELS[m][1]} {f}" for m in k.split("_vs_") if (f := _constant(metrics, m))]
        lines.append(f"- {GENRE_TESTS[k]}: {_result(t)}: {'significant' if t['p_value'] < ALPHA else 'not significant'}"
                     + (f" (degenerate: {'; '.join(flags)})." if flags else "."))
    return lines


def _significance(metrics: dict, models: list[str]) -> list[str]:
    """One line per model, task, baseline and metric: which decoders differ significantly from the baseline."""
    lines, n, n_sig = [], 0, 0
    for model in models:
        for task, tests in metrics[model].get("paired", {}).items():
            by = defaultdict(list)  # (baseline, metric) -> [(decoder, test)]
            for name, by_metric in tests.items():
                decoder, baseline = name.split("_vs_")
                for metric, t in by_metric.items():
                    by[(baseline, metric)].append((decoder, t))
            for (baseline, metric), results in by.items():
                sig = [f"{d} {_result(t)}" for d, t in results if t["p_value"] < ALPHA]
                rest = [f"{d} {_result(t)}" for d, t in results if t["p_value"] >= ALPHA]
                n, n_sig = n + len(results), n_sig + len(sig)
                lines.append(f"- {model} / {task}, {NAMES[metric]} against {NAMES[baseline]}: significant: "
                             f"{'; '.join(sig) or 'none'}. Not significant: {'; '.join(rest) or 'none'}.")
    if not lines:
        return []
    sets = [t for t in metrics.get("clusters", {}) if t != "genre"]
    unit = "document" if sets else "item"
    return ["", "## Which differences are significant?", "",
            "Paired tests on the same test items: the difference decoder - baseline, its 95% paired-bootstrap "
            f"interval, and the two-sided p-value of approximate randomization (the two systems' outputs swapped at "
            f"random per {unit}; {_resampled(metrics, sets)}). Significant: p < {ALPHA}; the interval comes from "
            f"another procedure and may exclude 0 at a p just above it. {n_sig} of {n} differences are significant; "
            "among this many comparisons about 1 in 20 of those with no real difference would be too.", "", *lines]


def _degenerate(metrics: dict, models: list[str]) -> list[str]:
    """Table of degenerate-output shares, each decoder's kinds flagged where FLAG above the references'."""
    ref = metrics.get("reference_degenerate", {})
    lines = ["", "## Degenerate outputs", "",
             f"Share of outputs that are empty, one token long, or one n-gram (n <= {MAX_NGRAM}) repeated back to "
             f"back at least {MIN_REPEATS} times, the repeating stretch (a partial last copy included) at least "
             f"{MIN_COVER:.0%} of the output; the references' own shares first. Flagged (**!**): a share at least "
             f"{FLAG:.2f} above the references'.", "",
             "| model | task | decoder | empty | one token | repetition |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| references | {task} | | " + " | ".join(f"{r[k]:.2f}" for k in DEGENERATE) + " |"
              for task, r in ref.items()]
    flagged = []
    for model in models:
        for task, by_decoder in metrics[model]["tasks"].items():
            for d, m in by_decoder.items():
                cells = []
                for k in DEGENERATE:
                    v, base = m["degenerate"][k], ref.get(task, {}).get(k, 0.0)
                    flag = v - base >= FLAG - 1e-9  # shares are fractions: 0.2 + 0.1 > 0.3 in floating point
                    cells.append(f"**{v:.2f} !**" if flag else f"{v:.2f}")
                    if flag:
                        flagged.append(f"{model} / {task} / {d}: {k.replace('_', '-')} {v:.2f} (references {base:.2f})")
                lines.append(f"| {model} | {task} | {d} | " + " | ".join(cells) + " |")
    lines += ["", f"Flagged: {'; '.join(flagged)}." if flagged else
              f"None flagged: no decoder's share of a kind is {FLAG:.2f} above the references'."]
    return lines


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _result(t: dict) -> str:
    p = "p < 0.001" if t["p_value"] < 0.001 else f"p = {t['p_value']:.3g}"
    return f"{t['diff']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}], {p}"


def _one_line(s: str) -> str:
    return s.replace("\n", " / ").replace("`", "'")[:200]
