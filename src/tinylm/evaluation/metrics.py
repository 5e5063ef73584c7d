"""Evaluation metrics.

- exact match: normalised strings equal (case, surrounding whitespace and punctuation ignored).
- chrF (Popović 2015) and BLEU (Papineni et al. 2002): corpus-level, via sacrebleu.
- perplexity: exp(mean next-token cross-entropy) over fixed windows of a token split.
- sequence log-probability: sum_t log p(y_t | prompt, y_<t) under teacher forcing (candidate_logprobs: many
  continuations of one prompt in one batch; best_candidate: the most likely one, by sum or per token).
- masked-LM accuracy: argmax at the corrupted positions (BERT's 15% / 80-10-10 masking, fixed seed).
- classifier hits: per item, 1 if the argmax class is the label; the majority class: the most frequent
  training label (the lowest id on a tie), the baseline a classifier has to beat.
- prediction shares: the share of items predicted as each class, n_c / n (a near-constant predictor shows).
"""

import math
import string

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.data.masking import mask_tokens
from tinylm.data.windows import FixedWindows, with_cls_sep
from tinylm.evaluation.generation import pad_batch


def normalize(s: str) -> str:
    """Lower case, whitespace runs as one space, surrounding whitespace and ASCII punctuation removed."""
    return " ".join(s.strip(string.punctuation + string.whitespace).lower().split())


def exact_match(preds: list[str], refs: list[str]) -> float:
    """Share of predictions equal to their reference after `normalize`."""
    if not refs:
        raise ValueError("exact_match of no references")
    return sum(normalize(p) == normalize(r) for p, r in zip(preds, refs, strict=True)) / len(refs)


def chrf(preds: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(preds, [refs]).score


def bleu(preds: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(preds, [refs]).score


@torch.no_grad()
def perplexity(model, tokens: np.ndarray, batch_size: int, n_batches: int) -> float:
    windows = FixedWindows(tokens, model.config.block_size, batch_size, n_batches)
    total, count = 0.0, 0
    for b in windows:
        logits = model(b["input_ids"])
        total += F.cross_entropy(logits.flatten(0, 1).float(), b["labels"].flatten(), reduction="sum").item()
        count += b["labels"].numel()
    return math.exp(total / count)


@torch.no_grad()
def sequence_logprob(model, prompt: list[int], output: list[int], *, seq2seq: bool = False,
                     start_id: int | None = None) -> float:
    """sum log p(output | prompt) under teacher forcing (decoder-only, or encoder-decoder with start_id)."""
    if not output:
        return 0.0
    out = torch.tensor([output])
    if seq2seq:
        logits = model(torch.tensor([prompt]), torch.tensor([[start_id, *output[:-1]]]))[0]
    else:
        logits = model(torch.tensor([prompt + output[:-1]]))[0, len(prompt) - 1:]
    return F.log_softmax(logits.float(), -1).gather(-1, out[0][:, None]).sum().item()


@torch.no_grad()
def candidate_logprobs(model, prompt: list[int], candidates: list[list[int]]) -> list[float]:
    """[sequence_logprob(model, prompt, c) for c in candidates] in one decoder-only forward pass: the rows
    prompt + c[:-1] are right-padded, and causal attention keeps every scored position from seeing the pads."""
    if not prompt or any(not c for c in candidates):
        raise ValueError("candidate_logprobs needs a non-empty prompt and non-empty candidates")
    width = max(map(len, candidates))
    ids = torch.tensor([prompt + c[:-1] + [0] * (width - len(c)) for c in candidates])  # (K, P + width - 1)
    targets = torch.tensor([c + [0] * (width - len(c)) for c in candidates])  # (K, width)
    logp = F.log_softmax(model(ids)[:, len(prompt) - 1:].float(), -1).gather(-1, targets[..., None])[..., 0]
    keep = torch.arange(width) < torch.tensor([len(c) for c in candidates])[:, None]  # (K, width)
    return (logp * keep).sum(-1).tolist()


def best_candidate(logprobs: list[float], lengths: list[int] | None = None) -> int:
    """argmax_c logprobs[c], the summed log-prob of candidate c; with lengths argmax_c logprobs[c] / lengths[c],
    the mean log-prob per token (length-normalised, as GPT-3 scores multiple choice: Brown et al. 2020, 2.4),
    which does not favour the shortest candidate. The lowest index on a tie."""
    if not logprobs or (lengths is not None and (len(lengths) != len(logprobs) or min(lengths) < 1)):
        raise ValueError(f"best_candidate needs scores and one positive length each, got {logprobs}, {lengths}")
    score = logprobs if lengths is None else [lp / n for lp, n in zip(logprobs, lengths, strict=True)]
    return max(range(len(score)), key=score.__getitem__)


@torch.no_grad()
def mlm_accuracy(model, tokens: np.ndarray, *, cls_id: int, sep_id: int, mask_id: int, special_ids: list[int],
                 batch_size: int, n_batches: int, seed: int = 0) -> float:
    windows = FixedWindows(tokens, model.config.block_size - 2, batch_size, n_batches)
    g = torch.Generator().manual_seed(seed)
    correct = chosen = 0
    for b in windows:
        x = with_cls_sep(b["input_ids"], cls_id, sep_id)
        inputs, labels = mask_tokens(x, mask_token_id=mask_id, special_ids=torch.tensor(special_ids),
                                     vocab_size=model.config.vocab_size, generator=g)
        keep = labels != -100
        correct += int((model(inputs).argmax(-1)[keep] == labels[keep]).sum())
        chosen += int(keep.sum())
    return correct / max(1, chosen)


@torch.no_grad()
def classifier_predictions(model, rows: list[dict], pad_id: int, batch_size: int) -> list[int]:
    """Per row ({"input_ids"}): model(ids, mask).argmax(-1). Batches are right-padded with pad_id; the model
    should be in eval mode."""
    preds = []
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_batch([r["input_ids"] for r in rows[i:i + batch_size]], pad_id, left=False)
        preds += model(ids, mask).argmax(-1).tolist()
    return preds


def classifier_hits(model, rows: list[dict], pad_id: int, batch_size: int) -> list[int]:
    """Per row ({"input_ids", "labels"}): 1 if its classifier_predictions is its label, else 0."""
    preds = classifier_predictions(model, rows, pad_id, batch_size)
    return [int(p == r["labels"]) for p, r in zip(preds, rows, strict=True)]


def prediction_shares(preds: list[int], names: list[str]) -> dict[str, float]:
    """{name of class c: share of preds equal to c}, every class listed (0.0 if never predicted)."""
    if not preds or not all(0 <= p < len(names) for p in preds):
        raise ValueError(f"prediction_shares needs predictions, each a class id below {len(names)}")
    return {name: preds.count(c) / len(preds) for c, name in enumerate(names)}


def majority_label(labels: list[int], num_labels: int) -> int:
    """The most frequent label (the lowest id among ties)."""
    return int(torch.bincount(torch.tensor(labels), minlength=num_labels).argmax())
