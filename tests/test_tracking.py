"""tinylm.pipeline.tracking: where the store is (relative URIs taken from the repository root, as for DVC's
temporary experiment copies) and which pipeline run a stage run nests under (one per invocation key until
summarized; RUNNING only while a stage runs; a failed stage fails it; uncommitted changes make another key)."""

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tinylm.pipeline.tracking import (
    SUMMARIZED_TAG,
    log_pipeline_summary,
    pipeline_run_id,
    rooted_uri,
    stage_run,
    tracking_uri,
)


def test_relative_uris_are_taken_from_the_repository_root(tmp_path, monkeypatch):
    root = tmp_path / "main"
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.chdir(tmp_path)  # as DVC's temporary copy: anything relative to it is lost with it
    assert rooted_uri("sqlite:///rel/mlflow.db") == f"sqlite:///{root}/rel/mlflow.db"
    assert rooted_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert rooted_uri("file:runs") == (root / "runs").as_uri()
    assert rooted_uri("file:///abs/runs") == "file:///abs/runs"
    assert rooted_uri("runs") == str(root / "runs")
    for uri in ["/abs/runs", "http://host:5000", "postgresql://u@host/db", "databricks", "sqlite:///:memory:"]:
        assert rooted_uri(uri) == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow-rel.db")
    assert tracking_uri() == f"sqlite:///{root}/mlflow-rel.db"


def test_a_stage_in_a_temporary_copy_logs_to_the_main_repository(tmp_path, monkeypatch):
    root, copy = tmp_path / "main", tmp_path / "copy"
    root.mkdir(), copy.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow-rel.db")
    monkeypatch.chdir(copy)
    with stage_run("download", {"data": {"source": "x"}}) as run:
        pass
    assert (root / "mlflow-rel.db").exists() and not list(copy.iterdir())
    client = MlflowClient(f"sqlite:///{root / 'mlflow-rel.db'}")
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith((root / "mlruns").as_uri())
    assert (root / "mlruns").is_dir()


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with params.yaml, code, dvc.lock and a report committed, as the working directory, with
    its own store."""
    for path, text in {"params.yaml": "name: smoke\n", "src.py": "x = 1\n", "dvc.lock": "{}\n",
                       "reports/m.json": "{}\n"}.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def stage(name: str = "download") -> tuple[str, str]:
    """Run an empty stage; (its run id, its parent's)."""
    with stage_run(name, {"a": 1}) as run:
        return run.info.run_id, run.data.tags["mlflow.parentRunId"]


def test_stages_share_the_pipeline_run_until_summarize_ends_it(repo):
    client = MlflowClient(tracking_uri())
    _, parent = stage()
    assert client.get_run(parent).info.status == "FINISHED"  # nothing runs: a partial invocation is not left RUNNING
    with stage_run("prepare", {"a": 1}) as run:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert client.get_run(parent).info.status == "RUNNING"  # reopened while the stage runs
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.tags["git_dirty"] == "clean"
    assert log_pipeline_summary({"name": "smoke"}, []) == parent
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.tags[SUMMARIZED_TAG] == "true"
    _, after = stage()
    assert after != parent and pipeline_run_id() == after


def test_uncommitted_changes_start_another_pipeline_run_but_pipeline_outputs_do_not(repo):
    client = MlflowClient(tracking_uri())
    _, clean = stage()
    (repo / "dvc.lock").write_text("stages: {}\n")  # what DVC rewrites between stages
    (repo / "reports/m.json").write_text('{"loss": 1}\n')
    (repo / "untracked.py").write_text("")
    assert stage()[1] == clean
    (repo / "params.yaml").write_text("name: other\n")  # other params: another key, yet no code changed
    _, other = stage()
    assert other != clean and client.get_run(other).data.tags["git_dirty"] == "clean"
    (repo / "src.py").write_text("x = 2\n")
    _, dirty = stage()
    tag = client.get_run(dirty).data.tags["git_dirty"]
    assert dirty != clean and tag not in ("clean", "unknown")
    (repo / "src.py").write_text("x = 3\n")
    assert stage()[1] not in (clean, dirty)
    git(repo, "add", "src.py")  # staged or not, the same change
    assert client.get_run(stage()[1]).data.tags["git_dirty"] != tag


@pytest.mark.parametrize("exit_with", [RuntimeError("boom"), SystemExit("tokenize: no items"), SystemExit(2),
                                       KeyboardInterrupt()])
def test_a_failed_stage_fails_its_pipeline_run_and_the_next_starts_another(repo, exit_with):
    client = MlflowClient(tracking_uri())
    _, parent = stage()
    with pytest.raises(type(exit_with)), stage_run("prepare", {"a": 1}) as run:
        raise exit_with
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(run.info.run_id).info.status == client.get_run(parent).info.status == "FAILED"
    assert stage()[1] != parent


def test_sys_exit_zero_is_a_success(repo):
    client = MlflowClient(tracking_uri())
    with pytest.raises(SystemExit), stage_run("prepare", {"a": 1}) as run:
        raise SystemExit(0)
    parent = run.data.tags["mlflow.parentRunId"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent).info.status == "FINISHED" and stage()[1] == parent
