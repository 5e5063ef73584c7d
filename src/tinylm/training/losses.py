"""Losses, in plain PyTorch (no Lightning here).

Label smoothing, Szegedy et al. 2016 form (the same value as F.cross_entropy(..., label_smoothing=eps)):
the target distribution is q = (1 - eps) * onehot(y) + eps / V spread over ALL V classes (the true class
included), and the loss is the cross-entropy H(q, p) = (1 - eps) * (-log p_y) + eps * mean_c(-log p_c).
The Annotated Transformer instead builds q with eps / (V - 2) on every class except the target and the
padding index and minimises KL(q || p) = H(q, p) - H(q): a different constant (the entropy of q), a
slightly different q, and gradients that differ accordingly; we follow torch so values are comparable.

SFT loss: labels[t] is the target of logits[t] (already shifted); -100 marks prompt and padding, so only
response tokens count. average="token": the mean over every response token of the batch (long responses
weigh more; with gradient accumulation or several ranks, of the optimizer step: see target_weights);
average="sample": the mean over samples of each sample's mean over its response tokens, so a one-token answer
(a speaker's name) counts as much as a four-line continuation. For pretraining rows, all of one length, the
two are equal.
MLM loss: cross-entropy at masked positions only (labels -100 elsewhere).
Max-z loss (Baichuan 2): z_weight * mean_t(max_c logits_tc ^ 2), which keeps logits from drifting large
and stabilises training and inference-time sampling.
"""

import torch
import torch.nn.functional as F


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                                 ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Mean over non-ignored targets of (1 - eps) * NLL + eps * mean_c(-log p_c); logits (..., V).
    reduction="none": the per-target values instead, flat, 0 at ignored targets.

    Computed by torch's fused cross-entropy kernel, which implements exactly this form (an explicit
    log_softmax + gather + boolean mask made a whole CPU training step 1.4x slower); tests check the value
    against the formula by hand.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=ignore_index, label_smoothing=smoothing, reduction=reduction)


def target_weights(labels: torch.Tensor, average: str = "token",
                   step_targets: torch.Tensor | None = None) -> torch.Tensor:
    """Per-target weights w (B, T) with sft_loss = sum_t w_t CE_eps(logits_t, labels_t): "token": 1 / the
    number of response tokens; "sample": 1 / (the sample's response tokens x the samples that have any).
    step_targets (a scalar, or (B,) of one value): the token mode's denominator in place of this batch's count,
    the mean response tokens per micro-batch over the optimizer step (`StepBatchSampler`): the mean of the
    micro-batches' losses is then the mean over every response token of the step, as one large batch gives.
    A batch without response tokens gives NaN weights (0 / 0), which training stops on as a non-finite loss:
    checking here would stall the host every step on a GPU."""
    valid = labels != -100
    counts = valid.sum(-1)  # (B,)
    if average == "token":
        return valid / (counts.sum() if step_targets is None else step_targets.flatten()[0])
    if average != "sample":
        raise ValueError(f"average must be 'token' or 'sample', got {average!r}")
    return valid / (counts.clamp(min=1) * (counts > 0).sum())[:, None]


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0,
             average: str = "token", step_targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over response tokens, averaged per token or per sample (see the module docstring):
    logits (B, T, V), labels (B, T) with -100 elsewhere. GPT.forward(targets=...) computes the same value
    without materialising the logits. A batch with no response tokens is a ValueError (checked on CPU only:
    on a GPU the check would stall the host; the NaN loss it gives stops training there)."""
    if labels.device.type == "cpu" and (labels == -100).all():
        raise ValueError("the SFT loss got a batch with no response tokens (every label is -100): drop such samples")
    weights = target_weights(labels, average, step_targets)
    per_token = label_smoothed_cross_entropy(logits, labels, smoothing, reduction="none").view(labels.shape)
    return (per_token * weights).sum()


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-LM cross-entropy over the chosen positions (labels -100 everywhere else)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100)


def max_z_loss(logits: torch.Tensor, z_weight: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Baichuan 2's max-z loss: z_weight * sum_t w_t max_c(logits_t) ** 2, with the loss's own per-position
    weights w (B, T) from `target_weights` (so the same average: per token, per sample, or over the optimizer
    step given step_targets), or the mean over positions when weights is None."""
    z = logits.float().max(dim=-1).values.pow(2)  # (B, T)
    if weights is None:
        return z_weight * z.mean()
    return z_weight * (z * weights).sum()
