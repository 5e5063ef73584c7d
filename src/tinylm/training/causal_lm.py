"""Decoder-only LM training: pretraining and supervised fine-tuning are one module.

    loss = mean over t with labels[t] != -100 of CE_eps(logits[t], labels[t])  (+ Baichuan max-z loss)

Pretraining batches label every next token; SFT batches put -100 on prompt and padding so only response
tokens count (the course's "SFT loss"), averaged per token or per sample (`loss_average`, see sft_loss).
Validation reports plain cross-entropy, perplexity exp(loss) and, given the tokenizer's `token_bytes`, bits
per byte (`TinyLMModule.log_val_loss`).

Gradient accumulation (and DDP) averages the micro-batches' losses, as nanoGPT and Lightning do. That is the
loss of one large batch: for pretraining windows (every micro-batch has B x T targets), for loss_average="sample"
(equal micro-batches of samples, the SFT default), and for loss_average="token" on SFT batches because each
micro-batch divides by the step's mean response tokens per micro-batch (`step_targets`, counted by the sampler
on every rank), not by its own count. Baichuan's max-z term takes the loss's own per-position weights, so it
is exact in the same cases. train/loss is the micro-batches' mean.
"""

from tinylm.models import ModelConfig, build_model
from tinylm.training.base import TinyLMModule
from tinylm.training.losses import max_z_loss, sft_loss, target_weights


class CausalLMModule(TinyLMModule):
    log_ppl = True

    def __init__(self, model_config: dict, optim: dict, seed: int = 0, label_smoothing: float = 0.0,
                 loss_average: str = "token", token_bytes: list[int] | None = None):
        super().__init__(optim, seed)
        self.save_hyperparameters(ignore=["token_bytes"])
        self.model = build_model(ModelConfig(**model_config))
        if self.model.config.arch != "gpt":
            raise ValueError(f"CausalLMModule trains decoder-only models, got arch={self.model.config.arch!r}")
        self.label_smoothing, self.loss_average = label_smoothing, loss_average
        self.set_token_bytes(token_bytes)

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask)

    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
        step = batch.get("step_targets")  # SFT: response tokens per micro-batch over the optimizer step
        w, z = self.model.config.z_loss_weight, 0.0
        weights = target_weights(labels, self.loss_average, step)  # (B, T)
        if w:  # the max-z loss needs the logits
            logits = self.model(ids, mask)
            loss = sft_loss(logits, labels, self.label_smoothing, self.loss_average, step)
            z = max_z_loss(logits, w, weights)
            self.log_train("train/z_loss", z)
        else:  # the output layer fused with the loss: no (B, T, V) logits
            loss = self.model(ids, mask, targets=labels, target_weights=weights, label_smoothing=self.label_smoothing)
        self.log_train("train/loss", loss)
        self.count_tokens(ids.numel())
        return self.check_finite(loss + z)

    def validation_step(self, batch, batch_idx):
        loss = self.model(batch["input_ids"], batch.get("attention_mask"), targets=batch["labels"])
        self.log_val_loss(loss, batch["labels"])
