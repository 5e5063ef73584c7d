"""Bad inputs and faults the pipeline meets in practice give one clear error naming the file and the fix, and
lose nothing already written: corrupt token files, mismatched tokenizers and models, empty task sets, a full
disk, a read-only output folder, Ctrl-C during every stage, non-UTF-8 corpus files, a hub dataset offline."""

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, copy_repo, run_cmd

from tinylm.atomic import atomic_dir, atomic_file, write_json, write_text
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
    import datasets

    from tinylm.pipeline.stages.build_tasks import check_not_empty

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


# --- Ctrl-C during every stage, and a read-only output folder: the stage commands of dvc.yaml run as
# subprocesses in copies of the smoke pipeline repository after `dvc repro` (the session's `full` fixture).

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = [f"{name}@{item}" if item else name for name, spec in DVC.items() for item in spec.get("foreach", [None])]
# What a stage prints once it is at work, and the seconds to wait after that before Ctrl-C; None: the sign is
# the stage's running MLflow run (it prints nothing while it works, or too little of its work is left then).
WORKING = {"download": ("pip download", 0), "prepare": ("parse plays", 0), "build_tasks": (None, 0),
           "train_tokenizer": ("BPE merges", 0), "tokenize": ("tokenize train", 0.3),  # after the pool's fork
           **dict.fromkeys(["pretrain@decoder", "pretrain@encoder", "sft", "classify", "train_seq2seq"],
                           ("GPU available", 0.5)),  # Lightning's Trainer is built: training starts
           "evaluate": (None, 0.5), "summarize": ("summarize: logging", 0)}
# Hydra overrides that keep the expensive stages short: 100 training steps (a few seconds on the smoke
# experiment's one thread: 10 steps, 0.4 s, ended before the Ctrl-C came), 2 evaluation items, 1 val batch.
SHORTER = {"pretrain@decoder": ["trainer.max_steps=100"], "pretrain@encoder": ["encoder.train.max_steps=100"],
           "sft": ["sft.train.max_steps=100"], "classify": ["cls.train.max_steps=100"],
           "train_seq2seq": ["seq2seq.train.max_steps=100"], "evaluate": ["eval.max_items=2", "eval.beams=[2]"]}


def stage(name: str) -> tuple[list[str], list[str]]:
    """The command (with SHORTER's overrides) and the output paths (outs, metrics, plots) of a dvc.yaml stage."""
    base, _, item = name.partition("@")
    spec = json.loads(json.dumps(DVC[base]["do"] if item else DVC[base]).replace("${item}", item))
    outs = [next(iter(o)) if isinstance(o, dict) else o for k in ("outs", "metrics", "plots") for o in spec.get(k, [])]
    shorter = ["experiment=smoke", "trainer.val_batches=1", *SHORTER[name]] if name in SHORTER else []
    return [*spec["cmd"].split(), *shorter], outs


def check_readable(path: Path) -> None:
    """Read an output back as the pipeline does; raises if it is incomplete or corrupt."""
    import csv

    import datasets

    from tinylm.data.sources import sha256_file
    from tinylm.tokenizer import BPETokenizer

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".jsonl":
        assert [json.loads(line) for line in path.read_text().splitlines()]
    elif path.suffix == ".csv":
        assert list(csv.DictReader(path.open()))
    elif path.suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and data[-8:-4] == b"IEND", path
    elif path.suffix == ".md":
        assert path.read_text().strip()
    elif path.name == "raw":
        for name, sha in json.loads((path / "manifest.json").read_text())["files"].items():
            assert sha256_file(next(path.rglob(name))) == sha
    elif path.name == "tokenizer":
        BPETokenizer.load(path / "tokenizer.json")
    elif path.name == "tokens":
        for split in json.loads((path / "meta.json").read_text())["splits"]:
            read_tokens(path, split, path.parent.parent / "artifacts/tokenizer/tokenizer.json")
        datasets.load_from_disk(str(path / "sft")), datasets.load_from_disk(str(path / "cls"))
    elif path.parent.name == "models":
        load_pretrained(path)
    else:
        datasets.load_from_disk(str(path))


def leftovers(repo: Path) -> list[Path]:
    """Temporary files and folders of atomic writes left in the output folders."""
    return [p for top in ("data", "artifacts", "models", "reports") for p in (repo / top).rglob("*")
            if ".tmp" in p.name or ".old-" in p.name or ".write-check-" in p.name]


def mlflow_running(repo: Path, experiment: str) -> bool:
    with closing(sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT count(*) FROM runs JOIN experiments ON runs.experiment_id = experiments.experiment_id"
                          " WHERE experiments.name = ? AND runs.status = 'RUNNING'", (experiment,)).fetchone()[0] > 0


def ctrl_c(cmd: list[str], repo: Path, env: dict, working, delay: float) -> tuple[int, str]:
    """Start `cmd` in its own process group; once working(output so far) is true and `delay` seconds more have
    passed, send SIGINT to the group, as Ctrl-C in a terminal does. Returns the exit code and the output."""
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    chunks = []

    def pump():
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            chunks.append(chunk)

    def output() -> str:
        return b"".join(chunks).decode(errors="replace")

    reader = threading.Thread(target=pump)
    reader.start()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not working(output()):
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=120)
        left = time.monotonic() + 10  # the stage's workers must end with it, not hold its pipes open
        while _group_alive(proc.pid) and time.monotonic() < left:
            time.sleep(0.05)
        stray = _group_alive(proc.pid)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join()
    assert not stray, f"the stage left processes running after Ctrl-C:\n{output()[-3000:]}"
    return proc.returncode, output()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def ctrl_c_then_rerun(name: str, full: tuple[Path, dict], tmp: Path) -> None:
    """In a copy of the pipeline: Ctrl-C stage `name` at work; its outputs must be the previous ones or whole
    new ones, never half-written, with no temporary file left; then the stage must run through."""
    repo = copy_repo(full[0], tmp / "repo")
    env = {**full[1], "PYTHONPATH": str(repo / "src")}
    cmd, outs = stage(name)
    for out in outs:
        assert (repo / out).exists(), out  # the previous, complete outputs
        if out.startswith("models/"):
            (repo / out / "last.ckpt").unlink()  # the stage then trains afresh instead of resuming at the end
    text, delay = WORKING[name]
    # one press, whatever it lands in: where CPython swallows the KeyboardInterrupt (a weakref callback, os.fork's
    # hooks: "Exception ignored") the stage runs on, and tinylm.ctrl_c.stage_main raises it at the end
    code, output = ctrl_c(cmd, repo, env, (lambda out: text in out) if text else
                          (lambda out: mlflow_running(repo, name)), delay)
    assert code != 0 and "KeyboardInterrupt" in output, f"{name} not interrupted ({code}):\n{output[-3000:]}"
    for out in outs:
        check_readable(repo / out)
    assert not leftovers(repo)
    run_cmd(cmd, repo, env)
    for out in outs:
        check_readable(repo / out)
    assert not leftovers(repo)
    shutil.rmtree(repo)


@pytest.fixture(scope="module")
def ctrl_c_results(full, tmp_path_factory) -> dict[str, BaseException | None]:
    """`ctrl_c_then_rerun` of every stage, two at a time (each stage runs on one core; CI has two): name -> the
    failure, or None."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:  # inherited (a runner started in the background): the stages would inherit it and ignore Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ThreadPoolExecutor(2) as pool:  # the last stages first: they take longest
            runs = {n: pool.submit(ctrl_c_then_rerun, n, full, tmp_path_factory.mktemp("ctrl-c")) for n in STAGES[::-1]}
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return {name: run.exception() for name, run in runs.items()}


def test_every_stage_of_dvc_yaml_has_a_ctrl_c_test():
    assert sorted(STAGES) == sorted(WORKING)


@pytest.mark.slow
@pytest.mark.parametrize("name", STAGES)
def test_ctrl_c_during_a_stage_leaves_whole_outputs_and_a_rerun_recovers(name, ctrl_c_results):
    if ctrl_c_results[name]:
        raise ctrl_c_results[name]


def unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` run so that folder permissions bind: as it is for a user; for root, without CAP_DAC_OVERRIDE."""
    if os.geteuid():
        return cmd
    drop = ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", "--"]
    if not shutil.which("setpriv") or subprocess.run([*drop, "true"], capture_output=True).returncode:
        pytest.skip("as root, a read-only folder needs setpriv (util-linux) able to drop CAP_DAC_OVERRIDE")
    return [*drop, *cmd]


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, out", [("prepare", "data", "data/corpus"),
                                               ("pretrain@encoder", "models/encoder", "models/encoder")],
                         ids=["prepare", "pretrain@encoder"])
def test_a_read_only_output_folder_stops_the_stage_with_the_fix_and_loses_nothing(name, folder, out, full, tmp_path):
    """prepare finds data/ read-only when it writes data/corpus; pretrain checks models/encoder before training."""
    repo = copy_repo(full[0], tmp_path / "repo")
    env = {**full[1], "PYTHONPATH": str(repo / "src")}
    cmd = unprivileged(stage(name)[0])
    before = files_of(repo / folder)
    (repo / folder).chmod(0o555)
    try:
        done = run_cmd(cmd, repo, env, check=False)
    finally:
        (repo / folder).chmod(0o755)
    error = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and "GPU available" not in done.stdout + done.stderr  # pretrain: before training
    assert error == (f"PermissionError: [Errno 13] cannot write {out}: folder {folder} is not writable (Permission "
                     f"denied); make it writable (chmod u+w {folder}, or remount it read-write) or run from a "
                     "writable copy"), error
    assert files_of(repo / folder) == before and not leftovers(repo)
