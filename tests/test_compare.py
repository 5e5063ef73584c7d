"""`tinylm compare` and the config hash tag: runs grouped by their params without the seed, mean +- sd over the
seeds, the exact permutation test against the first config. Read from real `dvc exp show --json` output
(tests/fixtures/dvc_exp_show.json, DVC 3.67: a baseline commit at seed 0 and six experiments, trainer.seed 1-3
x decoder.n_layer 2/3, one more queued) and from an MLflow store the pipeline's own tracking calls wrote."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinylm.cli import main
from tinylm.pipeline.compare import _dvc_runs
from tinylm.pipeline.tracking import CONFIG_HASH_TAG, config_hash

FIXTURE = Path(__file__).parent / "fixtures" / "dvc_exp_show.json"
VAL_LOSS = "reports/decoder/metrics/val_loss"


def fixture_runs() -> list[tuple[int, int, float]]:
    """(n_layer, seed, val_loss) of every run with metrics, read straight from the JSON."""
    out = []
    for row in json.loads(FIXTURE.read_text())[1:]:  # [0] is the workspace
        for r in [row, *(rev for exp in row["experiments"] for rev in exp["revs"])]:
            if r["data"]["metrics"]:
                p = r["data"]["params"]["params.yaml"]["data"]
                val = r["data"]["metrics"]["reports/decoder/metrics.json"]["data"]["val_loss"]
                out.append((p["decoder"]["n_layer"], p["trainer"]["seed"], val))
    return out


def test_config_hash_ignores_only_seeds():
    base = {"trainer": {"seed": 0, "lr": 1e-3}, "decoder": {"n_layer": 2, "train": {"seed": 5}},
            "data": {"split_seed": 1}}
    other_seeds = {"trainer": {"seed": 7, "lr": 1e-3}, "decoder": {"n_layer": 2, "train": {"seed": 9}},
                   "data": {"split_seed": 1}}
    assert config_hash(base) == config_hash(other_seeds)
    assert config_hash(base) != config_hash({**base, "decoder": {"n_layer": 3, "train": {"seed": 5}}})
    assert config_hash(base) != config_hash({**base, "data": {"split_seed": 2}})  # a data split is not a run's seed


def test_dvc_runs_leave_out_the_workspace_and_queued_experiments():
    runs = _dvc_runs(json.loads(FIXTURE.read_text()))
    assert len(runs) == len(fixture_runs()) == 7
    assert runs[0]["name"] == "main" and runs[0]["params"]["trainer.seed"] == "0"
    assert len({r["config"] for r in runs}) == 2
    assert set(runs[0]["metrics"]) == {VAL_LOSS, "reports/decoder/metrics/steps",
                                       "reports/eval/metrics/decoder-sft.tasks.play.greedy.exact_match"}


def test_compare_prints_mean_sd_over_seeds_and_the_exact_test(capsys):
    main(["compare", "--dvc-json", str(FIXTURE), "--metric", "*val_loss"])
    out = capsys.readouterr().out
    runs = fixture_runs()
    a = np.array([v for n, _, v in runs if n == 2])
    b = np.array([v for n, _, v in runs if n == 3])
    assert f"#1 decoder.n_layer=2: {len(a)} runs, trainer.seed 0, 1, 2, 3" in out
    assert f"#2 decoder.n_layer=3: {len(b)} runs" in out
    pooled = np.concatenate([a, b])
    observed = abs(b.mean() - a.mean())
    perms = list(itertools.permutations(range(len(pooled))))
    p = np.mean([abs(pooled[list(q[len(a):])].mean() - pooled[list(q[:len(a)])].mean()) >= observed - 1e-12
                 for q in perms])
    line = next(x for x in out.splitlines() if x.startswith(VAL_LOSS))
    assert f"{a.mean():.4g} ± {a.std(ddof=1):.2g} ({len(a)})" in line
    assert f"{b.mean():.4g} ± {b.std(ddof=1):.2g} ({len(b)})" in line
    assert f"{b.mean() - a.mean():.4g}" in line and f"{p:.3f}^" in line  # 4 vs 3 runs, fully separated: 1/35
    assert "steps" not in out and "exact_match" not in out


def test_compare_reads_the_mlflow_pipeline_runs(tmp_path, monkeypatch, capsys):
    """Pipeline runs made as the stages make them (the summary stage's call; a stage run for the first), one per
    seed and config."""
    from mlflow.tracking import MlflowClient

    from tinylm.pipeline.tracking import PIPELINE_EXPERIMENT, log_pipeline_summary, stage_run, tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "reports").mkdir()
    for n_layer, seed, val in fixture_runs():
        params = {"name": "default", "trainer": {"seed": seed, "max_steps": 10}, "decoder": {"n_layer": n_layer}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.setenv("DVC_EXP_NAME", f"exp-{n_layer}-{seed}")
        if seed == 0:
            with stage_run("evaluate", {"eval": {"max_items": 8}}) as run:
                assert run.data.tags[CONFIG_HASH_TAG] == config_hash(params)
        (tmp_path / "reports/decoder.json").write_text(json.dumps({"val_loss": val}))
        log_pipeline_summary(params, ["reports/decoder.json"])
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(PIPELINE_EXPERIMENT).experiment_id
    client.create_run(exp, tags={CONFIG_HASH_TAG: "unfinished"})  # still running: left out
    main(["compare", "--mlflow"])
    out = capsys.readouterr().out
    assert "#1 decoder.n_layer=2: 4 runs" in out and "#2 decoder.n_layer=3: 3 runs" in out
    assert "#3" not in out and "reports/decoder/val_loss" in out


def test_compare_errors(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"no metric matches \['nothing'\]"):
        main(["compare", "--dvc-json", str(FIXTURE), "--metric", "nothing"])
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(SystemExit, match="no finished runs"):
        main(["compare", "--dvc-json", str(empty)])
    monkeypatch.chdir(tmp_path)  # not a DVC repository
    with pytest.raises(SystemExit, match="`dvc exp show --json` failed"):
        main(["compare"])
