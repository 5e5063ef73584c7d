"""Stage deps in dvc.yaml are the import closures of the stage scripts (tinylm.pipeline.deps)."""

from pathlib import Path

import pytest

from tinylm.pipeline import deps

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_are_the_import_closures():
    have, want = deps.declared(ROOT / "dvc.yaml"), deps.derived(ROOT / "dvc.yaml")
    assert have.keys() == want.keys() and len(want) >= 10
    for stage in want:
        assert sorted(have[stage]) == want[stage], (
            f"{stage}: dvc.yaml lists {sorted(have[stage])}, its imports need {want[stage]}; "
            "run `python -m tinylm.pipeline.deps --write`")


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def repo(tmp_path):
    write(tmp_path, {
        "pipelines/stage.py": "import sys\nimport beside\nfrom tinylm.s import P\nfrom tinylm.a import f\n"
                              "import numpy\n",
        "pipelines/beside.py": "", "pipelines/other.py": "",
        "src/tinylm/s.py": "from tinylm.pipeline.config import load\nfrom tinylm.pipeline import tracking\nP = 1\n",
        "src/tinylm/__init__.py": "", "src/tinylm/pipeline/__init__.py": "",
        "src/tinylm/pipeline/config.py": "from tinylm.models import big\n",  # a dep, but its imports are not followed
        "src/tinylm/pipeline/tracking.py": "from tinylm.models import big\n",  # bookkeeping: neither it nor its imports
        "src/tinylm/models/__init__.py": "", "src/tinylm/models/big.py": "",
        "src/tinylm/a/__init__.py": "", "src/tinylm/a/x.py": "",
        "src/tinylm/a/f.py": "from . import x\n\ndef g():\n    from ..b.y import h\n",
        "src/tinylm/b/__init__.py": "", "src/tinylm/b/y.py": "", "src/tinylm/b/z.py": "",
    })
    return tmp_path


def test_closure_follows_every_import_but_bookkeeping(repo):
    assert deps.closure("pipelines/stage.py", repo) == {
        "pipelines/stage.py", "pipelines/beside.py", "src/tinylm/s.py", "src/tinylm/__init__.py",
        "src/tinylm/pipeline/__init__.py", "src/tinylm/pipeline/config.py", "src/tinylm/a/__init__.py",
        "src/tinylm/a/f.py", "src/tinylm/a/x.py",  # relative `from . import x`
        "src/tinylm/b/__init__.py", "src/tinylm/b/y.py"}  # a function-level relative import runs too


def test_a_folder_stands_for_its_files_only_when_all_are_imported(repo):
    files = deps.closure("pipelines/stage.py", repo)
    assert deps.compress(files, repo) == ["pipelines/beside.py", "pipelines/stage.py", "src/tinylm/__init__.py",
                                          "src/tinylm/a", "src/tinylm/b/__init__.py", "src/tinylm/b/y.py",
                                          "src/tinylm/pipeline/__init__.py", "src/tinylm/pipeline/config.py",
                                          "src/tinylm/s.py"]


def test_drift_is_reported_and_write_fixes_it(repo, monkeypatch, capsys):
    (repo / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python pipelines/stage.py\n    deps:\n"
                                   "      - pipelines/stage.py\n      - src/tinylm/b\n      - data/in\n"
                                   "    outs:\n      - data/out\n")
    monkeypatch.chdir(repo)
    assert deps.main([]) == 1
    assert "s: missing ['pipelines/beside.py', 'src/tinylm/__init__.py', 'src/tinylm/a'" in capsys.readouterr().out
    assert deps.main(["--write"]) == 0
    text = (repo / "dvc.yaml").read_text()
    assert "      - src/tinylm/a\n" in text and "src/tinylm/b\n" not in text and "      - data/in\n" in text
    assert text.index("data/in") > text.index("src/tinylm/a") and "outs:\n      - data/out\n" in text


def test_stage_scripts_run_their_own_checkouts_code(tmp_path):
    """`dvc exp run --temp` runs a copy of the repository: its scripts must import the copy's src/, not the one an
    (editable) install of tinylm points at."""
    import shutil
    import subprocess
    import sys

    for folder in ("pipelines", "src"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    init = tmp_path / "src/tinylm/__init__.py"
    init.write_text(init.read_text() + "\nprint('tinylm from', __file__)\n")
    for script in sorted((ROOT / "pipelines").glob("[!_]*.py")):
        assert "import _checkout" in script.read_text(), f"{script.name} does not import _checkout first"
    done = subprocess.run([sys.executable, str(tmp_path / "pipelines/download.py"), "no.such=key"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert f"tinylm from {init}" in done.stdout


def test_training_fingerprint_hashes_the_stages_code(tmp_path, monkeypatch):
    from tinylm.pipeline import training_stage

    digest = training_stage.code_digest("pretrain")
    assert {"pipelines/pretrain.py", "src/tinylm/pipeline/config.py", "src/tinylm/nn/attention.py",
            "src/tinylm/training/fit.py"} <= digest.keys()
    assert not {"src/tinylm/pipeline/tracking.py", "src/tinylm/evaluation/statistics.py"} & digest.keys()
    import shutil

    for folder in ("pipelines", "src"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(training_stage, "ROOT", tmp_path)
    assert training_stage.code_digest("pretrain") == digest
    (tmp_path / "src/tinylm/nn/attention.py").write_text("# edited\n", encoding="utf-8")
    changed = training_stage.code_digest("pretrain")
    assert [f for f in digest if changed.get(f) != digest[f]] == ["src/tinylm/nn/attention.py"]
