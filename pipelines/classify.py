"""Stage classify: fine-tune the pretrained BERT encoder to name a passage's genre from its [CLS] token;
reports validation and test accuracy beside the majority-class baseline.

    python pipelines/classify.py [hydra overrides, e.g. cls.train.max_steps=50]
"""

import sys

import datasets
import torch
from common import MODELS, TOKENIZER, TOKENS, config
from training import optim_dict, prepare, train

from tinylm.data.special_tokens import PAD
from tinylm.data.tokens import load_tokenizer
from tinylm.models import BertClassifier
from tinylm.models.io import load_pretrained
from tinylm.training.classification import SequenceClassificationModule
from tinylm.training.datamodules import StepDataModule, pad_collate


def accuracy(module, rows: list[dict], collate, batch_size: int) -> float:
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i:i + batch_size])
            correct += int((module.model(b["input_ids"], b["attention_mask"]).argmax(-1) == b["labels"]).sum())
    return correct / len(rows)


def main(argv: list[str]) -> None:
    cfg = config(argv)
    tcfg = cfg.trainer_for("cls")
    encoder = load_pretrained(MODELS / "encoder")  # fails first, with the fix, if pretraining is missing
    tok = load_tokenizer(TOKENIZER)
    prepare(tcfg)
    sets = datasets.load_from_disk(str(TOKENS / "cls"))
    labels = sets["train"].features["labels"]
    num_labels = labels.num_classes if hasattr(labels, "num_classes") else len(set(sets["train"]["labels"]))
    module = SequenceClassificationModule(encoder.config.to_dict(), num_labels, optim_dict(tcfg), seed=tcfg.seed)
    module.model.load_state_dict(BertClassifier.from_pretrained_mlm(encoder, num_labels).state_dict())
    rows = {s: sets[s].select_columns(["input_ids", "labels"]).to_list() for s in sets}
    collate = pad_collate(tok.token_to_id(PAD))
    dm = StepDataModule(rows["train"], rows["val"], batch_size=tcfg.batch_size, seed=tcfg.seed,
                        max_steps=tcfg.max_steps, accumulate=tcfg.accumulate_grad_batches, collate=collate,
                        num_workers=tcfg.num_workers, val_batch_size=tcfg.batch_size)

    def test_metrics(m) -> dict:
        counts = torch.bincount(torch.tensor(sets["train"]["labels"]), minlength=num_labels)
        majority = int(counts.argmax())
        return {"test_acc": accuracy(m, rows["test"], collate, tcfg.batch_size),
                "test_majority_acc": sum(r["labels"] == majority for r in rows["test"]) / len(rows["test"]),
                "num_labels": num_labels}

    params = {"cls": {k: v for k, v in cfg.to_dict()["cls"].items() if k != "train"}, "model": encoder.config.to_dict()}
    train(stage="classify", name="encoder-cls", experiment=cfg.name, module=module, datamodule=dm, tcfg=tcfg,
          params=params, inputs=[TOKENIZER, MODELS / "encoder" / "model.safetensors",
                                 *sorted((TOKENS / "cls").rglob("*.arrow"))],
          export_hf=False, extra_metrics=test_metrics, tracking=cfg.tracking)


if __name__ == "__main__":
    main(sys.argv[1:])
