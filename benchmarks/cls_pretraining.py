"""Does pretraining help the genre classifier? One plain fine-tuning loop on the default run's genre data,
the same recipe for every backbone (the classify stage's: mean over the non-padding tokens' final states,
AdamW at lr 5e-4 with the fresh head at 10x, weight decay 0.1, batch 16, warm-up 60 then cosine to 0.1x,
clipping at 1.0; --seed, default 0):

- bert:        the run's masked-LM encoder (models/encoder) under BertClassifier's pooler and classifier
- bert-random: the same architecture from its initialization, no pretraining
- gpt:         the run's pretrained decoder (models/decoder) as a GPTClassifier: its final normalized states,
               pooled by their mean or the last token's (--gpt-pooling), under a linear head (GPT-1's recipe)
- gpt-random:  the same from its initialization

each with all train labels (3000 steps) and with the first 2000 (500 steps, as the classify stage; --steps
sets either), beside the bag-of-words
baseline (tinylm.evaluation.baselines, its l2 picked on val) fit on the same labels. Prints test accuracy
on the run's test split and train accuracy on the first 400 training items.

    python benchmarks/cls_pretraining.py                       # after `make run`; about 30 min on 2 cores
    python benchmarks/cls_pretraining.py --labels 2000 --backbones bert gpt
    python benchmarks/cls_pretraining.py --labels 2000 --backbones gpt --gpt-pooling last --seed 1 --steps 1000
"""

import argparse
import time
import warnings
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from torch import nn

from tinylm.data.special_tokens import PAD
from tinylm.data.tokens import load_tokenizer
from tinylm.evaluation.baselines import fit_bow_classifier
from tinylm.evaluation.generation import pad_batch
from tinylm.evaluation.metrics import classifier_hits
from tinylm.models import build_classifier, classifier_from_pretrained
from tinylm.models.io import load_pretrained
from tinylm.training.optim import build_optimizer, lr_at

ROOT = Path(__file__).resolve().parents[1]
STEPS = {2000: 500}  # labels -> fine-tuning steps (the classify stage's); all labels: 3000
BACKBONES = ("bert", "bert-random", "gpt", "gpt-random")


def backbone(name: str, num_labels: int, pooling: str) -> tuple[nn.Module, dict]:
    """The classifier and its head's lr_scale for build_optimizer."""
    pretrained = load_pretrained(ROOT / "models" / ("encoder" if name.startswith("bert") else "decoder"))
    pooling = pooling if name.startswith("gpt") else "mean"
    model = build_classifier(pretrained.config, num_labels, pooling) if name.endswith("-random") \
        else classifier_from_pretrained(pretrained, num_labels, pooling)
    return model, {"pooler.": 10.0, "classifier.": 10.0}


def fine_tune(model: nn.Module, lr_scale: dict, train: list[dict], steps: int, pad_id: int, seed: int) -> None:
    opt = build_optimizer(model, 5e-4, 0.1, lr_scale=lr_scale)
    base = [g["lr"] for g in opt.param_groups]
    order, g = [], torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        if not order:
            order = torch.randperm(len(train), generator=g).tolist()
        rows = [train[order.pop()] for _ in range(min(16, len(order)))]
        ids, mask = pad_batch([r["input_ids"] for r in rows], pad_id, left=False)
        loss = F.cross_entropy(model(ids, mask), torch.tensor([r["labels"] for r in rows]))
        factor = lr_at(step, 1.0, 0.1, 60, steps)
        for group, lr in zip(opt.param_groups, base, strict=True):
            group["lr"] = lr * factor
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[0, 2000], help="train labels (0: all)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--gpt-pooling", default="mean", choices=("mean", "last"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="fine-tuning steps (default: 3000 for all labels, 500 for 2000)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    sets = datasets.load_from_disk(str(ROOT / "data" / "tokens" / "cls"))
    pad_id = load_tokenizer(ROOT / "artifacts" / "tokenizer" / "tokenizer.json").token_to_id(PAD)
    num_labels = sets["train"].features["label"].num_classes
    test = sets["test"].select_columns(["input_ids", "labels"]).to_list()
    print("| labels | backbone | test acc | train acc (400) | s |\n| ---: | --- | ---: | ---: | ---: |")
    for n in args.labels:
        n = n or len(sets["train"])
        part = sets["train"].select(range(min(n, len(sets["train"]))))
        train = part.select_columns(["input_ids", "labels"]).to_list()
        bow = fit_bow_classifier(part["text"], part["labels"], sets["val"]["text"], sets["val"]["labels"],
                                 num_labels)
        bow_hits = [int(p == y) for p, y in zip(bow.predict(sets["test"]["text"]), sets["test"]["labels"],
                                                strict=True)]
        print(f"| {len(train)} | bag-of-words (l2 {bow.l2:g}) | {sum(bow_hits) / len(bow_hits):.4f} | | |",
              flush=True)
        for name in args.backbones:
            torch.manual_seed(args.seed)
            model, lr_scale = backbone(name, num_labels, args.gpt_pooling)
            start = time.perf_counter()
            fine_tune(model, lr_scale, train, args.steps or STEPS.get(n, 3000), pad_id, args.seed)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                acc = sum(classifier_hits(model, test, pad_id, 64)) / len(test)
                train_acc = sum(classifier_hits(model, train[:400], pad_id, 64)) / min(400, len(train))
            print(f"| {len(train)} | {name} | {acc:.4f} | {train_acc:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
