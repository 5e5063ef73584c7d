"""``tokenizer.json``, the file format of HF ``tokenizers``, for byte-level BPE.

Written: a ``BPE`` model (vocab by id, merges as ``[left, right]`` pairs, no unknown token, no dropout),
special tokens as ``added_tokens`` (``special: true``, no stripping, not normalized), no normalizer, a
``ByteLevel(add_prefix_space=False, use_regex=True)`` pre-tokenizer for the GPT-2 pattern or
``Sequence[Split(Regex(pattern), "Isolated"), ByteLevel(add_prefix_space=False, use_regex=False)]`` for
any other, and a ``ByteLevel`` decoder. ``tokenizers.Tokenizer.from_file`` and
``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` load it and encode to the same ids as
``BPETokenizer``.

Read: files of that shape, whoever wrote them (HF's trainer included; merges may also be in the older
``"left right"`` string form). Anything that would make HF encode differently from ``BPETokenizer`` (a
normalizer, another pre-tokenizer, dropout, subword prefixes, non-special or stripping added tokens)
is refused with a ``ValueError`` that names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tinylm.tokenizer.pretokenize import GPT2_PATTERN

_GPT2_PRE_TOKENIZER = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
_BYTE_LEVEL_ONLY = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def dumps(
    vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], special_tokens: Sequence[str], pattern: str
) -> str:
    """The ``tokenizer.json`` text of a byte-level BPE tokenizer."""
    if pattern == GPT2_PATTERN:
        pre_tokenizer: dict[str, Any] = _GPT2_PRE_TOKENIZER
    else:
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, _BYTE_LEVEL_ONLY]}
    added = [
        {
            "id": vocab[token],
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token in special_tokens
    ]
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
        "merges": [list(pair) for pair in merges],
    }
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": _GPT2_PRE_TOKENIZER,
        "model": model,
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def loads(text: str) -> dict[str, Any]:
    """Parse ``tokenizer.json`` text into ``BPETokenizer`` keyword arguments."""
    document = json.loads(text)
    model = document.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer.json holds a {model.get('type')!r} model; only 'BPE' can be loaded")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(
                f"tokenizer.json sets BPE {key}={model[key]!r}; byte-level BPE here supports none"
            )
    for key in ("byte_fallback", "ignore_merges"):
        if model.get(key):
            raise ValueError(f"tokenizer.json sets BPE {key}=true; byte-level BPE here supports only false")
    if document.get("normalizer") is not None:
        raise ValueError("tokenizer.json has a normalizer; byte-level BPE here applies none, remove it")
    vocab = dict(model.get("vocab", {}))
    special_tokens = []
    for token in document.get("added_tokens", []):
        flags = [key for key in ("lstrip", "rstrip", "single_word") if token.get(key)]
        if not token.get("special") or flags:
            problem = f"sets {flags}" if flags else "is not special"
            raise ValueError(
                f"added token {token['content']!r} {problem}; only plain special tokens are supported"
            )
        if vocab.setdefault(token["content"], token["id"]) != token["id"]:
            raise ValueError(
                f"added token {token['content']!r} has id {token['id']}, the model vocab another"
            )
        special_tokens.append(token["content"])
    merges = [
        tuple(pair.split(" ")) if isinstance(pair, str) else tuple(pair) for pair in model.get("merges", [])
    ]
    return {
        "vocab": vocab,
        "merges": merges,
        "special_tokens": special_tokens,
        "pattern": _pattern_of(document.get("pre_tokenizer")),
    }


def _pattern_of(pre_tokenizer: Any) -> str:
    def is_byte_level(step: Any, use_regex: bool) -> bool:
        return (
            isinstance(step, dict)
            and step.get("type") == "ByteLevel"
            and not step.get("add_prefix_space")
            and step.get("use_regex", True) == use_regex
        )

    def is_isolated_regex_split(step: Any) -> bool:
        return (
            isinstance(step, dict)
            and step.get("type") == "Split"
            and "Regex" in step.get("pattern", {})
            and step.get("behavior") == "Isolated"
            and not step.get("invert")
        )

    if is_byte_level(pre_tokenizer, use_regex=True):
        return GPT2_PATTERN
    steps = pre_tokenizer.get("pretokenizers") if isinstance(pre_tokenizer, dict) else None
    if (
        isinstance(steps, list)
        and pre_tokenizer["type"] == "Sequence"
        and len(steps) == 2
        and is_isolated_regex_split(steps[0])
        and is_byte_level(steps[1], use_regex=False)
    ):
        return steps[0]["pattern"]["Regex"]
    raise ValueError(
        f"unsupported pre_tokenizer {json.dumps(pre_tokenizer)}; expected ByteLevel(add_prefix_space=false,"
        " use_regex=true) or Sequence[Split(Regex, Isolated), ByteLevel(add_prefix_space=false,"
        " use_regex=false)]"
    )
