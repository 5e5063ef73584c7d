"""BERT masked-LM pretraining: corrupt 15% of non-special tokens (80/10/10, see masking.py), predict the
originals; loss and accuracy count the chosen positions only. Validation masks with a fixed generator per
batch, so val numbers are comparable across runs."""

import torch

from tinylm.data.masking import mask_tokens
from tinylm.models import ModelConfig, build_model
from tinylm.training.base import TinyLMModule
from tinylm.training.losses import mlm_loss


class MaskedLMModule(TinyLMModule):
    def __init__(self, model_config: dict, optim: dict, mask_token_id: int, special_ids: list[int],
                 seed: int = 0, mask_rate: float = 0.15):
        super().__init__(optim, seed)
        self.save_hyperparameters()
        self.model = build_model(ModelConfig(**model_config))
        if self.model.config.arch != "bert":
            raise ValueError(f"MaskedLMModule trains BERT encoders, got arch={self.model.config.arch!r}")
        self.mask_token_id, self.mask_rate = mask_token_id, mask_rate
        self.register_buffer("special_ids", torch.tensor(special_ids, dtype=torch.long), persistent=False)

    def _step(self, batch, generator=None):
        inputs, labels = mask_tokens(batch["input_ids"], mask_token_id=self.mask_token_id,
                                     special_ids=self.special_ids, vocab_size=self.model.config.vocab_size,
                                     rate=self.mask_rate, generator=generator,
                                     attention_mask=batch.get("attention_mask"))
        logits = self.model(inputs, batch.get("attention_mask"))
        chosen = labels != -100
        n = chosen.sum()
        acc = ((logits.argmax(-1) == labels) & chosen).sum() / n.clamp(min=1)  # no boolean indexing: no host sync
        return mlm_loss(logits, labels), acc, n

    def training_step(self, batch, batch_idx):
        loss, acc, _ = self._step(batch)
        self.log_train("train/loss", loss)
        self.log_train("train/mlm_acc", acc)
        self.count_tokens(batch["input_ids"].numel())
        return self.check_finite(loss)

    def validation_step(self, batch, batch_idx):
        g = torch.Generator(device=batch["input_ids"].device).manual_seed(self.seed * 7919 + batch_idx)
        loss, acc, n = self._step(batch, g)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=int(n), sync_dist=True)
        self.log("val/mlm_acc", acc, on_epoch=True, batch_size=int(n), sync_dist=True)
