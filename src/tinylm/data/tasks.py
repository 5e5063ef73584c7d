"""Task sets built from the corpus, the split respected: items of split s come only from scenes of split s.

SFT (prompt -> response), from the plays' speeches, written as the script writes them ("NAME:\\nlines"):
- speaker:  "Who speaks the last lines?\\n<A>:\\n<a>\\n\\n<B>:\\n<b>\\n\\n<passage>"  -> the speaker's name
- play:     "Which play is this from?\\n<SPEAKER>:\\n<passage>"   -> the play's title
- continue: "Continue the scene.\\n<SPEAKER>:\\n<passage>"        -> "<NEXT SPEAKER>:\\n<their passage>"
A passage is the first `passage_lines` verse lines of a speech (stage directions left out), at least 40
characters; <a> and <b> are the first passage_lines // 2 (at least one) lines of the two speeches before
it, by A and B (B is not the speaker; A may be: 63% of such turns in the training plays go back to A).
The speaker task shows the exchange before the lines and the play task the speaker: the clues a reader of
the script has. Without them, naming the speaker of four bare lines among ~700 characters, or their play
among 38, is beyond a model of a few million parameters: the one trained by the default pipeline answered
(nearly) every item with the same name, at or below the majority answer's accuracy.
Optional instruction data (tinylm.data.instructions) is added as task "instructions", split by hash with
the corpus's fractions. Splits: train (at most max_train_items per task), val and test (at
most max_eval_items per task each).

Classification (passage -> genre, for the classifier on either backbone, `cls.backbone`): windows of
`passage_lines` verse lines (plays: speaker names left out, they would give the play away) of each row with a
non-empty genre; label names sorted.

Sampling is deterministic: candidates are shuffled by a random.Random seeded with (seed, split, task), and
each SFT split once more (seed, split, "mix") so that any prefix of it, such as the first `val_batches` a
trainer validates on, holds the tasks in their proportions (in task order, the SFT decoder's and the
encoder-decoder's val loss had been measured on `speaker` and `play` items only).
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array

import datasets

from tinylm.data.corpus import SPLITS, assign_splits, speeches_of, to_dataset
from tinylm.data.plays import is_direction

SFT_FEATURES = datasets.Features({k: datasets.Value("string") for k in ("task", "doc", "prompt", "response")})
PROMPTS = {"speaker": "Who speaks the last lines?", "play": "Which play is this from?",
           "continue": "Continue the scene."}
MIN_PASSAGE_CHARS = 40


def verse_lines(speech: str) -> list[str]:
    """A speech's lines without its "[direction]" lines."""
    return [x for x in speech.split("\n") if x and not is_direction(x)]


def passage(speech: str, n_lines: int) -> str:
    """The first n verse lines of a speech."""
    return "\n".join(verse_lines(speech)[:n_lines])


def play_items(rows, tasks: list[str], n_lines: int) -> dict[str, list[dict]]:
    """All candidate items per task from corpus rows (scenes) of one split."""
    out = {t: [] for t in tasks}
    for row in rows:
        speeches = [(s, passage(t, n_lines)) for s, t in speeches_of(row)]
        context = [f"{s}:\n{passage(t, max(1, n_lines // 2))}" for s, t in speeches_of(row)]
        for i, (speaker, text) in enumerate(speeches):
            if len(text) < MIN_PASSAGE_CHARS:
                continue
            item = {"doc": row["doc"]}
            if "speaker" in out and i >= 2 and speeches[i - 1][0] != speaker:
                prompt = "\n\n".join([f"{PROMPTS['speaker']}\n{context[i - 2]}", context[i - 1], text])
                out["speaker"].append({**item, "prompt": prompt, "response": speaker})
            if "play" in out:
                out["play"].append({**item, "prompt": f"{PROMPTS['play']}\n{speaker}:\n{text}",
                                    "response": row["doc"]})
            if "continue" in out and i + 1 < len(speeches):
                nxt, reply = speeches[i + 1]
                if nxt != speaker and len(reply) >= MIN_PASSAGE_CHARS:
                    out["continue"].append({**item, "prompt": f"{PROMPTS['continue']}\n{speaker}:\n{text}",
                                            "response": f"{nxt}:\n{reply}"})
    return out


def sample_order(n: int, k: int, seed: int, split: str, task: str) -> list[int]:
    """The indices of `sample`'s choice among n items (a shuffle's permutation depends only on their number),
    held as 8 bytes each rather than as the items."""
    order = array("q", range(n))
    random.Random(f"{seed}/{split}/{task}").shuffle(order)
    return order[:k].tolist()


def sample(items: list[dict], k: int, seed: int, split: str, task: str) -> list[dict]:
    """k items (all if fewer), chosen and ordered by a shuffle seeded with (seed, split, task)."""
    items = list(items)
    return [items[i] for i in sample_order(len(items), k, seed, split, task)]


def build_sft(corpus: datasets.DatasetDict, cfg, seed: int, instructions: list[dict] = (),
              val_fraction: float = 0.05, test_fraction: float = 0.05) -> datasets.DatasetDict:
    """SFT train/val/test from the corpus (cfg: SFTConfig) and optional prompt/response instruction dicts."""
    split_of = assign_splits(map(str, range(len(instructions))), val_fraction, test_fraction, seed) \
        if len(instructions) >= 3 else {str(i): "train" for i in range(len(instructions))}
    out = {}
    for split in SPLITS:
        k = cfg.max_train_items if split == "train" else cfg.max_eval_items
        rows = []
        for task, items in play_items(corpus[split], cfg.tasks, cfg.passage_lines).items():
            rows += [{"task": task, **it} for it in sample(items, k, seed, split, task)]
        extra = [{"task": "instructions", "doc": f"instructions/{i}", **it}  # each its own document
                 for i, it in enumerate(instructions) if split_of[str(i)] == split]
        rows += sample(extra, len(extra) if split == "train" else k, seed, split, "instructions")
        out[split] = to_dataset(sample(rows, len(rows), seed, split, "mix"), SFT_FEATURES)
    return datasets.DatasetDict(out)


def cls_passages(row: dict, n_lines: int) -> list[str]:
    """Non-overlapping windows of n verse lines (the last one may be shorter) of a corpus row."""
    if row["speeches"]:
        lines = [x for _, t in speeches_of(row) for x in verse_lines(t)]
    else:
        lines = [x for x in row["text"].split("\n") if x.strip()]
    windows = ["\n".join(lines[i:i + n_lines]) for i in range(0, len(lines), n_lines)]
    return [w for w in windows if len(w) >= MIN_PASSAGE_CHARS]


def build_cls(corpus: datasets.DatasetDict, cfg, seed: int) -> datasets.DatasetDict:
    """Passage -> genre train/val/test (cfg: ClsConfig); empty when the corpus has no genres."""
    names = sorted({g for split in SPLITS for g in corpus[split]["genre"] if g})
    features = datasets.Features({"doc": datasets.Value("string"), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    out = {}
    for split in SPLITS:  # the candidates: each labelled row's passages, in order; counted, then the chosen built
        ds, n = corpus[split], cfg.passage_lines
        starts = list(itertools.accumulate((len(cls_passages(row, n)) if row["genre"] else 0 for row in ds),
                                           initial=0))  # candidate i is passage i - starts[r] of row r
        k = cfg.max_train_items if split == "train" else cfg.max_eval_items
        items = []
        for i in sample_order(starts[-1], k, seed, split, "cls"):
            r = bisect.bisect_right(starts, i) - 1
            row = ds[r]
            items.append({"doc": row["doc"], "text": cls_passages(row, n)[i - starts[r]],
                          "label": names.index(row["genre"])})
        out[split] = to_dataset(items, features)
    return datasets.DatasetDict(out)


def task_stats(sft: datasets.DatasetDict, cls: datasets.DatasetDict) -> dict:
    """Numeric counts: SFT items per split and task, classification items per split and label."""
    stats = {"sft": {}, "cls": {}}
    for split, ds in sft.items():
        tasks = ds["task"]
        stats["sft"][split] = {"items": len(ds), **{t: tasks.count(t) for t in sorted(set(tasks))}}
    names = cls["train"].features["label"].names
    for split, ds in cls.items():
        labels = ds["label"]
        stats["cls"][split] = {"items": len(ds), **{n: labels.count(i) for i, n in enumerate(names)}}
    return stats
