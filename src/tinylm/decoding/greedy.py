"""Greedy decoding: at each step every row takes its most likely next token, x_{t+1} = argmax p(. | x_<=t).

Cost: one prefill of the prompt, then max_new_tokens single-token forward passes through the KV cache
(O(T) steps, each O(1) tokens). EOS handling follows `transformers`: once a row has emitted EOS it emits
pad_token_id (default: EOS) for the rest of the batch's steps; decoding stops when every row has finished
or after max_new_tokens, so the output is (B, T + new) with new <= max_new_tokens.
`decode_tokens` is the loop shared with sampling, which only changes how a token is picked.
"""

from collections.abc import Callable

import torch

from tinylm.decoding.stepper import Stepper


def decode_tokens(steps: Stepper, max_new_tokens: int, pick: Callable[[torch.Tensor], torch.Tensor],
                  eos_token_id: int | None, pad_token_id: int | None) -> torch.Tensor:
    """Append pick(logits) (rows,) to every row until all rows emitted EOS or max_new_tokens; the ids."""
    pad = eos_token_id if pad_token_id is None else pad_token_id
    done = torch.zeros(steps.ids.size(0), dtype=torch.bool, device=steps.ids.device)
    for _ in range(max_new_tokens):
        tokens = pick(steps.next_logits())
        if eos_token_id is not None:
            tokens = tokens.masked_fill(done, pad)
            done |= tokens == eos_token_id
        steps.append(tokens)
        if bool(done.all()):
            break
    return steps.output()


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None,
                  attention_mask: torch.Tensor | None = None, *, pad_token_id: int | None = None,
                  decoder_start_token_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Greedy continuation of left-padded prompts input_ids (B, T) -> LongTensor (B, T + new).

    Encoder-decoder models: input_ids/attention_mask are the source, and the result is the target, starting
    with decoder_start_token_id: (B, 1 + new). use_cache=False re-runs the whole prefix at every step.
    """
    steps = Stepper(model, input_ids, attention_mask, max_new_tokens, decoder_start_token_id, use_cache)
    return decode_tokens(steps, max_new_tokens, lambda logits: logits.argmax(-1), eos_token_id, pad_token_id)
