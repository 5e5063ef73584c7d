"""Pre-tokenization: cut text into the pieces ("pre-tokens") that BPE merges never cross.

Contract: ``Pretokenizer(pattern).split(text)`` returns the pieces of HF ``tokenizers``'
``Split(Regex(pattern), behavior="isolated")``: every match of ``pattern``, scanning left to right, plus
every stretch of text between two matches as a piece of its own, so ``"".join(pieces) == text``. The two
built-in patterns match every character, so there they are exactly the matches (``findall``):

* ``GPT2_PATTERN``, GPT-2's regex, as HF's ``ByteLevel(use_regex=True)`` pre-tokenizer applies it;
* ``SPLIT_DIGITS_PATTERN``, the same with every digit a piece of its own (as Baichuan and LLaMA's
  SentencePiece ``split_digits`` do), so numbers are spelled digit by digit.

Speed: the ``regex`` module (needed for ``\\p{L}``) is the slow part of training and encoding. For a text
that is pure ASCII, a built-in pattern is run as its ASCII transcription under the standard ``re`` module,
about 2.5x faster and equal on ASCII input (``\\p{L}`` is ``[A-Za-z]`` there, ``\\p{N}`` is ``[0-9]``, and
``\\s`` is ``[ \\t\\n\\v\\f\\r]`` in both engines); the tests check the equality. Whole documents should be
passed, not lines: one ``findall`` over a long text costs far less than many short ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPLIT_DIGITS_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Pattern names for configuration files.
PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "split_digits": SPLIT_DIGITS_PATTERN}

_ASCII_TRANSCRIPTIONS: dict[str, str] = {
    GPT2_PATTERN: r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""",
    SPLIT_DIGITS_PATTERN: r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""",
}


class CorpusTypeError(TypeError, ValueError):
    """A corpus item is not a ``str``. Both a ``TypeError`` and a ``ValueError``, so either catch works."""


def _matches_and_gaps(pattern: str) -> str:
    # A match of `pattern` where one starts, else the longest run of characters before the next match.
    # When `pattern` matches at every position the second branch is never tried and costs nothing.
    return rf"(?:{pattern})|(?s:(?:(?!(?:{pattern})).)+)"


class Pretokenizer:
    """Splits text with one regex; see the module docstring for the exact contract."""

    def __init__(self, pattern: str = GPT2_PATTERN):
        if not isinstance(pattern, str):
            raise ValueError(f"pattern must be a regex string, got {type(pattern).__name__}")
        try:
            compiled = regex.compile(pattern)
        except regex.error as err:
            raise ValueError(f"pre-tokenization pattern does not compile ({err}): {pattern!r}") from err
        if compiled.groups:
            raise ValueError(
                f"pre-tokenization pattern has capturing groups: {pattern!r}; write them as (?:...)"
            )
        if compiled.fullmatch(""):
            raise ValueError(
                f"pre-tokenization pattern matches the empty string: {pattern!r}; "
                "every alternative must consume at least one character"
            )
        self.pattern = pattern
        ascii_pattern = _ASCII_TRANSCRIPTIONS.get(pattern)
        if ascii_pattern:  # a built-in pattern: it matches every character, so there are no gaps to catch
            self._findall = regex.compile(pattern).findall
            self._findall_ascii = re.compile(ascii_pattern, re.ASCII).findall
        else:
            self._findall = self._findall_ascii = regex.compile(_matches_and_gaps(pattern)).findall

    def split(self, text: str) -> list[str]:
        """The pre-tokens of ``text``, in order; they concatenate back to ``text``."""
        return self._findall_ascii(text) if text.isascii() else self._findall(text)

    def count(self, texts: Iterable[str]) -> Counter[str]:
        """How often each pre-token occurs in ``texts`` (each text is split on its own)."""
        if isinstance(texts, str | bytes):
            raise ValueError("texts must be an iterable of strings, not a single string; wrap it in a list")
        counts: Counter[str] = Counter()
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise CorpusTypeError(
                    f"corpus item {n} is a {type(text).__name__}, not a str; "
                    "decode bytes to str (UTF-8) and pass only strings"
                )
            counts.update(self.split(text))
        return counts
