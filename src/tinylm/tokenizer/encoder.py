"""Encoding one pre-token with learned merges, memoized.

Rule (that of HF ``tokenizers``' BPE model): start from the ids of the pre-token's UTF-8 bytes; while
some adjacent pair has a merge, merge the pair whose merge came first in training (lowest rank), the
leftmost one if it occurs more than once; stop when no adjacent pair has a merge. When a merge list holds
one pair twice (HF's trainer can emit that), the later rank counts, as in HF.

Two implementations of that rule, chosen by length (both are checked against HF by the tests):

* short pre-tokens (almost all of them): keep the merge code ``rank << 32 | merged id`` of every adjacent
  pair in a list; merge at ``codes.index(min(codes))`` and recompute only the two neighbouring codes.
  ``min`` and ``index`` run in C, so this beats any bookkeeping for a few dozen bytes, but it is
  quadratic in the length;
* long pre-tokens (a run of 10,000 spaces is one): the symbols form a linked list over the byte positions
  and candidate merges wait in a heap keyed by (rank, position of the left symbol); an entry is stale,
  and skipped, when its left symbol was absorbed or now forms another pair. O(n log n).

``PieceEncoder`` is a ``dict`` from pre-token to its ids that computes missing entries on lookup, so a
corpus is encoded with ``b"".join(map(encoder.__getitem__, pieces))`` at C speed, paying the merge loop
only once per distinct pre-token. The ids are kept as the bytes of a native ``typecode`` array ("H":
uint16, "I": uint32), so a text's ids are one ``bytes.join`` and one ``np.frombuffer`` away (half the
time of chaining tuples of ints into a list and converting that). It forgets everything when it holds
``max_size`` entries, bounding memory.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from itertools import pairwise, repeat

_NO_MERGE = 1 << 62  # the code of a pair without a merge: larger than any real code
_LOW = (1 << 32) - 1  # the merged id (short path) or the position (heap entries) in a code's low bits
_LONG = 48  # bytes from which the heap is faster than rescanning


class PieceEncoder(dict[str, bytes]):
    """``encoder[piece]`` -> the token ids of one pre-token, as the bytes of an ``array(typecode)``."""

    def __init__(
        self,
        byte_ids: Sequence[int],
        merges: Sequence[tuple[int, int, int]],
        typecode: str = "I",
        max_size: int = 1 << 18,
    ):
        """``byte_ids[b]`` is the id of byte ``b``; ``merges`` holds ``(left id, right id, merged id)``."""
        super().__init__()
        self._byte_ids = list(byte_ids)
        self._code = {(a, b): rank << 32 | new for rank, (a, b, new) in enumerate(merges)}
        self.typecode = typecode
        self._max_size = max_size

    def __missing__(self, piece: str) -> bytes:
        if len(self) >= self._max_size:
            self.clear()
        ids = list(map(self._byte_ids.__getitem__, piece.encode("utf-8")))
        merged = self._merge_short(ids) if len(ids) < _LONG else self._merge_long(ids)
        result = self[piece] = array(self.typecode, merged).tobytes()
        return result

    def _merge_short(self, ids: list[int]) -> list[int]:
        code = self._code.get
        codes = list(map(code, pairwise(ids), repeat(_NO_MERGE)))
        codes.append(_NO_MERGE)  # codes[i]: the pair (ids[i], ids[i + 1]); the last symbol has none
        best = min(codes)
        while best != _NO_MERGE:
            j = codes.index(best)
            new = ids[j] = best & _LOW
            del ids[j + 1], codes[j + 1]
            codes[j] = code((new, ids[j + 1]), _NO_MERGE) if j + 1 < len(ids) else _NO_MERGE
            if j:
                codes[j - 1] = code((ids[j - 1], new), _NO_MERGE)
            best = min(codes)
        return ids

    def _merge_long(self, ids: list[int]) -> list[int]:
        code = self._code.get
        n = len(ids)
        # Heap entries: rank << 32 | position of the left symbol.
        codes = map(code, pairwise(ids), repeat(_NO_MERGE))
        heap = [c & ~_LOW | i for i, c in enumerate(codes) if c != _NO_MERGE]
        heapq.heapify(heap)
        following = list(range(1, n + 1))  # position n: none
        preceding = list(range(-1, n - 1))  # position -1: none
        alive = [True] * n
        while heap:
            entry = heapq.heappop(heap)
            i = entry & _LOW
            j = following[i]
            if not alive[i] or j == n:
                continue
            current = code((ids[i], ids[j]), _NO_MERGE)
            if current >> 32 != entry >> 32:  # the pair at i changed since the entry was pushed
                continue
            new = ids[i] = current & _LOW
            alive[j] = False
            k = following[i] = following[j]
            if k < n:
                preceding[k] = i
                right = code((new, ids[k]), _NO_MERGE)
                if right != _NO_MERGE:
                    heapq.heappush(heap, right & ~_LOW | i)
            h = preceding[i]
            if h >= 0:
                left = code((ids[h], new), _NO_MERGE)
                if left != _NO_MERGE:
                    heapq.heappush(heap, left & ~_LOW | h)
        return [token for token, kept in zip(ids, alive, strict=True) if kept]
