"""What every tinylm LightningModule shares: the optimiser and schedule, per-step seeding, gradient norm,
throughput and MFU logging, and a hard stop on a non-finite loss.

Per-step seeding: before each training batch the global RNG is seeded from (seed, micro-batch index, rank),
the micro-batch index being global step * accumulate_grad_batches + position within the accumulation, so
dropout and MLM masks depend only on the step and differ between the micro-batches of one step. A run
resumed from a checkpoint therefore continues bit-for-bit as the uninterrupted run would have.

MFU (PaLM appendix B): model FLOPs per token = 6 N + 12 L T d (N: non-embedding parameters), achieved
FLOP/s = tokens/s * that, divided by the accelerator's peak (bf16 dense; only logged on a known GPU).
"""

import time

import pytorch_lightning as pl
import torch

from tinylm.training.optim import build_optimizer, build_scheduler

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                   "RTX 4090": 165e12, "V100": 125e12}


class TinyLMModule(pl.LightningModule):
    log_ppl = False  # language models also log val/ppl = exp(val/loss)
    def __init__(self, optim: dict, seed: int = 0):
        super().__init__()
        self.optim, self.seed = dict(optim), seed
        self._t0, self._tokens = None, 0

    # -- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim
        opt = build_optimizer(self.model, o["lr"], o["weight_decay"], o.get("betas", (0.9, 0.95)))
        sched = build_scheduler(opt, o["lr"], o["min_lr"], o["warmup_steps"], o["max_steps"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx):
        acc = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        micro = self.global_step * acc + batch_idx % acc
        torch.manual_seed(self.seed * 1_000_003 + micro * 1009 + self.global_rank)
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, rank_zero_only=True)
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, rank_zero_only=True)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        tps = self._tokens / max(dt, 1e-9) * self.trainer.world_size
        self.log("train/tokens_per_s", tps, on_step=True, rank_zero_only=True)
        peak = self._peak_flops()
        if peak:
            self.log("train/mfu", tps * self.flops_per_token() / peak, on_step=True, rank_zero_only=True)
        self._t0, self._tokens = time.perf_counter(), 0

    def on_validation_epoch_end(self):
        loss = self.trainer.callback_metrics.get("val/loss")
        if self.log_ppl and loss is not None:
            self.log("val/ppl", torch.exp(loss), sync_dist=True)

    # -- helpers for subclasses --------------------------------------------------------------------------------
    def count_tokens(self, n: int) -> None:
        self._tokens += int(n)

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: stopping; the last good "
                "checkpoint (last.ckpt) is kept. Lower the learning rate or enable gradient clipping.")
        return loss

    def flops_per_token(self) -> float:
        cfg = self.model.config
        n = sum(p.numel() for p in self.model.parameters())
        n -= sum(p.numel() for name, p in self.model.named_parameters() if "wpe" in name or "position_emb" in name)
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size

    def _peak_flops(self) -> float | None:
        if not torch.cuda.is_available() or self.device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
