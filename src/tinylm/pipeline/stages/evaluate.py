"""Stage evaluate: greedy vs beam search (K = eval.beams) vs sampling on the held-out SFT test items, for
the SFT decoder and the encoder-decoder; perplexity of the pretrained and SFT decoders; BERT's masked-LM
accuracy (`encoder`), and the fine-tuned classifier's genre accuracy (`genre`) on the whole classification
test split beside the majority class, a
bag-of-words logistic regression fit on the classifier's own train split (its L2 penalty picked on val:
tinylm.evaluation.baselines) and the SFT decoder's zero-shot answer to the same question: the genre name of
highest summed log-prob (`decoder`), which favours short names, and, an extra row, of highest log-prob per
token (`decoder_norm`); `genre.predicted` holds each predictor's share of passages per predicted genre (a
near-constant one shows).

Prompts longer than the context (minus the tokens to generate) lose their middle, not their instruction line
(`<|user|>\\n{first line}\\n`, `head_length`) nor their end (tinylm.evaluation.generation.fit_prompt);
training cuts a sample on the right, which leaves the instruction too.

Statistics over the test items (tinylm.evaluation.statistics, seeded with trainer.seed), resampling documents
(the `doc` column of the SFT and classification sets: the play an item comes from; an instruction item is its
own), not items: the items of one play share its characters, vocabulary and genre, so they are clusters, not
independent draws (`clusters`: how many documents each SFT task's items and the genre passages come from).
Every per-item metric gets a 95% cluster-bootstrap interval (`<metric>_ci`; corpus chrF and BLEU too, their
per-sentence statistics summed per document); `paired` holds paired tests (difference, paired bootstrap
interval, approximate-randomization p, both by document) of each
decoder against greedy on the task's score and mean log-prob, and against the majority answer on exact match,
and the genre classifiers against the majority class and the bag-of-words baseline; `degenerate` the share of
empty, one-token and repetitive outputs (`reference_degenerate`: the references' own).

Writes reports/eval/: metrics.json (model/task/decoder), generations.jsonl, by_decoder.csv,
quality_by_decoder.png and report.md, and the wall-clock figures apart (reports/speed/eval.json: generated
tokens/s and ms per item of each model/task/decoder; reports/speed/quality_vs_speed.png), all made in a staging
folder and then renamed into place together (an interrupted run leaves the previous set, not a mix); all logged
to MLflow.

    python pipelines/evaluate.py [hydra overrides, e.g. eval.max_items=20]
"""

import json
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
from sacrebleu.metrics import BLEU, CHRF

from tinylm.atomic import write_csv, write_json, write_text
from tinylm.data.chat import ChatTemplate
from tinylm.data.special_tokens import CLS, EOS, MASK, PAD, SEP
from tinylm.data.tokens import load_tokenizer, read_tokens, special_ids
from tinylm.evaluation import report
from tinylm.evaluation.baselines import fit_bow_classifier
from tinylm.evaluation.generation import cut_at_eos, fit_prompt, generate, head_length, prompt_room
from tinylm.evaluation.metrics import (
    best_candidate,
    bleu,
    candidate_logprobs,
    chrf,
    classifier_predictions,
    exact_match,
    majority_label,
    mlm_accuracy,
    normalize,
    perplexity,
    prediction_shares,
    sequence_logprob,
)
from tinylm.evaluation.statistics import bootstrap_ci, corpus_stats, degenerate_rates, paired_test
from tinylm.models.io import load_pretrained
from tinylm.pipeline.config import SHORT_ANSWER_TASKS, stage_config
from tinylm.pipeline.paths import CLS_SETS, GENERATORS, MODEL_NAMES, MODELS, REPORTS, SPEED, TOKENIZER, TOKENS
from tinylm.pipeline.tracked import tracked
from tinylm.training.fit import set_threads

OUT = REPORTS / "eval"
GENRE_PROMPT = "Which genre is this passage from?\n"
GENRE_TOKENS = 8  # room for the longest genre name and EOS


def test_items(max_items: int) -> dict[str, list[dict]]:
    """Up to max_items tokenized SFT test items per task."""
    by_task = defaultdict(list)
    for row in datasets.load_from_disk(str(TOKENS / "sft"))["test"]:
        if len(by_task[row["task"]]) < max_items:
            by_task[row["task"]].append(row)
    return dict(by_task)


def majority_answers(items: dict[str, list[dict]]) -> dict[str, list[int]]:
    """Per-item exact match (1/0) of always answering the most frequent training answer of each QA task."""
    train = datasets.load_from_disk(str(TOKENS / "sft"))["train"].select_columns(["task", "response"]).to_list()
    out = {}
    for task, rows in items.items():
        answers = Counter(normalize(r["response"]) for r in train if r["task"] == task)
        if task != "continue" and answers:
            top = answers.most_common(1)[0][0]
            out[task] = [int(normalize(r["response"]) == top) for r in rows]
    return out


def with_ci(name: str, x: list, seed: int, groups: list) -> dict:
    """{name: mean of x, name_ci: its 95% cluster-bootstrap interval}."""
    return {name: sum(x) / len(x), f"{name}_ci": bootstrap_ci(x, groups=groups, seed=seed)}


def item_scores(task: str, texts: list[str], refs: list[str]) -> dict[str, tuple]:
    """A task's quality metrics per item, as the statistics functions take them: name -> (x, score); score None
    for the mean of x (exact match, 1/0 per item), else sacrebleu's corpus score of x's summed rows."""
    if task == "continue":
        return {"chrf": corpus_stats(CHRF(), texts, refs), "bleu": corpus_stats(BLEU(), texts, refs)}
    return {"exact_match": ([exact_match([t], [r]) for t, r in zip(texts, refs, strict=True)], None)}


def task_metrics(task: str, texts: list[str], refs: list[str], per_item: dict[str, tuple], gen, seed: int,
                 groups: list) -> dict:
    """The decoder's metrics on a task, each per-item one followed by its 95% cluster-bootstrap interval."""
    values = {"chrf": chrf(texts, refs), "bleu": bleu(texts, refs)} if task == "continue" else \
        {"exact_match": exact_match(texts, refs)}
    lp, lengths = per_item["mean_logprob"][0], per_item["mean_length"][0]
    values |= {"mean_logprob": sum(lp) / len(lp), "mean_length": sum(lengths) / len(lengths)}
    m = {}
    for k, v in values.items():
        m[k] = v
        if k in per_item:
            m[f"{k}_ci"] = bootstrap_ci(*per_item[k], groups=groups, seed=seed)
    m["degenerate"] = degenerate_rates(gen.ids)
    return m


def paired_tests(per_item: dict[str, dict[str, tuple]], score_key: str, majority: list[int] | None,
                 seed: int, groups: list) -> dict:
    """Each decoder against greedy on the task's score and mean log-prob; against the majority answer on exact
    match (QA tasks); clusters: groups. per_item: decoder -> its item_scores plus mean_logprob."""
    greedy = per_item["greedy"]
    out = {f"{d}_vs_greedy": {k: paired_test(s[k][0], greedy[k][0], s[k][1], groups=groups, seed=seed)
                              for k in (score_key, "mean_logprob")} for d, s in per_item.items() if d != "greedy"}
    if majority is not None:
        out |= {f"{d}_vs_majority": {"exact_match": paired_test(s["exact_match"][0], majority, groups=groups,
                                                                seed=seed)} for d, s in per_item.items()}
    return out


def evaluate_generator(name: str, model, items: dict[str, list[dict]], decoders: list[str], cfg, tok, seq2seq: bool,
                       majority: dict[str, list[int]], generations: list[dict], speed: dict) -> dict:
    """The model's metrics per task and decoder (appending its outputs to `generations` and their wall-clock
    figures to speed[task][decoder])."""
    eos, pad, seed = tok.token_to_id(EOS), tok.token_to_id(PAD), cfg.trainer.seed
    tmpl = ChatTemplate.from_tokenizer(tok)
    out = {"tasks": {}, "beam_vs_greedy": {}, "paired": {}}
    logps = defaultdict(list)  # decoder -> log-probs over all items, in order
    for task, rows in items.items():
        new_tokens = cfg.eval.max_answer_tokens if task in SHORT_ANSWER_TASKS else cfg.eval.max_new_tokens
        room = prompt_room(model.config.block_size, 1 if seq2seq else new_tokens)  # a source: the start token
        prompts = [fit_prompt(ids, room, head_length(tmpl, r["prompt"], ids, seq2seq))
                   for r in rows for ids in [r["src_ids"] if seq2seq else r["prompt_ids"]]]
        refs, groups = [r["response"] for r in rows], [r["doc"] for r in rows]
        out["tasks"][task] = {}
        texts_by, per_item = {}, {}
        for d in decoders:
            gen = generate(model, prompts, d, eos_id=eos, pad_id=pad, max_new_tokens=new_tokens,
                           batch_size=cfg.eval.batch_size, length_penalty=cfg.eval.length_penalty, seq2seq=seq2seq,
                           start_id=eos, temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                           seed=cfg.trainer.seed)
            texts = [tok.decode(ids) for ids in gen.ids]
            lp = [sequence_logprob(model, p, ids + [eos] * end, seq2seq=seq2seq, start_id=eos)
                  for p, ids, end in zip(prompts, gen.ids, gen.finished, strict=True)]
            logps[d] += lp
            texts_by[d] = (texts, lp)
            per_item[d] = {**item_scores(task, texts, refs), "mean_logprob": (lp, None),
                           "mean_length": ([len(i) for i in gen.ids], None)}
            out["tasks"][task][d] = task_metrics(task, texts, refs, per_item[d], gen, seed, groups)
            speed.setdefault(task, {})[d] = {"tokens_per_s": gen.tokens_per_s, "ms_per_item": gen.ms_per_item()}
        score_key, _ = report.score_of(out["tasks"][task]["greedy"])
        out["paired"][task] = paired_tests(per_item, score_key, majority.get(task), seed, groups)
        for i, r in enumerate(rows):
            generations.append({"model": name, "task": task, "prompt": r["prompt"], "reference": r["response"],
                                "outputs": {d: {"text": t[i], "logprob": round(lp[i], 4)}
                                            for d, (t, lp) in texts_by.items()}})
    for d in decoders:
        if d.startswith("beam"):
            pairs = list(zip(logps[d], logps["greedy"], strict=True))
            out["beam_vs_greedy"][d] = {"higher": sum(b > g + 1e-6 for b, g in pairs) / len(pairs),
                                        "lower": sum(b < g - 1e-6 for b, g in pairs) / len(pairs),
                                        "same": sum(abs(b - g) <= 1e-6 for b, g in pairs) / len(pairs)}
    return out


@torch.no_grad()
def genre_predictions(cls_model, decoder, tok, rows: list[dict], names: list[str],
                      batch_size: int) -> dict[str, list[int]]:
    """Per passage, the predicted class id of the fine-tuned classifier (`classifier`) and of the SFT decoder
    zero-shot: the genre name of highest summed log-prob (`decoder`), of highest log-prob per token
    (`decoder_norm`)."""
    preds = {"classifier": classifier_predictions(cls_model, rows, tok.token_to_id(PAD), batch_size),
             "decoder": [], "decoder_norm": []}
    tmpl = ChatTemplate.from_tokenizer(tok)
    answers = [tmpl.response_ids(n) for n in names]
    room = prompt_room(decoder.config.block_size, GENRE_TOKENS)
    for r in rows:
        text = GENRE_PROMPT + r["text"]
        ids = tmpl.prompt_ids(text)
        scores = candidate_logprobs(decoder, fit_prompt(ids, room, head_length(tmpl, text, ids, False)), answers)
        preds["decoder"].append(best_candidate(scores))
        preds["decoder_norm"].append(best_candidate(scores, [len(a) for a in answers]))
    return preds


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    set_threads(cfg.trainer.num_threads)
    torch.manual_seed(cfg.trainer.seed)
    models = {n: load_pretrained(MODELS / n) for n in MODEL_NAMES}
    tok = load_tokenizer(TOKENIZER)
    decoders = ["greedy", *(f"beam{k}" for k in cfg.eval.beams), "sample"]
    items = test_items(cfg.eval.max_items)
    OUT.mkdir(parents=True, exist_ok=True)
    seed, eos = cfg.trainer.seed, tok.token_to_id(EOS)
    with tracked(cfg.tracking, "evaluate", {"eval": asdict(cfg.eval)}, model_name="decoder-sft",
                 experiment=cfg.name) as mlflow:
        generations, metrics, speed, majority_em = [], {}, {}, majority_answers(items)
        for name in GENERATORS:
            metrics[name] = evaluate_generator(name, models[name], items, decoders, cfg, tok,
                                               models[name].config.arch == "seq2seq", majority_em,
                                               generations, speed.setdefault(name, {}))
        metrics["majority_baseline"] = {k: v for t, x in majority_em.items()
                                        for k, v in with_ci(t, x, seed, [r["doc"] for r in items[t]]).items()}
        metrics["reference_degenerate"] = {task: degenerate_rates([cut_at_eos(r["response_ids"], eos)[0] for r in rows])
                                           for task, rows in items.items()}
        val = read_tokens(TOKENS, "val")
        n_val = cfg.trainer.val_batches
        metrics["perplexity"] = {n: perplexity(models[n], val, cfg.eval.batch_size, n_val)
                                 for n in ("decoder", "decoder-sft")}
        cls_sets = datasets.load_from_disk(str(TOKENS / "cls"))
        test = cls_sets["test"].to_list()  # all of it (cls.max_eval_items): one label per item needs many
        names = datasets.load_from_disk(str(CLS_SETS))["train"].features["label"].names
        majority = majority_label(cls_sets["train"]["labels"], len(names))
        bow = fit_bow_classifier(cls_sets["train"]["text"], cls_sets["train"]["labels"], cls_sets["val"]["text"],
                                 cls_sets["val"]["labels"], num_labels=len(names))
        preds = genre_predictions(models["classifier"], models["decoder-sft"], tok, test, names, cfg.eval.batch_size)
        preds |= {"bow": bow.predict([r["text"] for r in test]), "majority": [majority] * len(test)}
        acc = {k: [int(p == r["labels"]) for p, r in zip(v, test, strict=True)] for k, v in preds.items()}
        plays = [r["doc"] for r in test]
        metrics["clusters"] = {"genre": len(set(plays)),  # documents: the resampled units
                               **{task: len({r["doc"] for r in rows}) for task, rows in items.items()}}
        metrics["encoder"] = {
            "mlm_acc": mlm_accuracy(models["encoder"], val, cls_id=tok.token_to_id(CLS), sep_id=tok.token_to_id(SEP),
                                    mask_id=tok.token_to_id(MASK),
                                    special_ids=list(special_ids(tok).values()),
                                    batch_size=cfg.eval.batch_size, n_batches=n_val, seed=seed)}
        metrics["genre"] = {
            **{k: v for name, x in acc.items() for k, v in with_ci(f"{name}_acc", x, seed, plays).items()},
            "bow_l2": bow.l2, "predicted": {k: prediction_shares(v, names) for k, v in preds.items()},
            "paired": {f"{a}_vs_{b}": paired_test(acc[a], acc[b], groups=plays, seed=seed) for a, b in
                       (("classifier", "majority"), ("classifier", "bow"), ("decoder", "majority"),
                        ("classifier", "decoder"))}}
        table = report.rows(metrics, list(GENERATORS))
        per_task = defaultdict(list)
        for g in generations:
            per_task[(g["model"], g["task"])].append(g)
        examples = [g for group in per_task.values() for g in group[:2]]
        SPEED.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=OUT) as staged:  # every output made first, then renamed together
            staged = Path(staged)
            write_json(staged / "metrics.json", metrics)
            write_text(staged / "generations.jsonl", "".join(json.dumps(g) + "\n" for g in generations))
            write_csv(staged / "by_decoder.csv", table, list(table[0]))
            report.plot(table, staged / "quality_by_decoder.png")
            write_text(staged / "report.md", report.markdown(metrics, table, examples, decoders))
            write_json(staged / "eval.json", speed)
            report.plot_speed(table, speed, staged / "quality_vs_speed.png")
            for made in sorted(staged.iterdir()):
                os.replace(made, (SPEED if made.name in ("eval.json", "quality_vs_speed.png") else OUT) / made.name)
        if mlflow:
            from tinylm.pipeline.tracking import flatten

            flat = {**flatten(metrics), **flatten({n: {"tasks": s} for n, s in speed.items()})}  # one nesting
            mlflow.log_metrics({k: float(v) for k, v in flat.items() if not isinstance(v, list)})
        mlflow.log_table({"model": [g["model"] for g in generations], "task": [g["task"] for g in generations],
                          "prompt": [g["prompt"] for g in generations],
                          "reference": [g["reference"] for g in generations],
                          **{d: [g["outputs"][d]["text"] for g in generations] for d in decoders}},
                         artifact_file="generations.json")
        for path in [OUT / "quality_by_decoder.png", SPEED / "quality_vs_speed.png", OUT / "report.md",
                     OUT / "by_decoder.csv", OUT / "metrics.json", SPEED / "eval.json"]:
            mlflow.log_artifact(str(path))
    best = {r["task"]: r for r in table if r["model"] == "decoder-sft" and r["decoder"] == "greedy"}
    print("evaluate: decoder-sft greedy " + ", ".join(f"{t}={r['score']:.3f}" for t, r in best.items())
          + f" -> {OUT}/report.md")

