"""AdamW with decoupled weight decay on matrices only, and the warm-up + cosine learning-rate schedule.

Decay groups (GPT-2 / nanoGPT practice): every parameter with >= 2 dims is decayed (linear weights,
token embeddings) except position tables; biases and norm gains (1-D) are not. `no_decay` names extra
substrings to exempt.

Schedule (nanoGPT), for optimizer step s:
    s <  warmup:             lr * (s + 1) / warmup
    warmup <= s <= max_steps: min_lr + 0.5 (1 + cos(pi * (s - warmup) / (max_steps - warmup))) (lr - min_lr)
    s >  max_steps:           min_lr
"""

import math

import torch
from torch import nn

NO_DECAY = ("wpe", "position_embeddings", "token_type_embeddings")


def param_groups(model: nn.Module, weight_decay: float, no_decay: tuple[str, ...] = NO_DECAY) -> list[dict]:
    decay, keep = [], []
    for name, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not any(s in name for s in no_decay) else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
                    no_decay: tuple[str, ...] = NO_DECAY) -> torch.optim.AdamW:
    fused = next(model.parameters()).is_cuda
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
