"""Encoding one pre-token with learned merges, memoized.

Rule (that of HF ``tokenizers``' BPE model): start from the ids of the pre-token's UTF-8 bytes; while
some adjacent pair has a merge, merge the pair whose merge came first in training (lowest rank), the
leftmost one if it occurs more than once; stop when no adjacent pair has a merge. When a merge list holds
one pair twice (HF's trainer can emit that), the later rank counts, as in HF.

Algorithm: the symbols form a linked list over the byte positions and candidate merges wait in a heap
keyed by (rank, position of the left symbol); an entry is stale, and skipped, when its left symbol was
absorbed, has no right neighbour any more, or now forms a pair that merges into another token. Each merge
pushes the two pairs it creates. O(n log n) in the pre-token length, so a run of 10,000 identical
characters (one pre-token) costs milliseconds rather than the minutes of rescanning all pairs per merge.

``PieceEncoder`` is a ``dict`` from pre-token to its ids that computes missing entries on lookup, so a
corpus is encoded with ``map(encoder.__getitem__, pieces)`` at C speed, paying the merge loop only once
per distinct pre-token. It forgets everything when it holds ``max_size`` entries, bounding memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


class PieceEncoder(dict[str, tuple[int, ...]]):
    """``encoder[piece]`` -> the token ids of one pre-token."""

    def __init__(
        self,
        byte_ids: Sequence[int],
        merges: Sequence[tuple[int, int, int]],
        max_size: int = 1 << 18,
    ):
        """``byte_ids[b]`` is the id of byte ``b``; ``merges`` holds ``(left id, right id, merged id)``."""
        super().__init__()
        self._byte_ids = list(byte_ids)
        self._merge_of = {(a, b): (rank, new) for rank, (a, b, new) in enumerate(merges)}
        self._max_size = max_size

    def __missing__(self, piece: str) -> tuple[int, ...]:
        if len(self) >= self._max_size:
            self.clear()
        result = self[piece] = self._merge(list(map(self._byte_ids.__getitem__, piece.encode("utf-8"))))
        return result

    def _merge(self, ids: list[int]) -> tuple[int, ...]:
        merge_of = self._merge_of.get
        n = len(ids)
        heap = []  # (rank, left position, merged id)
        for i in range(n - 1):
            candidate = merge_of((ids[i], ids[i + 1]))
            if candidate is not None:
                heap.append((candidate[0], i, candidate[1]))
        if not heap:
            return tuple(ids)
        heapq.heapify(heap)
        following = list(range(1, n + 1))  # position n means "none"
        preceding = list(range(-1, n - 1))  # position -1 means "none"
        alive = [True] * n
        while heap:
            _, i, new = heapq.heappop(heap)
            j = following[i]
            if not alive[i] or j == n:
                continue
            current = merge_of((ids[i], ids[j]))
            if current is None or current[1] != new:
                continue
            ids[i] = new
            alive[j] = False
            k = following[i] = following[j]
            if k < n:
                preceding[k] = i
                candidate = merge_of((new, ids[k]))
                if candidate is not None:
                    heapq.heappush(heap, (candidate[0], i, candidate[1]))
            h = preceding[i]
            if h >= 0:
                candidate = merge_of((ids[h], new))
                if candidate is not None:
                    heapq.heappush(heap, (candidate[0], h, candidate[1]))
        return tuple([token for token, kept in zip(ids, alive, strict=True) if kept])
