"""One entry for every decoder by name, as the evaluate stage and `tinylm generate` choose them:

    "greedy"   greedy_decode
    "beam<K>"  beam_search with K beams (length_penalty)
    "sample"   sample (temperature, top_k, top_p, repetition_penalty; randomness from `seed`)
"""

import torch

from tinylm.decoding.beam import beam_search
from tinylm.decoding.greedy import greedy_decode
from tinylm.decoding.sampling import sample


def decode(model, input_ids: torch.Tensor, decoder: str, max_new_tokens: int, *, length_penalty: float = 1.0,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           repetition_penalty: float | None = None, seed: int = 0, **kw) -> torch.Tensor:
    """(B, T + new) sequences (encoder-decoder: the targets) of the named decoder; kw: eos_token_id,
    attention_mask, pad_token_id, decoder_start_token_id, passed to it."""
    if decoder == "greedy":
        return greedy_decode(model, input_ids, max_new_tokens, **kw)
    if decoder.startswith("beam") and decoder[4:].isdigit() and int(decoder[4:]) >= 1:
        return beam_search(model, input_ids, int(decoder[4:]), max_new_tokens, length_penalty=length_penalty, **kw)[0]
    if decoder == "sample":
        return sample(model, input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, seed=seed, **kw)
    raise ValueError(f"unknown decoder {decoder!r}: greedy, beam<K> (K >= 1 beams) or sample")
