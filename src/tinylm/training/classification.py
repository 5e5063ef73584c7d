"""Sequence classification (the genre classifier): cross-entropy on the logits of a BertClassifier ([CLS] or
mean pooling) or a GPTClassifier (mean or last-token pooling); the backbone starts from its pretrained
weights (masked LM or causal LM), and the fresh head (pooler, classifier) learns at head_lr_scale x lr.
Validation reports loss and accuracy."""

import torch.nn.functional as F

from tinylm.models import ModelConfig, build_classifier
from tinylm.training.base import TinyLMModule


class SequenceClassificationModule(TinyLMModule):
    vocab_logits = False  # its head maps to labels: no (V, d) output layer

    def __init__(self, model_config: dict, num_labels: int, optim: dict, seed: int = 0, pooling: str = "cls",
                 head_lr_scale: float = 1.0):
        super().__init__({**optim, "lr_scale": {"pooler.": head_lr_scale, "classifier.": head_lr_scale}}, seed)
        self.save_hyperparameters()
        self.model = build_classifier(ModelConfig(**model_config), num_labels, pooling)

    def _step(self, batch):
        logits = self.model(batch["input_ids"], batch.get("attention_mask"))
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return loss, (logits.argmax(-1) == batch["labels"]).float().mean()

    def training_step(self, batch, batch_idx):
        loss, acc = self._step(batch)
        self.log_train("train/loss", loss)
        self.log_train("train/acc", acc)
        self.count_tokens(batch["input_ids"].numel())
        return self.check_finite(loss)

    def validation_step(self, batch, batch_idx):
        loss, acc = self._step(batch)
        n = batch["labels"].numel()
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/acc", acc, on_epoch=True, batch_size=n, sync_dist=True)
