"""AdamW with decoupled weight decay on matrices only, and the warm-up + cosine learning-rate schedule.

Decay groups (GPT-2 / nanoGPT practice): every parameter with >= 2 dims is decayed (linear weights,
token embeddings) except position tables; biases and norm gains (1-D) are not. `no_decay` names extra
substrings to exempt.

Schedule (nanoGPT), for optimizer step s:
    s <  warmup:             lr * (s + 1) / warmup
    warmup <= s <= max_steps: min_lr + 0.5 (1 + cos(pi * (s - warmup) / (max_steps - warmup))) (lr - min_lr)
    s >  max_steps:           min_lr

Fused AdamW (one kernel for all parameters) is the default on CUDA. Lightning's mixed-precision plugin
refuses to clip gradients for an optimizer that unscales internally, as a fused one does, so tinylm clips in
its LightningModule (`TinyLMModule.on_before_optimizer_step`) and never asks Lightning to: clipping works
with every optimizer built here, and bf16 needs no gradient scaler. Under fp16 (`16-mixed`, a GradScaler)
the optimizer is not fused, so the gradients are unscaled before they are clipped.
"""

import math
from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    """What a LightningModule needs to build its optimizer and schedule (from the trainer config)."""

    lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 0.0  # max global gradient norm; 0: off
    fused: bool | None = None  # fused AdamW; None: on CUDA unless fp16 needs unscaled gradients

    def __post_init__(self):
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"optim: need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"optim: need 0 <= warmup_steps < max_steps, got {self.warmup_steps}, {self.max_steps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"optim: weight_decay={self.weight_decay} and grad_clip={self.grad_clip} must be >= 0")
        object.__setattr__(self, "betas", tuple(self.betas))

    @classmethod
    def of(cls, trainer) -> "OptimConfig":
        """The optimizer part of a trainer config (`tinylm.pipeline.config.TrainerConfig`: its same-named fields)."""
        return cls(**{f.name: getattr(trainer, f.name) for f in fields(cls) if hasattr(trainer, f.name)})

NO_DECAY = ("wpe", "position_embeddings", "token_type_embeddings")


def param_groups(model: nn.Module, weight_decay: float, no_decay: tuple[str, ...] = NO_DECAY) -> list[dict]:
    decay, keep = [], []
    for name, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not any(s in name for s in no_decay) else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
                    no_decay: tuple[str, ...] = NO_DECAY, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `param_groups`; fused=None: fused on CUDA, foreach elsewhere."""
    fused = next(model.parameters()).is_cuda if fused is None else fused
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay), lr=lr, betas=tuple(betas), eps=eps,
                             fused=fused or None)


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step > max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def build_scheduler(optimizer, lr: float, min_lr: float, warmup_steps: int, max_steps: int):
    """A per-step LambdaLR applying `lr_at` (factor relative to the base lr)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, lr, min_lr, warmup_steps, max_steps) / lr)
