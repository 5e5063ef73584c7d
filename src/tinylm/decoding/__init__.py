"""Decoding for the decoder-only LM and the encoder-decoder model: greedy, beam search, sampling.

All three run the prompt once and then feed one new token per row per step through the KV cache
(`stepper.Stepper` hides the model kind). Prompts are left-padded (attention_mask 0 = padding).
"""

from tinylm.decoding.beam import beam_search
from tinylm.decoding.greedy import greedy_decode
from tinylm.decoding.sampling import sample, top_k_filter, top_p_filter

__all__ = ["greedy_decode", "beam_search", "sample", "top_k_filter", "top_p_filter"]
