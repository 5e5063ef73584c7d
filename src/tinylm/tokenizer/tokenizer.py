"""``BPETokenizer``: byte-level BPE that trains, encodes, decodes, saves and loads ``tokenizer.json``.

Contract:

* ``BPETokenizer.train(texts, vocab_size, ...)`` learns merges with
  :func:`~tinylm.tokenizer.trainer.learn_bpe` (same merges, in the same order, as HF ``tokenizers``'
  ``BpeTrainer``; the tie and stop rules are in that module) from the pre-token counts of
  :mod:`~tinylm.tokenizer.pretokenize`.
* ``encode(text)``: special tokens that ``allowed_special`` lists (default: all registered ones) are cut
  out of the text first, leftmost and, among those starting at one place, longest first (HF's added-token
  matching); each stretch in between is pre-tokenized and every pre-token is encoded by
  :class:`~tinylm.tokenizer.encoder.PieceEncoder`. The ids equal those of HF ``tokenizers`` loading the
  saved ``tokenizer.json``.
* ``encode_batch(texts, num_workers=n)`` and ``encode_arrays(texts, dtype, num_workers=n)`` (ids as numpy
  arrays, lazily: what the tokenize stage writes) spread whole texts over ``n`` processes.
* ``decode(ids)``: a special token decodes to its text, any other token to its bytes; the bytes are read
  as UTF-8 with invalid sequences replaced by U+FFFD (as HF's ``ByteLevel`` decoder does), so any id list
  decodes and ``decode(encode(s)) == s`` for every string ``s`` that is valid Unicode (no lone surrogates).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import signal
import threading
import warnings
from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from tinylm.atomic import write_text
from tinylm.ctrl_c import recorded_ctrl_c
from tinylm.tokenizer import io
from tinylm.tokenizer.bytes_unicode import ALPHABET, BYTE_TO_CHAR, CHAR_TO_BYTE, chars_to_bytes
from tinylm.tokenizer.encoder import PieceEncoder
from tinylm.tokenizer.pretokenize import GPT2_PATTERN, Pretokenizer
from tinylm.tokenizer.trainer import learn_bpe


class BPETokenizer:
    """A byte-level BPE tokenizer: ``vocab`` (token -> id, ids ``0..n-1``), ordered ``merges``, specials."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Iterable[tuple[str, str]],
        special_tokens: Iterable[str] = (),
        pattern: str = GPT2_PATTERN,
    ):
        self._vocab = dict(vocab)
        if sorted(self._vocab.values()) != list(range(len(self._vocab))):
            raise ValueError("vocab ids must be exactly 0..len(vocab)-1, each used once")
        self._tokens = sorted(self._vocab, key=self._vocab.__getitem__)
        self._merges = [(left, right) for left, right in merges]
        self._special_tokens = _unique_special_tokens(special_tokens)
        self._pretokenizer = Pretokenizer(pattern)

        missing_bytes = [c for c in ALPHABET if c not in self._vocab]
        if missing_bytes:
            raise ValueError(
                f"vocab lacks byte characters {missing_bytes[:8]}...; byte-level BPE needs all 256"
            )
        for left, right in self._merges:
            for part in (left, right, left + right):
                if part not in self._vocab:
                    raise ValueError(f"merge {left!r} + {right!r}: {part!r} is not in the vocab")
        specials = set(self._special_tokens)
        unknown = sorted(specials - self._vocab.keys())
        if unknown:
            raise ValueError(f"special tokens {unknown} are not in the vocab")
        for token in self._vocab.keys() - specials:
            if not all(c in CHAR_TO_BYTE for c in token):
                raise ValueError(f"token {token!r} is neither a special token nor made of byte characters")
        spelled_by_bytes = set(ALPHABET).union(left + right for left, right in self._merges)
        for token in specials & spelled_by_bytes:
            if chars_to_bytes(token) != token.encode("utf-8"):
                raise ValueError(
                    f"special token {token!r} is also the byte-level token for {chars_to_bytes(token)!r}, "
                    "which decodes differently; give the special token another name"
                )

        self._id_bytes = [
            token.encode("utf-8") if token in specials else chars_to_bytes(token) for token in self._tokens
        ]
        self._pieces = PieceEncoder(
            byte_ids=[self._vocab[BYTE_TO_CHAR[b]] for b in range(256)],
            merges=[(self._vocab[a], self._vocab[b], self._vocab[a + b]) for a, b in self._merges],
            typecode="H" if len(self._vocab) <= 1 << 16 else "I",
        )
        self._id_dtype = np.dtype(np.uint16 if self._pieces.typecode == "H" else np.uint32)
        self._special_ids = {t: array(self._pieces.typecode, [self._vocab[t]]).tobytes() for t in specials}
        self._all_specials = _special_splitter(self._special_tokens)

    # ----------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        min_frequency: int = 2,
        pattern: str = GPT2_PATTERN,
        show_progress: bool = True,
    ) -> BPETokenizer:
        """Learn a tokenizer from ``texts`` (strings; whole documents are fastest).

        Rule (HF ``BpeTrainer``'s, merge for merge): each text is pre-tokenized with ``pattern``; pair
        counts are taken over the unique pre-tokens weighted by their frequency; the most frequent
        adjacent pair is merged next, and equal counts go to the smallest ``(left id, right id)``, ids
        being the special tokens first (in the given order), then the 256 byte characters sorted by code
        point, then merged tokens in creation order. Training stops at ``vocab_size`` tokens or at the
        first pair whose count is below ``max(min_frequency, 1)``; then the vocabulary is smaller than
        asked and a warning says how large it got. Special tokens inside ``texts`` are counted as
        plain text, as HF does.
        """
        specials = _unique_special_tokens(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
        base = len(set(specials).union(ALPHABET))
        if vocab_size < base:
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the {base} base tokens (256 byte characters + "
                f"{len(specials)} special tokens); use vocab_size >= {base}"
            )
        if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 0:
            raise ValueError(f"min_frequency must be an int >= 0, got {min_frequency!r}")
        pretokenizer = Pretokenizer(pattern)
        counts = pretokenizer.count(texts)
        if not counts:
            raise ValueError(
                "the corpus is empty: texts held no characters; pass at least one non-empty string"
            )
        tokens, merges = learn_bpe(counts, vocab_size, specials, min_frequency, show_progress)
        if len(tokens) < vocab_size:
            warnings.warn(
                f"BPE training stopped early at vocab size {len(tokens)} (asked for {vocab_size}): no "
                f"pair of tokens occurs min_frequency={min_frequency} times any more. The tokenizer is "
                "usable; for a larger vocab use more text or a lower min_frequency.",
                stacklevel=2,
            )
        return cls({token: i for i, token in enumerate(tokens)}, merges, specials, pattern)

    # ------------------------------------------------------------------------------------------ encoding
    def encode(self, text: str, allowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Token ids of ``text``. ``allowed_special``: the special tokens to recognise in it ("all", or a
        collection of registered special tokens; others are encoded as plain text)."""
        return self._encode_array(text, allowed_special).tolist()

    def _encode_array(self, text: str, allowed_special: Literal["all"] | Collection[str]) -> np.ndarray:
        """The ids of ``text`` as a read-only uint16 (uint32 past 65,536 tokens) array over the joined bytes."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        splitter = self._all_specials if allowed_special == "all" else self._splitter(allowed_special)
        if splitter is None:
            return np.frombuffer(self._encode_ordinary(text), self._id_dtype)
        parts = [
            self._special_ids[part] if n % 2 else self._encode_ordinary(part)
            for n, part in enumerate(splitter.split(text))
        ]
        return np.frombuffer(b"".join(parts), self._id_dtype)

    def encode_batch(
        self,
        texts: Iterable[str],
        allowed_special: Literal["all"] | Collection[str] = "all",
        num_workers: int = 1,
    ) -> list[list[int]]:
        """``[encode(text) for text in texts]``, in ``num_workers`` processes when that is more than 1."""
        if num_workers == 1:  # validated by encode_arrays otherwise
            return [self.encode(text, allowed_special) for text in texts]
        return [ids.tolist() for ids in self.encode_arrays(texts, np.int64, allowed_special, num_workers)]

    def encode_arrays(
        self,
        texts: Iterable[str],
        dtype: npt.DTypeLike = np.int64,
        allowed_special: Literal["all"] | Collection[str] = "all",
        num_workers: int = 1,
    ) -> Iterator[np.ndarray]:
        """The ids of each text as a 1-D ``dtype`` array, in order, lazily.

        With ``num_workers`` > 1, a pool of that many processes encodes one text each at a time, each
        process with its own pre-token cache (so pass whole documents: a text per task, not a line), and
        arrays come back (pickled as bytes, far cheaper than lists of ints). On the Shakespeare plays two
        processes gave 1.4-1.8x one (``benchmarks/bpe.py``). Closing the iterator early stops the pool.
        """
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
        dtype = np.dtype(dtype)
        if dtype.kind not in "iu" or np.iinfo(dtype).max < self.vocab_size - 1:
            raise ValueError(f"dtype {dtype.name} cannot hold token ids up to {self.vocab_size - 1}")
        if allowed_special != "all":
            self._splitter(allowed_special)  # raises on tokens that are not specials, before any work
        if num_workers == 1:
            return (self._encode_array(text, allowed_special).astype(dtype) for text in texts)
        return _encode_in_pool(num_workers, (self, dtype, allowed_special), texts)

    def _encode_ordinary(self, text: str) -> bytes:
        return b"".join(map(self._pieces.__getitem__, self._pretokenizer.split(text)))

    def _splitter(self, allowed_special: Collection[str]) -> re.Pattern[str] | None:
        if isinstance(allowed_special, str):
            raise ValueError(
                f"allowed_special must be 'all' or a collection of strings, got {allowed_special!r}"
            )
        unknown = set(allowed_special) - set(self._special_tokens)
        if unknown:
            raise ValueError(
                f"allowed_special lists {sorted(unknown)}, which are not special tokens of this tokenizer "
                f"(those are {list(self._special_tokens)})"
            )
        return _special_splitter(allowed_special)

    # ------------------------------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= len(self._id_bytes)):
            bad = next(i for i in ids if not 0 <= i < len(self._id_bytes))
            raise ValueError(f"token id {bad} is out of range: ids go from 0 to {len(self._id_bytes) - 1}")
        return b"".join([self._id_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------------------------ vocabulary
    @property
    def vocab(self) -> dict[str, int]:
        """Token -> id (a copy), special tokens included."""
        return dict(self._vocab)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in the order they were learned (a copy); tokens are byte-character strings."""
        return list(self._merges)

    @property
    def special_tokens(self) -> list[str]:
        return list(self._special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def token_bytes(self) -> list[int]:
        """UTF-8 bytes of text each id stands for, 0 for special tokens (the denominator of bits per byte)."""
        specials = set(self._special_tokens)
        return [0 if t in specials else len(b) for t, b in zip(self._tokens, self._id_bytes, strict=True)]

    @property
    def pattern(self) -> str:
        """The pre-tokenization regex."""
        return self._pretokenizer.pattern

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokens[token_id] if 0 <= token_id < len(self._tokens) else None

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={list(self._special_tokens)})"
        )

    def __reduce__(self):  # pickle the definition, not the caches (for worker processes)
        return type(self), (self._vocab, self._merges, self._special_tokens, self.pattern)

    # ------------------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write HF ``tokenizer.json`` to ``path`` atomically; returns the path."""
        text = io.dumps(self._vocab, self._merges, self._special_tokens, self.pattern)
        return write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a ``tokenizer.json`` written by :meth:`save` or by HF ``tokenizers`` (byte-level BPE)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer there; train one (dvc repro train_tokenizer) or pass "
                                    "the path of a tokenizer.json")
        try:
            return cls(**io.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not a byte-level BPE tokenizer.json ({e}); retrain it (dvc repro "
                             "train_tokenizer) or point at a tokenizer.json written by tinylm or HF tokenizers") from e


def _unique_special_tokens(special_tokens: Iterable[str]) -> tuple[str, ...]:
    if isinstance(special_tokens, str):
        raise ValueError(f"special_tokens must be a list of strings, not the string {special_tokens!r}")
    tokens = tuple(special_tokens)
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
    duplicates = sorted({token for token in tokens if tokens.count(token) > 1})
    if duplicates:
        raise ValueError(f"duplicate special tokens {duplicates}; list each special token once")
    return tokens


def _special_splitter(special_tokens: Collection[str]) -> re.Pattern[str] | None:
    """A regex whose ``split`` alternates text and special tokens (longest first where several match)."""
    if not special_tokens:
        return None
    alternatives = "|".join(map(re.escape, sorted(special_tokens, key=len, reverse=True)))
    return re.compile(f"({alternatives})")


_worker: tuple[BPETokenizer, np.dtype, Literal["all"] | Collection[str]] | None = None


def _start_worker(tokenizer: BPETokenizer, dtype: np.dtype, allowed_special: Literal["all"] | Collection[str]) -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it (closing the pool terminates the
    # workers); a worker dying of KeyboardInterrupt mid-task would leave the pool waiting for its result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _worker
    _worker = (tokenizer, dtype, allowed_special)


def _encode_in_pool(n: int, worker: tuple, texts: Iterable[str]) -> Iterator[np.ndarray]:
    # Forked workers share the parent's heap copy-on-write; a garbage collection in a worker writes to every
    # object it traverses, copying the pages of everything it inherited (Python's gc docs: freeze before
    # fork). Frozen objects are left out of collections.
    # Ctrl-C is deferred (tinylm.ctrl_c) while this code runs the pool: while the workers are forked (raised
    # there it would leave them behind, Pool's cleanup catching Exception only, or be lost in os.fork's hooks),
    # while it waits for the next result (inside the pool's locking) and while the pool closes; it is raised
    # at the item boundary that follows. Between items, in the caller's code, Python's own handling applies
    # (nothing of ours stays installed while the generator is suspended). The workers ignore it.
    # The pool is never terminate()d: Pool.terminate drains the task pipe only while it holds data, so a
    # text bigger than the pipe's buffer, which the pool's feeder thread starts writing just after that
    # drain, blocks the feeder forever and terminate() with it (a Ctrl-C hang in CI, about 1 run in 4). On
    # any exit the feed stops at the next text instead; the workers finish what was already sent, then close
    # and join end the pool the ordinary way. A press recorded by then is raised even when the caller closed
    # the iterator (close() raises it).
    stop = threading.Event()
    with recorded_ctrl_c(defer=True) as pressed:
        gc.freeze()
        try:
            pool = multiprocessing.Pool(n, initializer=_start_worker, initargs=worker)
        finally:
            gc.unfreeze()
        results = pool.imap(_encode_in_worker, _until(stop, texts))
    try:
        while not pressed:
            with recorded_ctrl_c(defer=True) as pressed:
                ids = next(results, None)
            if ids is None or pressed:
                break
            yield ids
    finally:
        with recorded_ctrl_c(defer=True) as closing:
            stop.set()
            pool.close()
            pool.join()
        if pressed or closing:
            raise KeyboardInterrupt


def _until(stop: threading.Event, texts: Iterable[str]) -> Iterator[str]:
    """``texts`` until ``stop`` is set (checked before each text)."""
    for text in texts:
        if stop.is_set():
            return
        yield text


def _encode_in_worker(text: str) -> np.ndarray:
    tokenizer, dtype, allowed_special = _worker
    return tokenizer._encode_array(text, allowed_special).astype(dtype)
