"""One stepping interface over both model kinds, so that each decoding algorithm is written once.

A `Stepper` holds the state between decoding steps: the tokens so far (rows x (prompt + generated)), the
decoder's attention mask (decoder-only models: left-padded prompts), the encoder output and source mask
(encoder-decoder models: the source is encoded once, padded as the model was trained, i.e. on the right for
the sinusoidal Seq2SeqTransformer; the target starts with a decoder start token) and the KV cache.
`next_logits()` runs the model on the tokens the cache has not seen yet: the whole prompt on the first call
(prefill), then one token per step, so a step costs one token's forward pass. With use_cache=False it
re-runs the whole prefix every step (O(T) per token): the reference the cache is tested against.
`expand(K)` turns each row into K beams and `reorder(index)` makes beam i continue beam index[i] of the same
input, as beam search needs after each step.
"""

import torch

from tinylm.nn.kv_cache import KVCache


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class Stepper:
    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 max_new_tokens: int, decoder_start_token_id: int | None = None, use_cache: bool = True):
        check_positive_int("max_new_tokens", max_new_tokens)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have input_ids' shape "
                             f"{tuple(input_ids.shape)}")
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: the cheaper unmasked path, same positions
        B = input_ids.size(0)
        self.model, self.memory, self.src_mask, self.mask = model, None, None, None
        if hasattr(model, "encode"):
            if decoder_start_token_id is None:
                raise ValueError("an encoder-decoder model needs decoder_start_token_id (e.g. BOS or EOS)")
            self.memory, self.src_mask = model.encode(input_ids, attention_mask), attention_mask
            prompt = input_ids.new_full((B, 1), decoder_start_token_id)
        else:
            if attention_mask is not None and bool((attention_mask[:, 1:] < attention_mask[:, :-1]).any()):
                raise ValueError("prompts must be left-padded (attention_mask 0...0 1...1 in every row): "
                                 "new tokens are appended on the right")
            if attention_mask is not None:
                self.mask = torch.cat([attention_mask, attention_mask.new_ones(B, max_new_tokens)], dim=1)
            prompt = input_ids
        self.prompt_len = prompt.size(1)
        block = model.config.block_size
        if self.prompt_len + max_new_tokens > block:
            what = "decoder start token" if self.memory is not None else f"prompt of {self.prompt_len} tokens"
            raise ValueError(f"{what} + max_new_tokens={max_new_tokens} exceeds the model's "
                             f"block_size={block}: lower max_new_tokens or keep only the last "
                             f"{max(block - max_new_tokens, 0)} prompt tokens")
        self.ids = torch.cat([prompt, prompt.new_zeros(B, max_new_tokens)], dim=1)
        self.n = self.prompt_len  # tokens so far
        # sized for this call, not block_size
        self.cache = KVCache(self.prompt_len + max_new_tokens) if use_cache else None

    def next_logits(self) -> torch.Tensor:
        """float32 logits (rows, V) for the token after the first n."""
        start = self.cache.length if self.cache is not None else 0
        ids = self.ids[:, start:self.n]
        moved = self.cache is not None and self.cache.group > 0  # run the cache's rows in buffer order
        if moved:  # (only within groups of equal masks and memory, which therefore need no reordering)
            ids = ids.index_select(0, self.cache.holders)
        if self.memory is not None:
            logits = self.model.decode(ids, self.memory, self.src_mask, cache=self.cache)
        else:
            mask = self.mask[:, :self.n] if self.mask is not None else None
            logits = self.model(ids, attention_mask=mask, cache=self.cache, logits_to_keep=1)
        logits = logits[:, -1]
        return (logits.index_select(0, self.cache.slots) if moved else logits).float()

    def append(self, tokens: torch.Tensor) -> None:
        """Add one token (rows,) to every row."""
        self.ids[:, self.n] = tokens
        self.n += 1

    def expand(self, group: int) -> None:
        """Every row becomes `group` consecutive rows (the beams of one input), sharing the cached prefix."""
        if self.cache is not None:
            self.cache.expand(group, self.mask[:, :self.n] if self.mask is not None else None)
        for name in ("ids", "mask", "memory", "src_mask"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).repeat_interleave(group, dim=0))

    def reorder(self, index: torch.Tensor) -> None:
        """After expand: row i continues row index[i] (LongTensor) of its own group, whose masks and encoder
        output are equal and stay where they are."""
        if self.cache is not None:
            self.cache.reorder(index, tokens=self.ids[:, :self.n])
        self.ids = self.ids.index_select(0, index)

    def output(self) -> torch.Tensor:
        """(rows, n): prompt (decoder-only) or decoder start token (encoder-decoder) + generated tokens."""
        return self.ids[:, :self.n]
