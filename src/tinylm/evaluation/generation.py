"""Batched generation with one decoder over many prompts, timed, for the evaluate stage.

Decoders: "greedy", "beam<K>" (beam search, K beams) and "sample" (temperature/top-p). Decoder-only
prompts are left-padded; encoder-decoder sources right-padded (as trained). Outputs are cut at the first
EOS. Speed counts generated tokens (EOS included) per second of wall time, and ms per item. A prompt longer
than its room in the context loses its middle (`fit_prompt`), keeping its instruction and its end.
"""

import time
from dataclasses import dataclass

import torch

from tinylm.data.chat import ChatTemplate
from tinylm.decoding.dispatch import decode


@dataclass
class Generation:
    ids: list[list[int]]  # generated ids per item, cut at EOS (EOS excluded)
    finished: list[bool]  # the item ended with EOS (else it hit max_new_tokens)
    seconds: float
    tokens: int  # generated tokens incl. EOS

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def ms_per_item(self) -> float:
        return 1000 * self.seconds / max(1, len(self.ids))


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    return ids, mask


def prompt_room(block_size: int, new_tokens: int) -> int:
    """How many prompt tokens fit in a context of block_size beside new_tokens generated ones (prompt + answer
    <= block_size); ValueError if none do."""
    room = block_size - new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={new_tokens} leaves no room for a prompt in the context of {block_size} "
                         "tokens")
    return room


def fit_prompt(ids: list[int], room: int, head: int) -> list[int]:
    """ids if they fit in room, else their first h = min(head, room // 2) ids and their last room - h: a long
    prompt loses its middle, not its instruction (the head, e.g. the chat template's user header and first
    line) nor its end (the last lines and the assistant header the answer follows)."""
    if room < 1 or head < 0:
        raise ValueError(f"fit_prompt needs room >= 1 and head >= 0, got room={room}, head={head}")
    if len(ids) <= room:
        return list(ids)
    h = min(head, room // 2)
    return [*ids[:h], *ids[len(ids) - (room - h):]]


def head_length(tmpl: ChatTemplate, prompt: str, ids: list[int], seq2seq: bool) -> int:
    """How many of a prompt's leading ids are its instruction line: `<|user|>\\n{first line}\\n` in the
    decoder's chat template, `{first line}\\n` in the encoder-decoder's bare source (the common prefix, should a
    tokenizer join the line's last newline with what follows)."""
    line = prompt.partition("\n")[0] + "\n"
    head = tmpl.encode(line) if seq2seq else [tmpl.user_id, *tmpl.encode("\n" + line)]
    return next((i for i, (a, b) in enumerate(zip(ids, head, strict=False)) if a != b), min(len(ids), len(head)))


def cut_at_eos(ids: list[int], eos_id: int) -> tuple[list[int], bool]:
    """(ids before the first EOS, whether there was one)."""
    return (ids[:ids.index(eos_id)], True) if eos_id in ids else (ids, False)


@torch.no_grad()
def generate(model, prompts: list[list[int]], decoder: str, *, eos_id: int, pad_id: int, max_new_tokens: int,
             batch_size: int, length_penalty: float = 1.0, seq2seq: bool = False, start_id: int | None = None,
             temperature: float = 0.8, top_p: float = 0.95, seed: int = 0) -> Generation:
    out, finished, tokens, start = [], [], 0, time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        ids, mask = pad_batch(prompts[i:i + batch_size], pad_id, left=not seq2seq)
        kw = dict(eos_token_id=eos_id, attention_mask=mask, pad_token_id=pad_id)
        if seq2seq:
            kw["decoder_start_token_id"] = start_id
        seqs = decode(model, ids, decoder, max_new_tokens, length_penalty=length_penalty, temperature=temperature,
                      top_p=top_p, seed=seed + i, **kw)
        new = seqs[:, 1:] if seq2seq else seqs[:, ids.size(1):]
        for row in new.tolist():
            kept, ended = cut_at_eos(row, eos_id)
            out.append(kept)
            finished.append(ended)
            tokens += len(kept) + ended
    return Generation(out, finished, time.perf_counter() - start, tokens)
