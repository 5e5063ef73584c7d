"""Encoder-decoder training on prompt -> response pairs with label smoothing 0.1, as in the original
Transformer: decoder input = [BOS] + response, labels = response + [EOS] (-100 on padding).
Validation reports plain cross-entropy, perplexity and, given `token_bytes`, bits per byte of the responses."""

from tinylm.models import ModelConfig, build_model
from tinylm.training.base import TinyLMModule
from tinylm.training.losses import label_smoothed_cross_entropy, sft_loss


class Seq2SeqModule(TinyLMModule):
    log_ppl = True

    def __init__(self, model_config: dict, optim: dict, seed: int = 0, label_smoothing: float = 0.1,
                 loss_average: str = "token", token_bytes: list[int] | None = None):
        super().__init__(optim, seed)
        self.save_hyperparameters(ignore=["token_bytes"])
        self.model = build_model(ModelConfig(**model_config))
        if self.model.config.arch != "seq2seq":
            raise ValueError(f"Seq2SeqModule trains encoder-decoders, got arch={self.model.config.arch!r}")
        self.label_smoothing, self.loss_average = label_smoothing, loss_average
        self.set_token_bytes(token_bytes)

    def _logits(self, batch):
        return self.model(batch["src_ids"], batch["tgt_ids"], batch.get("src_mask"), batch.get("tgt_mask"))

    def training_step(self, batch, batch_idx):
        loss = sft_loss(self._logits(batch), batch["labels"], self.label_smoothing, self.loss_average,
                        batch.get("step_targets"))  # the step's response tokens per micro-batch, as in CausalLMModule
        self.log_train("train/loss", loss)
        self.count_tokens(batch["src_ids"].numel() + batch["tgt_ids"].numel())
        return self.check_finite(loss)

    def validation_step(self, batch, batch_idx):
        loss = label_smoothed_cross_entropy(self._logits(batch), batch["labels"], 0.0)
        self.log_val_loss(loss, batch["labels"])
