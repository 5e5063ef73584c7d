"""Byte-level BPE training: learn merges from pre-token counts, merge for merge as HF ``tokenizers`` does.

Algorithm (incremental; the corpus is never recounted):

1. Ids: the special tokens first, in the order given; then the 256 byte characters of
   :mod:`~tinylm.tokenizer.bytes_unicode` sorted by code point (one that equals a special token keeps the
   special's id); then each merged token, in the order it is created.
2. Every unique pre-token becomes a word: the ids of its UTF-8 bytes, weighted by its count.
3. ``pair_counts[(a, b)]`` = sum over words of (occurrences of a next to b) x (word count), built once;
   each pair goes on a max-heap together with the set of words it was seen in.
4. Pop the best entry: highest count, ties to the smallest ``(left id, right id)``. Lazy invalidation:
   an entry whose count is no longer the pair's current count is pushed back with the current count
   (and its own word set) and the loop continues. Stop when the vocabulary has ``vocab_size`` tokens,
   when the heap is empty, or at the first popped pair whose count is below ``max(min_frequency, 1)``:
   the vocabulary can end smaller than asked.
5. The new token is ``token[a] + token[b]``; a string that is already in the vocabulary (two merge paths
   can spell the same token) reuses its id and the vocabulary does not grow. Record the merge.
6. In each word of the entry's set, replace every non-overlapping ``a b``, left to right, by the new id;
   for each replacement subtract the word count from the broken neighbour pairs ``(prev, a)`` and
   ``(b, next)`` and add it to ``(prev, new)`` and ``(new, next)``. The merged pair's own count is left
   as it was (its entry has been consumed). Every pair that gained occurrences is pushed with the words
   where it gained them if its total count is positive.

This reproduces, decision for decision, ``tokenizers.trainers.BpeTrainer`` with no ``limit_alphabet``,
``continuing_subword_prefix``, ``end_of_word_suffix`` or ``max_token_length``, the byte-level initial
alphabet and a ``ByteLevel(add_prefix_space=False)`` pre-tokenizer (``tokenizers`` 0.23; the tests compare
merge lists). Like HF, special tokens inside training text are not split out: they are counted as text.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from itertools import count as counter
from itertools import pairwise

from tqdm.auto import tqdm

from tinylm.tokenizer.bytes_unicode import ALPHABET, BYTE_TO_CHAR


def learn_bpe(
    word_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    min_frequency: int = 2,
    show_progress: bool = True,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn byte-level BPE from ``{pre-token: count}``; returns (tokens by id, merges in order).

    Arguments are trusted here (``BPETokenizer.train`` validates them).
    """
    tokens: list[str] = []
    token_ids: dict[str, int] = {}
    for token in (*special_tokens, *ALPHABET):
        if token not in token_ids:
            token_ids[token] = len(tokens)
            tokens.append(token)
    byte_ids = [token_ids[BYTE_TO_CHAR[b]] for b in range(256)]

    words = [list(map(byte_ids.__getitem__, word.encode("utf-8"))) for word in word_counts]
    counts = list(word_counts.values())

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for i, (word, count) in enumerate(zip(words, counts, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] = pair_counts.get(pair, 0) + count
            if pair in where:
                where[pair].add(i)
            else:
                where[pair] = {i}
    # Entries: (-count, pair, tie, words). `tie` keeps two entries of one pair from comparing their sets.
    tie = counter()
    heap = [(-pair_counts[pair], pair, next(tie), pos) for pair, pos in where.items()]
    heapq.heapify(heap)

    threshold = max(min_frequency, 1)
    merges: list[tuple[str, str]] = []
    bar = tqdm(
        total=max(vocab_size - len(tokens), 0),
        desc="BPE merges",
        unit="merge",
        disable=not show_progress,
    )
    while len(tokens) < vocab_size and heap:
        neg_count, pair, _, pos = heapq.heappop(heap)
        count = pair_counts[pair]
        if -neg_count != count:
            heapq.heappush(heap, (-count, pair, next(tie), pos))
            continue
        if count < threshold:
            break
        a, b = pair
        merged = tokens[a] + tokens[b]
        new = token_ids.get(merged)
        if new is None:
            new = token_ids[merged] = len(tokens)
            tokens.append(merged)
        merges.append((tokens[a], tokens[b]))
        gained = _merge_words(words, counts, pos, a, b, new, pair_counts)
        for new_pair, new_pos in gained.items():
            new_count = pair_counts[new_pair]
            if new_count > 0:
                heapq.heappush(heap, (-new_count, new_pair, next(tie), new_pos))
        bar.update()
    bar.close()
    return tokens, merges


def _merge_words(
    words: list[list[int]],
    counts: list[int],
    pos: set[int],
    a: int,
    b: int,
    new: int,
    pair_counts: dict[tuple[int, int], int],
) -> dict[tuple[int, int], set[int]]:
    """Replace ``a b`` by ``new`` in the words ``pos``; update ``pair_counts``; return the gained pairs."""
    gained: dict[tuple[int, int], set[int]] = {}
    for i in pos:
        word = words[i]
        count = counts[i]
        j = 0
        while True:
            try:
                j = word.index(a, j)
            except ValueError:
                break
            if j + 1 < len(word) and word[j + 1] == b:
                if j:
                    prev = word[j - 1]
                    pair_counts[prev, a] -= count
                    key = (prev, new)
                    pair_counts[key] = pair_counts.get(key, 0) + count
                    if key in gained:
                        gained[key].add(i)
                    else:
                        gained[key] = {i}
                word[j : j + 2] = (new,)
                if j + 1 < len(word):
                    nxt = word[j + 1]
                    pair_counts[b, nxt] -= count
                    key = (new, nxt)
                    pair_counts[key] = pair_counts.get(key, 0) + count
                    if key in gained:
                        gained[key].add(i)
                    else:
                        gained[key] = {i}
            j += 1
    return gained
