"""Token files: pretraining memmaps and tokenized task sets.

Pretraining (`write_pretrain`): `<split>.bin` = the ids of every document of the split, each followed by
<|endoftext|>, as a flat uint16 array (uint32 when the vocabulary exceeds 65536); `meta.json` holds
vocab_size, dtype, the special token ids, the tokenizer's sha256 and per split the token and document
counts. A document is one `doc`'s consecutive corpus rows (a play's scenes of the split), joined by a blank
line. Read back with `read_tokens(dir, split)` (a read-only np.memmap).

Task sets (`encode_sft`, `encode_cls`: datasets.map in this process; a pool of two measured no faster on the
default sets, 1.08-1.10 s against 1.17-1.34 s for SFT and 0.19 s against 0.09 s for the genre passages):
- SFT, decoder-only: `input_ids` = (prompt + response)[:-1] and `labels` already shifted (labels[t] is the
  target of position t), -100 on the prompt, both cut to max_length; a sample whose response is cut off
  entirely is dropped. Also `prompt_ids` (what the model sees before answering, for generation),
  `src_ids` (the bare prompt) and `response_ids` (response + <|endoftext|>) for the encoder-decoder.
  Padding is the collate function's (pad <|pad|>, labels -100).
- Classification: `input_ids` = [CLS] passage [SEP] (passage cut to fit max_length), `labels` = class id.
Ids come from tinylm's BPETokenizer loading tokenizer.json (the same ids as HF `tokenizers`; on whole
documents its cached encoder is several times faster here than `tokenizers`' encode_batch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from tinylm.atomic import write_json
from tinylm.data.chat import ChatTemplate
from tinylm.data.sources import sha256_file
from tinylm.data.special_tokens import CLS, EOS, SEP, SPECIAL_TOKENS
from tinylm.tokenizer import BPETokenizer

if TYPE_CHECKING:  # `datasets` is imported where the task sets are encoded: reading tokens needs none of it
    import datasets

_TOKENIZERS: dict[str, BPETokenizer] = {}


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """The BPETokenizer of a tokenizer.json, cached per process."""
    key = str(Path(path).resolve())
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = BPETokenizer.load(key)
    return _TOKENIZERS[key]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def special_ids(tok) -> dict[str, int]:
    """{special token: id}; every token of SPECIAL_TOKENS must be in the tokenizer."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}: retrain it (train_tokenizer)")
    return ids


def documents(ds: datasets.Dataset) -> Iterator[str]:
    """The split's documents: consecutive rows with the same `doc`, joined by a blank line."""
    doc, parts = None, []
    for row in ds.select_columns(["doc", "text"]):
        if row["doc"] != doc and parts:
            yield "\n\n".join(parts)
            parts = []
        doc = row["doc"]
        parts.append(row["text"])
    if parts:
        yield "\n\n".join(parts)


def write_pretrain(corpus: datasets.DatasetDict, tokenizer_path: str | Path, out: Path, num_proc: int = 1) -> dict:
    """Write `<split>.bin` for each corpus split and meta.json into `out/` (a fresh folder); returns meta.

    Documents are encoded whole, in `num_proc` processes (BPETokenizer.encode_arrays), and streamed to disk.
    """
    tok = load_tokenizer(tokenizer_path)
    vocab_size = tok.vocab_size
    dtype, eos = token_dtype(vocab_size), special_ids(tok)[EOS]
    meta = {"vocab_size": vocab_size, "dtype": dtype.name, "special_tokens": special_ids(tok),
            "tokenizer_sha256": sha256_file(tokenizer_path), "splits": {}}
    eos_ids = np.asarray([eos], dtype)
    for split, ds in corpus.items():
        n_tokens = n_docs = 0
        with open(out / f"{split}.bin", "wb") as f, tqdm(desc=f"tokenize {split}", unit="doc") as bar:
            # allowed_special=(): "<|endoftext|>" written in a document is text, not a document boundary
            for ids in tok.encode_arrays(documents(ds), dtype, allowed_special=(), num_workers=num_proc):
                ids.tofile(f)
                eos_ids.tofile(f)
                n_tokens += len(ids) + 1
                n_docs += 1
                bar.update()
                bar.set_postfix(tokens=n_tokens, refresh=False)
        meta["splits"][split] = {"tokens": n_tokens, "documents": n_docs}
    write_json(out / "meta.json", meta)
    return meta


def read_tokens(folder: str | Path, split: str, tokenizer_path: str | Path | None = None) -> np.memmap:
    """The tokens of `<folder>/<split>.bin` (dtype from meta.json), memory-mapped read-only.

    Checked before use: meta.json parses and names the split; the file's size is a whole number of tokens
    and matches meta.json's count; with `tokenizer_path`, that tokenizer is the one the tokens were made
    with (sha256). Each failure names the file and the fix (re-run the tokenize stage).
    """
    folder = Path(folder)
    fix = "re-run the tokenize stage (`dvc repro tokenize`)"
    try:
        meta = json.loads((folder / "meta.json").read_text())
        dtype, expected = np.dtype(meta["dtype"]), meta["splits"][split]["tokens"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder / 'meta.json'} is missing or unreadable ({type(e).__name__}: {e}): {fix}") from None
    path = folder / f"{split}.bin"
    size = path.stat().st_size if path.exists() else -1
    if size < 0 or size % dtype.itemsize or size // dtype.itemsize != expected:
        raise ValueError(f"{path} is missing, truncated or corrupt: {size} bytes, meta.json expects {expected} "
                         f"{dtype.name} tokens ({expected * dtype.itemsize} bytes): {fix}")
    if tokenizer_path is not None and sha256_file(tokenizer_path) != meta["tokenizer_sha256"]:
        raise ValueError(f"{tokenizer_path} is not the tokenizer {path} was made with (sha256 differs from "
                         f"{folder / 'meta.json'}): {fix}")
    return np.memmap(path, dtype=dtype, mode="r")


def _encode_sft(batch: dict, tokenizer_path: str, max_length: int) -> dict:
    tmpl = ChatTemplate.from_tokenizer(load_tokenizer(tokenizer_path))
    out = {k: [] for k in ("input_ids", "labels", "prompt_ids", "src_ids", "response_ids")}
    for prompt, response in zip(batch["prompt"], batch["response"], strict=True):
        p, r = tmpl.prompt_ids(prompt), tmpl.response_ids(response)
        out["input_ids"].append((p + r)[:-1][:max_length])
        out["labels"].append(([-100] * (len(p) - 1) + r)[:max_length])
        out["prompt_ids"].append(p)
        out["src_ids"].append(tmpl.encode(prompt)[:max_length])
        out["response_ids"].append(r[:max_length])
    return out


def encode_sft(sft: datasets.DatasetDict, tokenizer_path: str | Path, max_length: int) -> datasets.DatasetDict:
    """Tokenize SFT prompt/response pairs (see the module docstring); fully truncated responses dropped."""
    import datasets

    kw = {"tokenizer_path": str(tokenizer_path), "max_length": max_length}
    out = {}
    for split, ds in sft.items():
        ds = ds.map(_encode_sft, batched=True, fn_kwargs=kw, keep_in_memory=True, desc=f"sft {split}")
        out[split] = ds.filter(lambda labels: any(x != -100 for x in labels), input_columns="labels",
                               keep_in_memory=True, desc=f"sft {split}: drop truncated")
    return datasets.DatasetDict(out)


def _encode_cls(batch: dict, tokenizer_path: str, max_length: int) -> dict:
    tok = load_tokenizer(tokenizer_path)
    cls, sep = tok.token_to_id(CLS), tok.token_to_id(SEP)
    texts = tok.encode_batch(batch["text"], allowed_special=())  # "[SEP]" in a passage is text
    return {"input_ids": [[cls, *ids[: max_length - 2], sep] for ids in texts],
            "labels": batch["label"]}


def encode_cls(cls_sets: datasets.DatasetDict, tokenizer_path: str | Path, max_length: int) -> datasets.DatasetDict:
    """Tokenize classification passages (see the module docstring)."""
    import datasets

    kw = {"tokenizer_path": str(tokenizer_path), "max_length": max_length}
    out = {}
    for split, ds in cls_sets.items():
        out[split] = ds.map(_encode_cls, batched=True, fn_kwargs=kw, keep_in_memory=True, desc=f"cls {split}")
    return datasets.DatasetDict(out)
