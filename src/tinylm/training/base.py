"""What every tinylm LightningModule shares: the optimiser and schedule, gradient clipping, per-step seeding,
gradient norm, throughput and MFU logging, and a hard stop on a non-finite loss, gradient norm or weight.

Per-step seeding: before each training batch the global RNG is seeded from (seed, micro-batch index, rank),
the micro-batch index being global step * accumulate_grad_batches + position within the accumulation, so
dropout and MLM masks depend only on the step and differ between the micro-batches of one step. A run
resumed from a checkpoint therefore continues bit-for-bit as the uninterrupted run would have.

No host-device sync between logging steps: on a GPU every `.item()` or `if tensor:` stalls the host until
the queued kernels finish. Metrics are logged only on logging steps (every `log_every` optimizer steps, and
the last); the non-finite check keeps the first step whose loss or gradient norm was not finite in a device
tensor and reads it on logging steps; clipping scales the gradients by min(1, max_norm / ||g||) on the
device. Before a checkpoint is written (one sync), that record and every weight are checked. So a non-finite
loss or gradient stops training at the next logging step or checkpoint, whichever comes first, naming the
step where it first appeared, and no checkpoint with non-finite weights is ever written: last.ckpt stays
the last good one.

Bits per byte, which compares language models across tokenizers (special tokens count 0 bytes):

    val/bpb = sum_t CE(t) / (ln 2 * sum_t bytes(y_t))   over the validation targets y_t

MFU (PaLM appendix B): model FLOPs per token = 6 N + 12 L T d, N the parameters that multiply: all but the
embedding tables (lookups), plus the (V, d) output layer once where it is the token table (tied embeddings,
as nanoGPT's estimate counts it); achieved FLOP/s = tokens/s * that, divided by the accelerator's peak (bf16
dense; only logged on a known GPU).
"""

import math
import time

import pytorch_lightning as pl
import torch

from tinylm.nn.attention import sdpa_backend
from tinylm.training.optim import OptimConfig, build_optimizer, build_scheduler

PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H200": 989e12, "H100": 989e12,
                   "A100": 312e12, "L40S": 362e12, "A10": 125e12, "RTX 4090": 165e12, "V100": 125e12}


def peak_flops(device: torch.device) -> float | None:
    """The bf16 dense peak FLOP/s of a known CUDA GPU, else None: the first key of PEAK_BF16_FLOPS in its name
    (the PCIe and NVL cards before their SXM namesakes)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_for(torch.cuda.get_device_name(device))


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class TinyLMModule(pl.LightningModule):
    log_ppl = False  # language models also log val/ppl = exp(val/loss)
    vocab_logits = True  # the model ends in the (V, d) output layer (the LMs; not a classifier)

    def __init__(self, optim: dict, seed: int = 0):
        super().__init__()
        self.optim, self.seed = OptimConfig(**optim), seed
        self._t0, self._tokens, self._first_bad, self._dims = None, 0, None, None
        self._micro, self._train_sums = 0, {}  # the micro-batch's place in its step; metric sums over the step
        self.token_bytes = None

    # -- optimisation ------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before the strategy wraps the model (Lightning calls this first): each parameter's number of
        dimensions, which weight decay goes by (FSDP then leaves every parameter a 1-D shard)."""
        self._dims = {id(p): p.dim() for p in self.model.parameters()}

    def configure_optimizers(self):
        o = self.optim
        if o.optimizer == "muon" and self._trainer is not None and "FSDP" in type(self.trainer.strategy).__name__:
            raise ValueError("optimizer muon cannot run under FSDP: Muon orthogonalizes whole weight matrices and "
                             "FSDP shards them; use optimizer adamw, or strategy ddp")
        fused = o.fused
        if fused is None:  # fp16's GradScaler must unscale before clipping: only an unfused optimizer lets it
            fp16 = self._trainer is not None and self.trainer.precision == "16-mixed"
            fused = self.device.type == "cuda" and not fp16
        opt = build_optimizer(self.model, o.lr, o.weight_decay, o.betas, fused=fused, optimizer=o.optimizer,
                              lr_scale=o.lr_scale, dims=self._dims)
        sched = build_scheduler(opt, o.lr, o.min_lr, o.warmup_steps, o.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def logging_step(self) -> bool:
        """Whether the optimizer step being computed logs its metrics: every log_every steps, and the last."""
        if self._trainer is None:
            return True
        step = self.global_step + 1  # global_step counts finished optimizer steps
        return step % self.trainer.log_every_n_steps == 0 or step == self.trainer.max_steps

    def on_train_start(self):
        """Say (and log as the param `attention_kernel`) which attention kernel this run trains with."""
        kernel = self.attention_kernel()
        self.print(f"attention: {kernel}")
        if self.logger:
            self.logger.log_hyperparams({"attention_kernel": kernel})

    def attention_kernel(self) -> str:
        """The config's kernel; for SDPA, also the backend it picks at this run's shapes, device and dtype."""
        cfg = self.model.config
        if cfg.attention != "sdpa":
            return cfg.attention
        dtype = torch.bfloat16 if "bf16" in str(self.trainer.precision) else \
            torch.float16 if "16" in str(self.trainer.precision) else torch.float32
        q = torch.zeros(1, cfg.n_head, cfg.block_size, cfg.head_dim, device=self.device, dtype=dtype)  # (B, nh, T, hs)
        return f"sdpa ({sdpa_backend(q, q, q, causal=cfg.arch == 'gpt')} on {self.device.type}, {dtype})"

    def on_train_batch_start(self, batch, batch_idx):
        acc = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        self._micro = batch_idx % acc
        micro = self.global_step * acc + self._micro
        torch.manual_seed(self.seed * 1_000_003 + micro * 1009 + self.global_rank)
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_before_optimizer_step(self, optimizer):
        """Clip the global gradient norm to grad_clip (on the device), record it if not finite, log it on logging
        steps. With fp16's GradScaler an inf norm is no fault: the scaler skips that step and lowers its scale."""
        log = self.logging_step()
        sharded = getattr(self.trainer.strategy.model, "clip_grad_norm_", None) if self._trainer else None
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if sharded is not None:  # FSDP: the norm of every rank's shards (a collective), clipped alike on all
            norm = sharded(self.optim.grad_clip or math.inf)
        elif self.optim.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.optim.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer else None
        if scaler is None:
            self._record_bad(norm)  # a finite loss can still have inf gradients (clipping turns them into NaN)
        if log:
            self.log("train/grad_norm", norm, on_step=True, rank_zero_only=True)
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, rank_zero_only=True)
            if self._t0 is not None:  # inside a Trainer's loop
                self._log_throughput()

    def _log_throughput(self) -> None:
        """tokens/s (and MFU on a known GPU) since the previous logging step, which synchronised."""
        dt = time.perf_counter() - self._t0
        tps = self._tokens / max(dt, 1e-9) * self.trainer.world_size
        self.log("train/tokens_per_s", tps, on_step=True, rank_zero_only=True)
        peak = peak_flops(self.device)
        if peak:
            self.log("train/mfu", tps * self.flops_per_token() / peak, on_step=True, rank_zero_only=True)
        self._t0, self._tokens = time.perf_counter(), 0

    def on_validation_epoch_end(self):
        loss = self.trainer.callback_metrics.get("val/loss")
        if self.log_ppl and loss is not None:
            self.log("val/ppl", torch.exp(loss), sync_dist=True)

    # -- helpers for subclasses --------------------------------------------------------------------------------
    def log_train(self, name: str, value: torch.Tensor) -> None:
        """Log a training metric on logging steps only (each log is a host sync on a GPU): its mean over the
        step's micro-batches, summed on the device until the last one."""
        if not self.logging_step():
            return
        acc = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        total = self._train_sums.pop(name, 0) + value.detach()
        if self._micro < acc - 1:
            self._train_sums[name] = total
        else:
            self.log(name, total / acc, on_step=True, rank_zero_only=True)

    def set_token_bytes(self, token_bytes: list[int] | None) -> None:
        """The tokenizer's UTF-8 bytes per token id (`BPETokenizer.token_bytes`), for val/bpb; ids past the
        tokenizer's (a padded vocabulary) count 0 bytes."""
        if token_bytes is None:
            return
        vocab = self.model.config.vocab_size
        if len(token_bytes) > vocab:
            raise ValueError(f"token_bytes has {len(token_bytes)} entries, more than vocab_size={vocab}: pass the "
                             "model's own tokenizer's")
        self.token_bytes = torch.zeros(vocab, dtype=torch.long)
        self.token_bytes[:len(token_bytes)] = torch.tensor(token_bytes, dtype=torch.long)

    def log_val_loss(self, loss: torch.Tensor, labels: torch.Tensor) -> None:
        """val/loss (mean over targets != -100) and, with token_bytes, val/bpb: each logged per batch with its
        targets or bytes as weight, so the epoch values are exact."""
        valid = labels[labels != -100]
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=valid.numel(), sync_dist=True)
        if self.token_bytes is not None:
            nbytes = int(self.token_bytes[valid.cpu()].sum())
            self.log("val/bpb", loss * valid.numel() / (math.log(2) * max(nbytes, 1)), on_epoch=True,
                     batch_size=nbytes, sync_dist=True)

    def count_tokens(self, n: int) -> None:
        self._tokens += int(n)

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """Record a non-finite loss; on logging steps raise FloatingPointError for any recorded (module doc)."""
        self._record_bad(loss)
        if self.logging_step():
            self.raise_if_not_finite()
        return loss

    def _record_bad(self, value: torch.Tensor) -> None:
        """Keep, on the device (no sync), the first step whose `value` (loss, gradient norm) was not finite."""
        first = self._first_bad
        if first is None or first.device != value.device:
            first = torch.full((), -1, dtype=torch.long, device=value.device)
        bad = ~torch.isfinite(value.detach()) & (first < 0)
        self._first_bad = torch.where(bad, torch.full_like(first, self.global_step), first)

    def raise_if_not_finite(self, weights: bool = False) -> None:
        """FloatingPointError naming the first step with a non-finite loss or gradient norm; with `weights`
        (before a checkpoint), also if any weight is not finite. One host sync."""
        first = -1 if self._first_bad is None else int(self._first_bad)
        what = "training loss or gradient norm"
        if first < 0 and weights and not bool(torch.stack([torch.isfinite(p).all() for p in self.parameters()]).all()):
            first, what = self.global_step, "weights"
        if first >= 0:
            fix = ("at step 0, before any update, the learning rate is not the cause: check the model config "
                   "(norm_eps, rope_base, init) and the data" if first == 0 else
                   "Lower the learning rate or enable gradient clipping (trainer.grad_clip)")
            raise FloatingPointError(
                f"non-finite {what} at step {first}: stopping; the last checkpoint written before it (last.ckpt), "
                f"if any, is kept. {fix}; a batch without targets (every label -100) gives a NaN loss too.")

    def flops_per_token(self) -> float:
        cfg = self.model.config
        tables = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}
        n = sum(p.numel() for p in self.model.parameters() if id(p) not in tables)
        if self.vocab_logits and cfg.tie_embeddings:
            n += cfg.vocab_size * cfg.n_embd
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
