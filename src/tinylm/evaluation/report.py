"""The evaluate stage's human-readable outputs: plot data (CSV), PNG charts and report.md."""

import csv
from pathlib import Path

from tinylm.atomic import atomic_file


def score_of(task_metrics: dict) -> tuple[str, float]:
    """The headline quality number of a task: exact match for QA tasks, chrF for continuation."""
    key = "chrf" if "chrf" in task_metrics else "exact_match"
    return key, task_metrics[key]


def rows(metrics: dict, models: list[str]) -> list[dict]:
    """Flat rows model/task/decoder/metric/score/tokens_per_s for the plot data and tables."""
    out = []
    for model in models:
        for task, by_decoder in metrics[model]["tasks"].items():
            for decoder, m in by_decoder.items():
                key, score = score_of(m)
                out.append({"model": model, "task": task, "decoder": decoder, "metric": key, "score": round(score, 4),
                            "tokens_per_s": round(m["tokens_per_s"], 1), "ms_per_item": round(m["ms_per_item"], 2),
                            "mean_logprob": round(m["mean_logprob"], 4), "mean_length": round(m["mean_length"], 2)})
    return out


def write_csv(path: Path, table: list[dict]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)


def plot(table: list[dict], out: Path) -> list[Path]:
    """quality_by_decoder.png (one panel per model/task) and quality_vs_speed.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["task"]) for r in table})
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, (model, task) in zip(axes[0], groups, strict=True):
        sel = [r for r in table if (r["model"], r["task"]) == (model, task)]
        ax.bar([r["decoder"] for r in sel], [r["score"] for r in sel], color="tab:blue")
        ax.set_title(f"{model}\n{task} ({sel[0]['metric']})", fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    paths = [out / "quality_by_decoder.png", out / "quality_vs_speed.png"]
    _save(fig, paths[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, task in groups:
        sel = [r for r in table if (r["model"], r["task"]) == (model, task)]
        ax.plot([r["tokens_per_s"] for r in sel], [r["score"] for r in sel], marker="o", label=f"{model}/{task}")
        for r in sel:
            ax.annotate(r["decoder"], (r["tokens_per_s"], r["score"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens / s (log)")
    ax.set_ylabel("exact match or chrF")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, paths[1])
    return paths


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown(metrics: dict, table: list[dict], examples: list[dict], decoders: list[str]) -> str:
    """report.md: headline tables, what beam bought over greedy, encoder vs decoder, and examples."""
    lines = ["# Evaluation: greedy vs beam search", "",
             "Held-out SFT test items. Exact match for `speaker` and `play`, chrF for `continue` "
             "(BLEU in metrics.json); speed is generated tokens per second on this machine.", ""]
    lines += ["| model | task | decoder | score | mean log-prob | mean length | tokens/s | ms/item |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['task']} | {r['decoder']} | {r['score']:.3f} ({r['metric']}) | "
              f"{r['mean_logprob']:.2f} | {r['mean_length']:.1f} | {r['tokens_per_s']:.0f} | {r['ms_per_item']:.1f} |"
              for r in table]
    if metrics.get("majority_baseline"):
        lines += ["", "Majority-answer baseline (always the most frequent training answer): " + ", ".join(
            f"{t} {v:.3f}" for t, v in metrics["majority_baseline"].items()) + "."]
    lines += ["", "## Did beam search find more likely answers?", "",
              "Share of items where the beam output's log-probability under the model exceeds greedy's "
              "(ties excluded), and where it is lower (possible: beam ranks with a length penalty).", "",
              "| model | decoder | higher than greedy | lower | same output |", "|---|---|---:|---:|---:|"]
    for model, m in metrics.items():
        for decoder, c in m.get("beam_vs_greedy", {}).items():
            lines.append(f"| {model} | {decoder} | {c['higher']:.2f} | {c['lower']:.2f} | {c['same']:.2f} |")
    if "encoder" in metrics:
        e = metrics["encoder"]
        lines += ["", "## Encoder vs decoder on genre classification (test passages)", "",
                  "| model | accuracy |", "|---|---:|",
                  f"| BERT encoder, fine-tuned classifier | {e['genre_acc']:.3f} |",
                  f"| SFT decoder, zero-shot (most likely genre name) | {e['decoder_genre_acc']:.3f} |",
                  f"| majority class | {e['genre_majority_acc']:.3f} |",
                  "", f"BERT masked-LM accuracy on val: {e['mlm_acc']:.3f}."]
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


def _one_line(s: str) -> str:
    return s.replace("\n", " / ").replace("`", "'")[:200]
