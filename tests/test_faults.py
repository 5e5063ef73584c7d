"""Bad inputs the pipeline meets in practice give one clear error naming the file and the fix."""

import json

import numpy as np
import pytest

from tinylm.data.tokens import read_tokens
from tinylm.models import build_model, presets
from tinylm.models.io import load_pretrained, save_pretrained


@pytest.fixture
def tokens(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"model": "a"}')
    from tinylm.data.sources import sha256_file

    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    meta = {"dtype": "uint16", "tokenizer_sha256": sha256_file(tok), "splits": {"train": {"tokens": 100}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path, tok


def test_read_tokens_accepts_a_consistent_split(tokens):
    folder, tok = tokens
    assert read_tokens(folder, "train", tok).tolist() == list(range(100))


def test_truncated_token_file(tokens):
    folder, _ = tokens
    data = (folder / "train.bin").read_bytes()
    (folder / "train.bin").write_bytes(data[:-1])  # not a whole number of uint16 tokens
    with pytest.raises(ValueError, match=r"train\.bin is missing, truncated or corrupt: 199 bytes.*dvc repro tokenize"):
        read_tokens(folder, "train")
    (folder / "train.bin").write_bytes(data[:-2])  # whole tokens, but fewer than meta.json says
    with pytest.raises(ValueError, match="meta.json expects 100 uint16 tokens"):
        read_tokens(folder, "train")


def test_wrong_meta(tokens):
    folder, _ = tokens
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta\.json is missing or unreadable.*re-run the tokenize stage"):
        read_tokens(folder, "train")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16", "splits": {}}))
    with pytest.raises(ValueError, match="KeyError"):
        read_tokens(folder, "train")


def test_tokenizer_from_another_corpus(tokens):
    folder, tok = tokens
    tok.write_text('{"model": "retrained on something else"}')
    with pytest.raises(ValueError, match=r"tokenizer\.json is not the tokenizer .*train\.bin was made with"):
        read_tokens(folder, "train", tok)


def test_model_dir_with_weights_of_another_config(tmp_path):
    save_pretrained(build_model(presets("gpt2", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)),
                    tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit .*config\.json"):
        load_pretrained(tmp_path)


def test_missing_model_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a tinylm model directory.*dvc repro"):
        load_pretrained(tmp_path / "models" / "decoder")


def test_an_empty_task_set_stops_build_tasks_with_the_fix():
    import sys
    from pathlib import Path

    import datasets

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
    from build_tasks import check_not_empty

    sft = datasets.DatasetDict({s: datasets.Dataset.from_dict({"prompt": ["q"] * (s != "val")}) for s in
                                ("train", "val", "test")})
    cls = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})})
    with pytest.raises(SystemExit, match="SFT set has no val items.*sft=alpaca"):
        check_not_empty(sft, cls)
    full = datasets.DatasetDict({s: datasets.Dataset.from_dict({"prompt": ["q"]}) for s in ("train", "val", "test")})
    check_not_empty(full, cls)
    with pytest.raises(SystemExit, match="classification set has no train items.*data.label_field"):
        check_not_empty(full, datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": []})}))
