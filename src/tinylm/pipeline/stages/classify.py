"""Stage classify: fine-tune a pretrained model to name a passage's genre: the decoder (GPTClassifier, GPT-1's
recipe) or the BERT encoder (BertClassifier), as cls.backbone says, pooled as cls.pooling says; reports
validation and test accuracy beside the majority-class baseline.

    python pipelines/classify.py [hydra overrides, e.g. cls.train.max_steps=50]
"""


import datasets

from tinylm.data.special_tokens import PAD
from tinylm.data.tokens import load_tokenizer
from tinylm.evaluation.metrics import classifier_hits, majority_label
from tinylm.models import classifier_from_pretrained
from tinylm.models.io import load_pretrained
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.paths import MODELS, TOKENIZER, TOKENS
from tinylm.pipeline.training_stage import datamodule, optim_dict, prepare, train
from tinylm.training.classification import SequenceClassificationModule
from tinylm.training.datamodules import pad_collate


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    tcfg = cfg.trainer_for("cls")
    backbone = load_pretrained(MODELS / cfg.cls.backbone)  # fails first, with the fix, if pretraining is missing
    tok = load_tokenizer(TOKENIZER)
    prepare(tcfg)
    sets = datasets.load_from_disk(str(TOKENS / "cls"))
    num_labels = sets["train"].features["label"].num_classes  # every genre, whether or not train has it
    pooling = cfg.cls.pooling
    module = SequenceClassificationModule(backbone.config.to_dict(), num_labels, optim_dict(tcfg), seed=tcfg.seed,
                                          pooling=pooling, head_lr_scale=cfg.cls.head_lr_scale)
    module.model.load_state_dict(classifier_from_pretrained(backbone, num_labels, pooling).state_dict())
    rows = {s: sets[s].select_columns(["input_ids", "labels"]).to_list() for s in sets}
    collate = pad_collate(tok.token_to_id(PAD))
    dm = datamodule(rows["train"], rows["val"], tcfg, collate=collate)

    def test_metrics(m) -> dict:
        majority = majority_label(sets["train"]["labels"], num_labels)
        hits = classifier_hits(m.model.eval(), rows["test"], tok.token_to_id(PAD), tcfg.batch_size)
        return {"test_acc": sum(hits) / len(hits),
                "test_majority_acc": sum(r["labels"] == majority for r in rows["test"]) / len(rows["test"]),
                "num_labels": num_labels}

    params = {"cls": {k: v for k, v in cfg.to_dict()["cls"].items() if k != "train"},
              "model": backbone.config.to_dict()}
    train(stage="classify", name="classifier", experiment=cfg.name, module=module, datamodule=dm, tcfg=tcfg,
          params=params, inputs=[TOKENIZER, MODELS / cfg.cls.backbone / "model.safetensors",
                                 *sorted((TOKENS / "cls").rglob("*.arrow"))],
          export_hf=False, extra_metrics=test_metrics, tracking=cfg.tracking)
