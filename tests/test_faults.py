"""Bad inputs and faults the pipeline meets in practice give one clear error naming the file and the fix, and
lose nothing already written: corrupt token files, mismatched tokenizers and models, empty task sets, a full
disk, a read-only output folder, Ctrl-C during every stage, non-UTF-8 corpus files, a hub dataset offline."""

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from tinylm.data.atomic import atomic_dir, atomic_file, write_json, write_text
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


# --- A full disk: the write fails midway; the previous output stays byte for byte, no temporary file is left.

def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_in_atomic_file_and_write_text_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"loss": 1.0})
    before = files_of(tmp_path)
    with pytest.raises(OSError, match=r"cannot write .*metrics\.json: the disk is full.*free space") as e:
        with atomic_file(target) as tmp:
            tmp.write_bytes(b'{"loss": ')  # half of the new file, then the disk fills up
            enospc()
    assert e.value.errno == errno.ENOSPC
    real_write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real_write_text(self, text[:len(text) // 2], *args, **kwargs)
        enospc()

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match=r"cannot write .*metrics\.json: the disk is full"):
        write_json(target, {"loss": 0.5, "steps": 100})
    assert files_of(tmp_path) == before


def test_disk_full_in_atomic_dir_keeps_the_previous_folder(tmp_path):
    out = tmp_path / "data" / "corpus"
    with atomic_dir(out) as tmp:
        (tmp / "train.arrow").write_bytes(b"old rows")
    before = files_of(tmp_path)
    with pytest.raises(OSError, match=r"cannot write .*data/corpus: the disk is full"):
        with atomic_dir(out) as tmp:
            (tmp / "train.arrow").write_bytes(b"new ro")
            write_text(tmp / "state.json", "{}")
            enospc()
    assert files_of(tmp_path) == before


def test_disk_full_while_saving_a_model_keeps_the_previous_model_whole(tmp_path, monkeypatch):
    """config.json and model.safetensors are replaced together: a failed save never mixes a new config with
    old weights (which would not load)."""
    import tinylm.models.io as model_io

    def tiny(n_embd):
        return build_model(presets("gpt2", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=n_embd))

    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    out = tmp_path / "models" / "decoder"
    save_pretrained(tiny(16), out, {"tokenizer.json": tok})
    before = files_of(tmp_path / "models")
    real_save_model = model_io.save_model

    def half_then_full(model, filename, *args, **kwargs):
        real_save_model(model, filename, *args, **kwargs)
        Path(filename).write_bytes(Path(filename).read_bytes()[:1000])
        enospc()

    monkeypatch.setattr(model_io, "save_model", half_then_full)
    with pytest.raises(OSError, match=r"cannot write .*model\.safetensors: the disk is full"):
        save_pretrained(tiny(32), out, {"tokenizer.json": tok})
    monkeypatch.setattr(model_io, "save_model", real_save_model)
    monkeypatch.setattr(model_io.shutil, "copyfile", enospc)  # the last file fails
    with pytest.raises(OSError, match=r"cannot write .*tokenizer\.json: the disk is full"):
        save_pretrained(tiny(32), out, {"tokenizer.json": tok})
    assert files_of(tmp_path / "models") == before
    assert load_pretrained(out).config.n_embd == 16


# --- Non-UTF-8 corpus files and a hub dataset while offline.

@pytest.mark.parametrize("name, data", [("notes.txt", b"To be, or not\n\xe9t\xe9\n"),
                                        ("lines.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')],
                         ids=["txt", "jsonl"])
def test_non_utf8_bytes_in_a_local_file_name_the_file_the_offset_and_the_fix(tmp_path, name, data):
    from types import SimpleNamespace

    from tinylm.data.sources import download

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.txt").write_text("All the world's a stage.\n")
    cfg = SimpleNamespace(source="files", name=None, path=str(tmp_path / "in" / "*"))
    download(cfg, tmp_path / "raw")
    before = files_of(tmp_path / "raw")
    (tmp_path / "in" / name).write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"in/{name}: not valid UTF-8 at byte {offset} .*re-encode the file as UTF-8"):
        download(cfg, tmp_path / "raw")
    assert files_of(tmp_path / "raw") == before


def hub_download(tmp_path: Path, **env) -> tuple[float, str]:
    """Seconds and stderr of fetch_hub of a dataset that is in no cache, in a fresh process with `env`."""
    import os
    import subprocess
    import sys
    import time

    code = ("import sys; from pathlib import Path; from tinylm.data.sources import fetch_hub; "
            "fetch_hub('roneneldan/TinyStories', None, 'train', 10, Path(sys.argv[1]))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLFLOW_"))}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hub")], capture_output=True, text=True,
                         env={**base, "HF_HOME": str(tmp_path / "hf-home"), **env}, timeout=120)
    assert out.returncode != 0 and not (tmp_path / "hub").exists()
    return time.perf_counter() - t0, out.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_hub_dataset_offline_fails_at_once_saying_what_to_do(tmp_path):
    seconds, error = hub_download(tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert seconds < 20, seconds
    assert "ConnectionError: offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is not in " \
           "the local cache" in error
    assert "data=files data.path=" in error and "HF_HUB_OFFLINE" in error


@pytest.mark.slow
def test_an_unreachable_hub_fails_within_seconds_not_after_retries(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on: the hub as seen from a machine offline
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    seconds, error = hub_download(tmp_path, HF_ENDPOINT=endpoint)
    assert seconds < 20, seconds
    assert f"the Hugging Face hub ({endpoint}) is unreachable" in error and "data=files data.path=" in error
