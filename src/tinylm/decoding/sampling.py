"""Ancestral sampling: x_{t+1} ~ softmax(f(logits)), with f applied in `transformers`' order:

    repetition penalty (CTRL, Keskar et al. 2019): a logit l of a token already in the row becomes
        l * r if l < 0 else l / r  (r > 1 discourages repeats; prompt and generated tokens, padding excluded)
    temperature: l / tau
    top-k: keep the k largest logits (ties with the k-th kept), the rest -inf
    top-p (nucleus, Holtzman et al. 2020): keep the smallest set of most likely tokens whose probability
        mass reaches p (the most likely token always), the rest -inf

Cost as greedy decoding (one token per row per step through the KV cache) plus a sort of the vocabulary
per step for top-p. EOS handling as greedy. Deterministic for a given seed or torch.Generator.
"""

import math

import torch

from tinylm.decoding.greedy import decode_tokens
from tinylm.decoding.stepper import Stepper, check_positive_int

MIN_TEMPERATURE = 0.01  # below it sampling is greedy decoding in all but name, and l / tau overflows near 1e-37


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """logits (..., V) with all but the top_k largest per row set to -inf."""
    kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits (..., V) keeping, per row, the most likely tokens until their probability mass reaches top_p."""
    if top_p >= 1:
        return logits  # everything (the cumulative sum may round to 1 before the last token)
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    drop = (mass_before >= top_p).scatter(-1, order, mass_before >= top_p)
    return logits.masked_fill(drop, float("-inf"))


@torch.inference_mode()
def sample(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
           eos_token_id: int | None = None, generator: torch.Generator | None = None, seed: int | None = None,
           attention_mask: torch.Tensor | None = None, *, pad_token_id: int | None = None,
           decoder_start_token_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Sampled continuation of left-padded prompts input_ids (B, T) -> LongTensor (B, T + new).

    Randomness: `generator` if given, else a fresh generator seeded with `seed`, else torch's global RNG.
    Encoder-decoder models: as in `greedy_decode` (the result is the target, from decoder_start_token_id).
    """
    if not (MIN_TEMPERATURE <= temperature < math.inf):  # nan fails it too
        raise ValueError(f"temperature must be a number >= {MIN_TEMPERATURE} (lower: use greedy decoding), got "
                         f"{temperature}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    if generator is None and seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    steps = Stepper(model, input_ids, attention_mask, max_new_tokens, decoder_start_token_id, use_cache)
    rows = torch.arange(steps.ids.size(0), device=input_ids.device)
    seen = None  # (B, V) bool: the tokens in each row (prompt padding excluded), for the repetition penalty
    if repetition_penalty is not None:
        prompt = steps.output()
        real = torch.ones_like(prompt) if steps.mask is None else steps.mask[:, :steps.n].to(prompt.dtype)
        seen = prompt.new_zeros(prompt.size(0), model.config.vocab_size).scatter_add_(1, prompt, real) > 0

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if seen is not None:
            penalised = torch.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
            logits = torch.where(seen, penalised, logits)
        logits = logits / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        if seen is not None:
            seen[rows, tokens] = True
        return tokens

    return decode_tokens(steps, max_new_tokens, pick, eos_token_id, pad_token_id)
