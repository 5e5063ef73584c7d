"""A run against a reference dvc.lock (tinylm.pipeline.reference): the comparison on small locks and the command
against a committed lock in a git repository."""

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tinylm.pipeline.reference import compare, main, reproduced


def lock(model_md5="a.dir", speed_md5="s1", code_md5="c1", lr=1e-3) -> dict:
    return {"schema": "2.0", "stages": {
        "download": {"cmd": "python pipelines/download.py", "deps": [{"path": "pipelines/download.py", "md5": "d"}],
                     "outs": [{"path": "data/raw", "md5": "r.dir"}]},
        "pretrain@decoder": {"cmd": "python pipelines/pretrain.py decoder",
                             "deps": [{"path": "src/tinylm/models/gpt.py", "md5": code_md5}],
                             "params": {"params.yaml": {"trainer.lr": lr}},
                             "outs": [{"path": "models/decoder", "md5": model_md5},
                                      {"path": "reports/decoder/metrics.json", "md5": "m"},
                                      {"path": "reports/speed/decoder.json", "md5": speed_md5}]}}}


def test_compare_leaves_out_wall_clock_and_tells_changed_inputs_from_other_bytes():
    same = compare(lock(), lock(speed_md5="s2"))  # only the wall-clock file differs
    assert reproduced(same) and same["pretrain@decoder"] == {"status": "reproduced", "differs": []}
    reads_speed = lock(speed_md5="s2")  # a stage that reads the wall-clock file (summarize logs it)
    reads_speed["stages"]["download"]["deps"].append({"path": "reports/speed/decoder.json", "md5": "s2"})
    reference = lock()
    reference["stages"]["download"]["deps"].append({"path": "reports/speed/decoder.json", "md5": "s1"})
    assert reproduced(compare(reference, reads_speed))
    other = compare(lock(), lock(model_md5="b.dir"))
    assert not reproduced(other) and other["pretrain@decoder"] == {"status": "differs", "differs": ["models/decoder"]}
    assert other["download"]["status"] == "reproduced"
    for changed in (lock(model_md5="b.dir", code_md5="c2"), lock(model_md5="b.dir", lr=2e-3)):
        assert compare(lock(), changed)["pretrain@decoder"]["status"] == "inputs changed"
    partial = {"stages": {"download": lock()["stages"]["download"]}}
    assert compare(lock(), partial)["pretrain@decoder"]["status"] == "missing"
    assert compare(partial, lock())["pretrain@decoder"]["status"] == "new"


def test_the_command_reads_the_committed_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2 and "no reference" in capsys.readouterr().err  # not a git repository
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock()))
    subprocess.run([*git, "add", "dvc.lock"], check=True)
    subprocess.run([*git, "commit", "-qm", "reference"], check=True)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock(speed_md5="s2")))
    assert main([]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("reproduced: HEAD's dvc.lock")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock(model_md5="b.dir")))
    assert main([]) == 1
    out = capsys.readouterr().out
    assert "pretrain@decoder  differs: models/decoder" in out and "not reproduced" in out


# --- The smoke experiment against its own committed reference (tests/fixtures/smoke.dvc.lock), as a user checks
# the default run against the committed dvc.lock. Data stages are pure Python and must match everywhere; the
# training and evaluation stages' float sums depend on the CPU's kernels, so they are held to the reference only
# on the platform it was recorded on (tests/fixtures/smoke.platform.json).
SMOKE_LOCK = Path(__file__).parent / "fixtures" / "smoke.dvc.lock"
SMOKE_PLATFORM = SMOKE_LOCK.with_name("smoke.platform.json")
DATA_STAGES = ("download", "prepare", "build_tasks", "train_tokenizer", "tokenize")
REFRESH = ("refresh it after a change to the stages' code or params: TINYLM_UPDATE_REFERENCE=1 pytest "
           "tests/test_reference.py -k smoke, then commit tests/fixtures/smoke.*")


def this_platform() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "cpu": cpu, "python": platform.python_version()}


def own_inputs(lock: dict, stage: str) -> tuple:
    """A stage's code, params and source data: its deps less what other stages make (models differ on another
    CPU, so their consumers' inputs do too, while nothing the reference was made from changed)."""
    made = {o["path"] for s in lock["stages"].values() for o in s.get("outs", [])}
    spec = lock["stages"][stage]
    deps = {d["path"]: d.get("md5") for d in spec.get("deps", []) if d["path"] not in made}
    return deps, spec.get("params", {}), spec.get("cmd")


@pytest.mark.slow
def test_the_smoke_run_reproduces_its_committed_reference(full):
    repo, _ = full
    lock = yaml.safe_load((repo.parent / "first.dvc.lock").read_text())  # as the first `dvc repro` left it
    if os.environ.get("TINYLM_UPDATE_REFERENCE"):
        SMOKE_LOCK.write_text((repo.parent / "first.dvc.lock").read_text())
        SMOKE_PLATFORM.write_text(json.dumps(this_platform(), indent=2) + "\n")
    reference = yaml.safe_load(SMOKE_LOCK.read_text())
    result = compare(reference, lock)
    stale = {s for s, r in result.items() if r["status"] in ("missing", "new")} | {
        s for s in reference["stages"] if s in lock["stages"] and own_inputs(reference, s) != own_inputs(lock, s)}
    assert not stale, f"the committed reference is stale ({sorted(stale)}): {REFRESH}"
    data = {s: r["differs"] for s, r in result.items() if s in DATA_STAGES and r["status"] != "reproduced"}
    assert not data, f"data stages gave other bytes than the reference from the same inputs: {data}"
    recorded = json.loads(SMOKE_PLATFORM.read_text())
    if recorded != this_platform():
        pytest.skip(f"training outputs are compared on the reference's platform only: {recorded}, not "
                    f"{this_platform()}")
    assert reproduced(result), {s: r for s, r in result.items() if r["status"] != "reproduced"}
