"""`tracking: false` (params.yaml): every stage runs where mlflow is not installed, logs nothing, and writes the
same outputs as a tracked run (a GPU box without MLflow; a quick trial that should not fill the store)."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, copy_repo

WITHOUT_MLFLOW = """
import os, runpy, sys
sys.modules["mlflow"] = None  # as if not installed: any import of it fails
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python script.py` does (pipelines/_checkout)
runpy.run_path(sys.argv[0], run_name="__main__")
"""
UNTRAINED = ["download", "prepare", "build_tasks", "train_tokenizer", "tokenize_data", "evaluate", "summarize"]


def test_every_stage_module_imports_without_mlflow():
    stages = sorted(p.stem for p in (ROOT / "src/tinylm/pipeline/stages").glob("*.py") if p.stem != "__init__")
    code = "import sys; sys.modules['mlflow'] = None\n" + "".join(
        f"import tinylm.pipeline.stages.{s}\n" for s in stages)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(stages) == 11


@pytest.mark.slow
def test_the_stages_run_without_mlflow_and_write_what_a_tracked_run_wrote(full, run, tmp_path):
    """The training stages' switch is tested in test_gpu_path (pretrain without mlflow); here the others, run
    first tracked (other tests may have retrained a model of `full` since its evaluate ran), then not."""
    repo, env = copy_repo(full[0], tmp_path / "tracked"), full[1]
    for stage in UNTRAINED:
        run([sys.executable, f"pipelines/{stage}.py"], repo, env)
    work = copy_repo(repo, tmp_path / "untracked")
    (work / "mlflow.db").unlink()
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump({**params, "tracking": False}, sort_keys=False))
    for stage in UNTRAINED:
        out = run([sys.executable, "-c", WITHOUT_MLFLOW, f"pipelines/{stage}.py"], work, env)
        assert "mlflow" not in out.stderr.lower(), out.stderr[-2000:]
    assert not (work / "mlflow.db").exists()
    assert "tracking is off" in out.stdout
    for path in ["reports/data/corpus.json", "reports/data/tasks.json", "reports/data/tokenizer.json",
                 "reports/data/tokens.json", "data/tokens/meta.json", "reports/eval/metrics.json",
                 "reports/eval/report.md", "reports/headline/decoder.json"]:
        assert (work / path).read_bytes() == (repo / path).read_bytes(), path
    assert json.loads((work / "reports/headline/decoder.json").read_text())["val_loss"] > 0
