"""MLflow conventions: where runs go, how stage runs nest under one pipeline run, what every run carries.

- Store: `MLFLOW_TRACKING_URI` if set (a team's server), else `sqlite:///<repo>/mlflow.db` with artifacts in
  <repo>/mlruns/ (embedded; <repo> is DVC_ROOT, which DVC sets to the main repository even for queued
  experiments that run in a temporary copy, else the working directory).
  Pass `tracking_uri()` explicitly everywhere (Lightning's MLFlowLogger defaults to a file store, which
  MLflow 3 refuses). Telemetry is off unless MLFLOW_DISABLE_TELEMETRY is set otherwise.
- Pipeline run: one per `dvc repro` / `dvc exp run`, in experiment "pipeline", found or created by the tag
  `tinylm.pipeline_key` = sha256(git commit, sha256 of params.yaml, DVC_EXP_NAME). Every stage run of that
  invocation gets it as parent (`mlflow.parentRunId`); the last stage (`summarize`) logs every param and
  every DVC metrics file to it with `log_pipeline_summary`, so pipeline runs compare side by side.
- Stage run (`stage_run`): in the experiment named for the stage kind ("download", "pretrain", ...); tags
  stage, git_commit, dvc_exp_name, model, experiment (the config's name); params flattened ("a.b.c").
- Pipeline and stage runs carry `tinylm.config_hash`: the hash of params.yaml without its `seed` keys, the
  same for the runs of one config over several seeds (group by it in the UI; `tinylm compare` reads it).

    with stage_run("pretrain", cfg.to_dict(), model_name="gpt2", run_name="pretrain-decoder") as run:
        logger = MLFlowLogger(tracking_uri=tracking_uri(), run_id=run.info.run_id)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import yaml  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

PIPELINE_EXPERIMENT = "pipeline"
PIPELINE_KEY_TAG = "tinylm.pipeline_key"
CONFIG_HASH_TAG = "tinylm.config_hash"


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the embedded store sqlite:///<repo>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def experiment_id(name: str) -> str:
    """The id of MLflow experiment `name`, created if needed (embedded store: artifacts in <repo>/mlruns)."""
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    local = None if os.environ.get("MLFLOW_TRACKING_URI") else (repo_root() / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=local)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: Mapping, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and None kept as values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def pipeline_key(params: str | Path = "params.yaml") -> str:
    """What identifies one pipeline invocation: the commit, the params and the DVC experiment name."""
    path = Path(params)
    params_hash = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "none"
    raw = f"{git_commit()}/{params_hash}/{os.environ.get('DVC_EXP_NAME', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def config_hash(params: Mapping) -> str:
    """sha256 of the params without any key named `seed` (at any depth), as sorted JSON: one config's runs
    over several seeds share it."""

    def unseeded(v):
        return {k: unseeded(x) for k, x in v.items() if k != "seed"} if isinstance(v, Mapping) else v

    return hashlib.sha256(json.dumps(unseeded(params), sort_keys=True).encode()).hexdigest()[:16]


def _tags(stage: str, model_name: str | None, experiment: str | None) -> dict:
    tags = {"stage": stage, "git_commit": git_commit(), "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "")}
    if Path("params.yaml").exists():
        tags[CONFIG_HASH_TAG] = config_hash(yaml.safe_load(Path("params.yaml").read_text()))
    if model_name:
        tags["model"] = model_name
    if experiment:
        tags["experiment"] = experiment
    return tags


def pipeline_run_id(experiment: str | None = None) -> str:
    """The id of this invocation's pipeline run, created on first use."""
    client = MlflowClient(tracking_uri())
    key = pipeline_key()
    exp_id = experiment_id(PIPELINE_EXPERIMENT)
    found = client.search_runs([exp_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    name = os.environ.get("DVC_EXP_NAME") or experiment or "pipeline"
    tags = {PIPELINE_KEY_TAG: key, **_tags("pipeline", None, experiment)}
    run = client.create_run(exp_id, run_name=name, tags=tags)
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: Mapping, model_name: str | None = None, run_name: str | None = None,
              experiment: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage, nested under the pipeline run, with params (flattened) and tags.

    The stage's config is also stored as the artifact config.json. `experiment` is the config's name
    (smoke, default...); `run_name` defaults to the stage (e.g. "pretrain-decoder" for a model stage).
    """
    mlflow.set_tracking_uri(tracking_uri())
    parent = pipeline_run_id(experiment)
    with mlflow.start_run(experiment_id=experiment_id(stage), run_name=run_name or stage,
                          parent_run_id=parent, tags=_tags(stage, model_name, experiment)) as run:
        mlflow.log_params({k: _param(v) for k, v in flatten(params).items()})
        mlflow.log_dict(dict(params), "config.json")
        yield run


def _param(v) -> str:
    return json.dumps(v) if isinstance(v, list | dict | bool) or v is None else str(v)


def log_dataset(ds, path: str | Path, name: str, context: str) -> None:
    """Record a `datasets.Dataset` saved at `path` as an input of the active run."""
    from mlflow.data.huggingface_dataset import from_huggingface

    with warnings.catch_warnings():  # on "file://" (two equivalent registered sources) and on int columns
        warnings.simplefilter("ignore", UserWarning)
        source = Path(path).resolve().as_uri()
        dataset = from_huggingface(ds, name=name, digest=ds._fingerprint[:36], source=source)
        mlflow.log_input(dataset, context=context)


def read_metrics(paths: list[str | Path]) -> dict[str, float]:
    """Numbers of DVC metrics files, keyed "<file path without .json>/<a.b.c>"; missing files skipped."""
    out = {}
    for p in map(Path, paths):
        if not p.exists():
            continue
        for k, v in flatten(json.loads(p.read_text())).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{p.with_suffix('').as_posix()}/{k}"] = float(v)
    return out


def log_pipeline_summary(params: Mapping, metrics_files: list, experiment: str | None = None) -> str:
    """Log every param and every metric of the DVC metrics files to the pipeline run; mark it finished."""
    run_id = pipeline_run_id(experiment)
    client = MlflowClient(tracking_uri())
    logged = client.get_run(run_id).data.params
    params = [Param(k, _param(v)) for k, v in flatten(params).items() if k not in logged]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in read_metrics(metrics_files).items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id)
    return run_id
