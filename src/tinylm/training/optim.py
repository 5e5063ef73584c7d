"""AdamW with decoupled weight decay on matrices only, or Muon on the hidden matrices with AdamW on the rest,
and the warm-up + cosine learning-rate schedule.

Decay groups (GPT-2 / nanoGPT practice): every parameter with >= 2 dims is decayed (linear weights,
token embeddings) except position tables; biases and norm gains (1-D) are not. `no_decay` names extra
substrings to exempt.

Muon (`optimizer="muon"`, Keller Jordan 2024), for each hidden weight matrix W (A x B) with gradient G:

    M <- mu M + (1 - mu) G;  U = (1 - mu) G + mu M (Nesterov);  O = NS5(U / ||U||_F) ~ the U V^T of U's SVD
    W <- W (1 - lr wd) - lr 0.2 sqrt(max(A, B)) O          (0.2 sqrt(max(A, B)): O's RMS matches AdamW's)

NS5: five quintic Newton-Schulz steps X <- a X + (b X X^T + c (X X^T)^2) X, (a, b, c) = (3.4445, -4.775,
2.0315), on the wide orientation. torch.optim.Muon computes exactly this, always in bfloat16: on a CPU
without native bf16 (this project's 2-core box) that made a training step 4.6x slower, so `Muon` here runs
NS5 in bf16 on CUDA and fp32 elsewhere (tests: bit-equal to torch.optim.Muon in bf16).

As in modded-nanogpt and nanochat, Muon takes the 2-D weights of the Linear layers inside the Transformer
blocks; embeddings, norms, biases, the output layer and classifier heads stay with AdamW. `MuonAdamW` is the
two as one torch Optimizer, since Lightning's automatic optimization drives one: the outer optimizer lists
the inner ones' own param-group dicts, so the scheduler's lr reaches both, and its state dict holds both.

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
    optimizer: str = "adamw"  # or "muon": Muon on the blocks' matrices, AdamW on the rest
    lr_scale: dict[str, float] | None = None  # parameter-name prefix -> lr multiplier (param_groups)

    def __post_init__(self):
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"optim: need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"optim: need 0 <= warmup_steps < max_steps, got {self.warmup_steps}, {self.max_steps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"optim: weight_decay={self.weight_decay} and grad_clip={self.grad_clip} must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if any(not v > 0 for v in (self.lr_scale or {}).values()):
            raise ValueError(f"optim: every lr_scale must be > 0, got {self.lr_scale}")
        object.__setattr__(self, "betas", tuple(self.betas))

    @classmethod
    def of(cls, trainer) -> "OptimConfig":
        """The optimizer part of a trainer config (`tinylm.pipeline.config.TrainerConfig`: its same-named fields)."""
        return cls(**{f.name: getattr(trainer, f.name) for f in fields(cls) if hasattr(trainer, f.name)})

OPTIMIZERS = ("adamw", "muon")
NO_DECAY = ("wpe", "position_embeddings", "token_type_embeddings")


def param_groups(model: nn.Module, weight_decay: float, no_decay: tuple[str, ...] = NO_DECAY,
                 lr_scale: dict[str, float] | None = None, dims: dict[int, int] | None = None) -> list[dict]:
    """[decayed, not decayed] (the module doc), then the same split of the parameters whose name starts with a
    key of lr_scale, each such group with its "lr_scale" (a fine-tune's fresh head learning faster than the
    pretrained body); groups of scaled parameters come only when they have members. dims: id(parameter) ->
    its number of dimensions before a strategy wrapped the model (FSDP turns every parameter into a 1-D shard:
    by its own shape none would decay)."""
    groups = {}  # (scale, decayed) -> parameters
    for name, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        decay = (dims or {}).get(id(p), p.dim()) >= 2 and not any(s in name for s in no_decay)
        scale = next((v for prefix, v in (lr_scale or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((scale, decay), []).append(p)
    keys = [(1.0, True), (1.0, False), *sorted(k for k in groups if k[0] != 1.0)[::-1]]
    return [{"params": groups.get(k, []), "weight_decay": weight_decay if k[1] else 0.0, "lr_scale": k[0]}
            for k in keys]


def muon_params(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the Linear layers inside the Transformer blocks (tinylm.nn.block.Block)."""
    from tinylm.nn.block import Block

    return [m.weight for b in model.modules() if isinstance(b, Block)
            for m in b.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315)) -> torch.Tensor:
    """NS5 of a 2-D g (see the module doc), in g's dtype."""
    a, b, c = coefficients
    x = g.T if g.size(0) > g.size(1) else g
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if g.size(0) > g.size(1) else x


class Muon(torch.optim.Optimizer):
    """Muon on 2-D parameters (module doc); ns_dtype None: bfloat16 on CUDA, float32 elsewhere."""

    def __init__(self, params, lr: float, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_dtype: torch.dtype | None = None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov))
        if any(p.dim() != 2 for g in self.param_groups for p in g["params"]):
            raise ValueError("Muon takes 2-D parameters (weight matrices) only")
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                dtype = self.ns_dtype or (torch.bfloat16 if p.is_cuda else torch.float32)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(orthogonalize(update.to(dtype)), alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups flagged "muon", torch.optim.AdamW on the others, stepped as one."""

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.95), eps: float = 1e-8, fused: bool | None = None):
        super().__init__(groups, {"lr": lr})
        muon = [g for g in self.param_groups if g.get("muon")]
        if not muon or len(muon) == len(self.param_groups):
            raise ValueError("MuonAdamW needs groups flagged muon=True and groups without")
        self.muon = Muon(muon, lr=lr)
        self.adamw = torch.optim.AdamW([g for g in self.param_groups if not g.get("muon")], lr=lr,
                                       betas=tuple(betas), eps=eps, fused=fused or None)
        self._share_groups()

    def _share_groups(self) -> None:
        """List the inner optimizers' own group dicts (Muon's first): a scheduler setting lr here sets theirs."""
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self._share_groups()  # loading gave the inner optimizers new group dicts


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
                    no_decay: tuple[str, ...] = NO_DECAY, fused: bool | None = None,
                    optimizer: str = "adamw", lr_scale: dict[str, float] | None = None,
                    dims: dict[int, int] | None = None) -> torch.optim.Optimizer:
    """AdamW over `param_groups`, or MuonAdamW (Muon on `muon_params`, decayed; AdamW on the rest as
    `param_groups` splits them); fused=None: fused AdamW on CUDA, foreach elsewhere. A group's lr is
    lr x its lr_scale (the scheduler's factor multiplies each group's own)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    fused = next(model.parameters()).is_cuda if fused is None else fused
    groups = param_groups(model, weight_decay, no_decay, lr_scale, dims)
    for g in groups:
        scale = g.pop("lr_scale")
        if scale != 1.0:
            g["lr"] = lr * scale
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)
    hidden = {id(p) for p in muon_params(model)}
    muon = [{**g, "params": [p for p in g["params"] if id(p) in hidden], "muon": True} for g in groups]
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in hidden]} for g in groups]
    return MuonAdamW([*(g for g in muon if g["params"]), *(g for g in rest if g["params"])], lr, betas, eps, fused)


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
