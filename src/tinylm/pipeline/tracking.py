"""MLflow conventions: where runs go, how stage runs nest under one pipeline run, what every run carries.

- Store: `MLFLOW_TRACKING_URI` if set (a team's server), else `sqlite:///<repo>/mlflow.db`; artifacts of a store
  that is not a server in <repo>/mlruns/. <repo> is DVC_ROOT, which DVC sets to the main repository even for
  queued or `--temp` experiments that run in a temporary copy, else the working directory; a relative path in
  MLFLOW_TRACKING_URI (`sqlite:///rel.db`, `file:rel`, `rel`) is taken from <repo> too, so no run is lost with
  the copy.
  Pass `tracking_uri()` explicitly everywhere (Lightning's MLFlowLogger defaults to a file store, which
  MLflow 3 refuses). Telemetry is off unless MLFLOW_DISABLE_TELEMETRY is set otherwise (tinylm/pipeline/__init__.py).
- Pipeline run: one per `dvc repro` / `dvc exp run`, in experiment "pipeline", found (or created) by the tag
  `tinylm.pipeline_key` = sha256(git commit, `git_dirty`, sha256 of params.yaml, DVC_EXP_NAME). Every
  stage run of that invocation gets it as parent (`mlflow.parentRunId`); the last stage (`summarize`) logs
  every param and every DVC metrics file to it with `log_pipeline_summary`, tags it `tinylm.summarized` and
  ends it, so pipeline runs compare side by side. The pipeline run is RUNNING only while a stage runs: a stage
  that succeeds ends it FINISHED and the next stage of the key reopens it (DVC says nothing of an invocation's
  end, so a partial one, `dvc repro -s download`, is FINISHED, and a later invocation of the key goes on in
  it). A stage run that fails (an exception, or sys.exit with an error) ends its pipeline run FAILED too. A
  stage whose key's newest pipeline run failed or was summarized starts a new one.
- Stage run (`stage_run`): in the experiment named for the stage kind ("download", "pretrain", ...); tags
  stage, git_commit, git_dirty, dvc_exp_name, model, experiment (the config's name); params flattened ("a.b.c").
- Pipeline and stage runs carry `tinylm.config_hash`: the hash of params.yaml without its `seed` keys, the
  same for the runs of one config over several seeds (group by it in the UI; `tinylm compare` reads it).
- Every experiment tinylm creates or finds carries `mlflow.experimentKind` = `custom_model_development` (unless
  someone chose a kind explicitly). MLflow 3.17's UI decides the landing page by its GenAI / "Model training"
  switch instead (the sidebar; remembered per browser; `?workflowType=machine_learning` in a link), so
  `ui_link` writes links that open the runs table.
- The pipeline run also gets the headline (summarize's reports/headline/ rows) as short metrics `<row>/<key>`
  (`decoder/val_bpb`, `decoder-sft.speaker/beam`, ...). The runs table shows no metric column by default
  (MLflow keeps the column choice per browser), so the pipeline experiment carries a saved view "Headline"
  (experiment tag `mlflow.sharedViewState.headline`: the UI's own saved-view format) selecting those columns:
  pick it in the runs table's Views menu, or open `ui_link(..., view=HEADLINE_VIEW)`.
- Training runs (`stage_run(..., system_metrics=True)`) log system metrics (CPU, memory, disk, network; GPU
  where nvidia-ml-py finds one) every SYSTEM_METRICS_INTERVAL_S seconds unless
  MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL says otherwise, and their data files as run inputs
  (`log_data_files`: name, path, sha256 digest). Each trained model is an MLflow LoggedModel
  (`log_trained_model`): model.safetensors, config.json and tokenizer.json held as its artifacts (the DVC
  output models/<name>/ referenced by tags: path and the weights' sha256), its final metrics linked to it.
- Model Registry (`register_sft`, run by summarize on every pipeline run): the SFT decoder whose weights are
  in models/decoder-sft/ is a version of `tinylm-decoder-sft` (one version per distinct weights: a pipeline
  run that did not retrain it reuses its version). Alias `candidate` always moves to this run's version (MLflow
  reserves `latest`: `models:/tinylm-decoder-sft/latest` is the newest version, not this run's). Alias
  `champion` moves to it when there is no champion, or when its SFT validation bits per byte (`final/val_bpb`,
  lower is better) is below the champion's and both were measured on the same SFT validation data (the same
  digest of data/tokens/sft/val, tag `tinylm.val_data`); otherwise the champion stays, and summarize says why.
  Load either with `mlflow.artifacts.download_artifacts("models:/tinylm-decoder-sft@champion")` and
  `tinylm.models.io.load_pretrained` on the folder.

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

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from tinylm.data.sources import sha256_file
from tinylm.pipeline.config import read_params

PIPELINE_EXPERIMENT = "pipeline"
PIPELINE_KEY_TAG = "tinylm.pipeline_key"
SUMMARIZED_TAG = "tinylm.summarized"
CONFIG_HASH_TAG = "tinylm.config_hash"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
EXPLICIT_KINDS = ("custom_model_development", "genai_development")  # chosen, not inferred: left as they are
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + view id: a saved runs-table view (name, columns, sort)
HEADLINE_VIEW = "headline"
SYSTEM_METRICS_INTERVAL_S = 2
WEIGHTS_TAG = "tinylm.weights_sha256"
VAL_DATA_TAG = "tinylm.val_data"
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")  # what load_pretrained reads
NOT_CODE = ("params.yaml", "dvc.lock", "*.gitignore", "reports")  # tracked, left out of git_dirty: the params
# (keyed and logged apart; `dvc exp run -S` rewrites them) and what the pipeline itself rewrites
SERVER_SCHEMES = ("http://", "https://", "databricks")  # tracking servers: they keep the artifacts
SFT_MODEL, SFT_REGISTERED = "decoder-sft", "tinylm-decoder-sft"
CHAMPION_METRIC = "final/val_bpb"


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI with a relative path in it taken from `repo_root()`, or the embedded store
    sqlite:///<repo>/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return rooted_uri(uri) if uri else f"sqlite:///{repo_root() / 'mlflow.db'}"


def rooted_uri(uri: str) -> str:
    """`uri` with a relative local path resolved against `repo_root()`: `sqlite:///rel.db` (`sqlite:////abs.db` is
    absolute), `file:rel`, a bare `rel`; other URIs (servers, databases, absolute paths) unchanged."""
    for scheme in ("sqlite:///", "file:"):
        if uri.startswith(scheme):
            rest = uri.removeprefix(scheme)
            if not rest or rest.startswith(("/", ":memory:")):
                return uri
            path = repo_root() / rest
            return f"sqlite:///{path}" if scheme == "sqlite:///" else path.as_uri()
    return uri if ":" in uri or uri.startswith(SERVER_SCHEMES) or Path(uri).is_absolute() else str(repo_root() / uri)


def experiment_id(name: str) -> str:
    """The id of MLflow experiment `name`, created if needed (artifacts in <repo>/mlruns unless the store is a
    server), tagged as a model-training experiment."""
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name)
    if exp:
        if exp.tags.get(EXPERIMENT_KIND_TAG) not in EXPLICIT_KINDS:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    local = None if tracking_uri().startswith(SERVER_SCHEMES) else (repo_root() / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=local, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_dirty() -> str:
    """"clean", or a hash of `git diff HEAD` (the tracked files' changes, staged or not, less NOT_CODE: the same for
    every stage of one invocation); "unknown" outside a git repository. Untracked files do not count."""
    cmd = ["git", "diff", "HEAD", "--no-color", "--no-ext-diff", "--", *(f":(top,exclude){p}" for p in NOT_CODE)]
    try:
        diff = subprocess.run(cmd, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return hashlib.sha256(diff).hexdigest()[:16] if diff else "clean"


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


def pipeline_key() -> str:
    """What identifies one pipeline invocation: the commit, the uncommitted changes (`git_dirty`), params.yaml's
    bytes and the DVC experiment name."""
    path = Path("params.yaml")
    params_hash = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "none"
    raw = f"{git_commit()}/{git_dirty()}/{params_hash}/{os.environ.get('DVC_EXP_NAME', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def config_hash(params: Mapping) -> str:
    """sha256 of the params without any key named `seed` (at any depth), as sorted JSON: one config's runs
    over several seeds share it."""

    def unseeded(v):
        return {k: unseeded(x) for k, x in v.items() if k != "seed"} if isinstance(v, Mapping) else v

    return hashlib.sha256(json.dumps(unseeded(params), sort_keys=True).encode()).hexdigest()[:16]


def _tags(stage: str, model_name: str | None, experiment: str | None) -> dict:
    tags = {"stage": stage, "git_commit": git_commit(), "git_dirty": git_dirty(),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "")}
    if Path("params.yaml").exists():
        tags[CONFIG_HASH_TAG] = config_hash(read_params())
    if model_name:
        tags["model"] = model_name
    if experiment:
        tags["experiment"] = experiment
    return tags


def pipeline_run_id(experiment: str | None = None) -> str:
    """The id of this invocation's pipeline run: the newest with this `pipeline_key`, RUNNING (reopened where a
    stage ended it FINISHED), unless it failed or was summarized: then a new one."""
    client = MlflowClient(tracking_uri())
    key = pipeline_key()
    exp_id = experiment_id(PIPELINE_EXPERIMENT)
    found = client.search_runs([exp_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    if found and found[0].info.status in ("RUNNING", "FINISHED") and SUMMARIZED_TAG not in found[0].data.tags:
        run_id = found[0].info.run_id
        if found[0].info.status == "FINISHED":
            client.update_run(run_id, "RUNNING")
        return run_id
    name = os.environ.get("DVC_EXP_NAME") or experiment or "pipeline"
    tags = {PIPELINE_KEY_TAG: key, **_tags("pipeline", None, experiment)}
    run = client.create_run(exp_id, run_name=name, tags=tags)
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: Mapping, model_name: str | None = None, run_name: str | None = None,
              experiment: str | None = None, system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage, nested under the pipeline run, with params (flattened) and tags.

    The stage's config is also stored as the artifact config.json. `experiment` is the config's name
    (smoke, default...); `run_name` defaults to the stage (e.g. "pretrain-decoder" for a model stage).
    system_metrics: sample CPU, memory, disk, network (and GPU where nvidia-ml-py finds one) while the run runs.
    An exception out of the block (SystemExit with code 0 or None excepted) ends the run and the pipeline run
    FAILED; sys.exit(0) ends the run FINISHED.
    """
    mlflow.set_tracking_uri(tracking_uri())
    parent = pipeline_run_id(experiment)
    if system_metrics and not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    failed = True
    try:
        with mlflow.start_run(experiment_id=experiment_id(stage), run_name=run_name or stage,
                              parent_run_id=parent, tags=_tags(stage, model_name, experiment),
                              log_system_metrics=system_metrics) as run:
            try:
                mlflow.log_params({k: _param(v) for k, v in flatten(params).items()})
                mlflow.log_dict(dict(params), "config.json")
                yield run
            except SystemExit as e:
                if e.code in (0, None):
                    mlflow.end_run()  # a success: start_run's exit would mark the run FAILED
                    failed = False
                raise
            failed = False
    finally:  # FINISHED: until the next stage of this invocation reopens it
        MlflowClient(tracking_uri()).set_terminated(parent, "FAILED" if failed else "FINISHED")


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


def data_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and their sha256s: an Arrow split)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n"
                                  for p in files).encode()).hexdigest()


def log_data_files(data: Mapping[str, str | Path]) -> dict[str, mlflow.data.dataset.Dataset]:
    """Record data files (or folders) as inputs of the active run: context ("training", "validation") -> path.
    Each is a dataset named by its path, with its sha256 as digest (MLflow keeps 36 characters; the input tag
    `sha256` has all of it). Returns context -> the logged dataset (to link metrics to it)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    out = {}
    for context, path in data.items():
        digest = data_digest(path)
        name = Path(path).as_posix()
        out[context] = MetaDataset(LocalArtifactDatasetSource(name), name=name, digest=digest[:36])
        mlflow.log_input(out[context], context=context, tags={"sha256": digest})
    return out


def log_trained_model(name: str, folder: str | Path, metrics: Mapping[str, float], *, model_type: str,
                      params: Mapping | None = None, val_data: str | None = None,
                      val_dataset=None) -> str:
    """Log the model in `folder` (models/<name>/) as an MLflow LoggedModel of the active run: MODEL_FILES as its
    artifacts, tags naming the DVC output and the weights' sha256 (and `val_data`, the validation data's digest),
    `metrics` logged to the run and linked to the model (those starting "final/val_" also to `val_dataset`).
    Returns the model id."""
    folder = Path(folder)
    run_id = mlflow.active_run().info.run_id
    tags = {WEIGHTS_TAG: sha256_file(folder / "model.safetensors"), "tinylm.dvc_output": folder.as_posix()}
    if val_data:
        tags[VAL_DATA_TAG] = val_data
    model = mlflow.initialize_logged_model(name=name, source_run_id=run_id, model_type=model_type, tags=tags,
                                           params={k: _param(v) for k, v in flatten(params or {}).items()})
    try:
        client = MlflowClient(tracking_uri())
        for f in MODEL_FILES:
            if (folder / f).exists():
                client.log_model_artifact(model.model_id, str(folder / f))
        val = {k: float(v) for k, v in metrics.items() if k.startswith("final/val_")}
        rest = {k: float(v) for k, v in metrics.items() if k not in val}
        if val:
            mlflow.log_metrics(val, model_id=model.model_id, dataset=val_dataset)
        if rest:
            mlflow.log_metrics(rest, model_id=model.model_id)
    except BaseException:
        mlflow.finalize_logged_model(model.model_id, "FAILED")
        raise
    mlflow.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def register_sft(weights: str | Path, pipeline_run: str | None = None) -> str:
    """Register the LoggedModel holding `weights` (models/decoder-sft/model.safetensors) as a version of
    SFT_REGISTERED, move its aliases by the rule in this module's docstring, tag the pipeline run with the
    version. Returns a line saying which version and what became of the champion, or that no LoggedModel holds
    these weights (e.g. trained with `tracking: false`)."""
    client = MlflowClient(tracking_uri())
    sha = sha256_file(weights)
    found = mlflow.search_logged_models(experiment_ids=[experiment_id("sft")], output_format="list",
                                        filter_string=f"name = '{SFT_MODEL}' AND tags.`{WEIGHTS_TAG}` = '{sha}'")
    if not found:
        return f"no MLflow LoggedModel {SFT_MODEL} holds {weights}: nothing registered"
    model = max(found, key=lambda m: m.creation_timestamp)
    try:
        client.get_registered_model(SFT_REGISTERED)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(SFT_REGISTERED, description="tinylm's SFT decoder, one version per distinct "
                                       "weights; aliases: candidate (the last pipeline run's), champion (lowest SFT "
                                       "val bits per byte on the same validation data; rule in "
                                       "tinylm.pipeline.tracking)")
    same = [v for v in client.search_model_versions(f"name = '{SFT_REGISTERED}'") if v.tags.get(WEIGHTS_TAG) == sha]
    bpb = model.metrics and {m.key: m.value for m in model.metrics}.get(CHAMPION_METRIC)
    tags = {WEIGHTS_TAG: sha, VAL_DATA_TAG: model.tags.get(VAL_DATA_TAG, ""), CHAMPION_METRIC: str(bpb)}
    if same:
        version = same[0]
    else:
        version = client.create_model_version(SFT_REGISTERED, f"models:/{model.model_id}", run_id=model.source_run_id,
                                              tags=tags, model_id=model.model_id)
        # the link the UI's model page reads (as mlflow.register_model writes it, which leaves out the run)
        listed = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [*listed, {"name": SFT_REGISTERED, "version": version.version}])})
    client.set_registered_model_alias(SFT_REGISTERED, "candidate", version.version)
    try:
        champ = client.get_model_version_by_alias(SFT_REGISTERED, "champion")
    except mlflow.exceptions.MlflowException:
        champ = None
    if champ is None:
        move, why = True, "no champion yet"
    elif champ.version == version.version:
        move, why = False, "already the champion"
    elif champ.tags.get(VAL_DATA_TAG) != tags[VAL_DATA_TAG]:
        move, why = False, f"version {champ.version} stays champion: measured on other SFT validation data"
    else:
        old = float(champ.tags.get(CHAMPION_METRIC, "nan"))
        move = bpb is not None and bpb < old  # False against nan
        why = f"{CHAMPION_METRIC} {bpb:.4f} vs version {champ.version}'s {old:.4f}" if bpb is not None else \
            f"no {CHAMPION_METRIC}"
        if not move:
            why = f"version {champ.version} stays champion ({why})"
    if move:
        client.set_registered_model_alias(SFT_REGISTERED, "champion", version.version)
        why = f"champion ({why})"
    if pipeline_run:
        client.set_tag(pipeline_run, "tinylm.sft_model_version", f"{SFT_REGISTERED}/{version.version}")
    return f"{SFT_REGISTERED} version {version.version} ({'new' if not same else 'same weights as before'}): " \
           f"alias candidate; {why}"


def headline_view(experiment: str, metrics: list[str]) -> None:
    """Save (or update) the runs-table view "Headline" of `experiment`: the columns of `metrics`, newest first.
    The tag holds the UI's saved-view envelope (name, times, state as JSON), so the view is in the Views menu."""
    client = MlflowClient(tracking_uri())
    metrics = metrics[:40]  # an experiment tag holds at most 5000 characters
    cols = [f"metrics.`{m}`" for m in metrics]
    state = json.dumps({"selectedColumns": cols, "columnOrder": ["attributes.`Run Name`", *cols],
                        "columnWidths": {c: 8 * len(m) + 40 for c, m in zip(cols, metrics, strict=True)},
                        "orderByKey": "attributes.start_time", "orderByAsc": False})
    key = SHARED_VIEW_TAG + HEADLINE_VIEW
    old = client.get_experiment(experiment).tags.get(key)
    created = json.loads(old).get("createdAt") if old else None
    now = int(time.time() * 1000)
    client.set_experiment_tag(experiment, key, json.dumps({"name": "Headline", "createdAt": created or now,
                                                          "updatedAt": now, "state": state}))


def pipeline_link() -> str:
    """The pipeline experiment's runs table with the Headline view."""
    return ui_link(experiment_id(PIPELINE_EXPERIMENT), HEADLINE_VIEW)


def ui_link(experiment: str, view: str | None = None) -> str:
    """A link that opens `experiment`'s runs table in MLflow 3's UI (as a model-training experiment, with the
    saved `view` if given), at the tracking server's address, else `make ui`'s."""
    uri = tracking_uri()
    base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs?{query}"


def metric_numbers(path: str | Path, data: Mapping) -> dict[str, float]:
    """The numbers of one DVC metrics file's contents, keyed "<file path without .json>/<a.b.c>"."""
    stem = Path(path).with_suffix("").as_posix()
    return {f"{stem}/{k}": float(v) for k, v in flatten(data).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def read_metrics(paths: list[str | Path]) -> dict[str, float]:
    """`metric_numbers` of DVC metrics files; missing files skipped."""
    out = {}
    for p in map(Path, paths):
        if p.exists():
            out.update(metric_numbers(p, json.loads(p.read_text())))
    return out


def log_pipeline_summary(params: Mapping, metrics_files: list, experiment: str | None = None,
                         headline: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """Log every param and every metric of the DVC metrics files to the pipeline run; mark it finished.
    headline: row -> {key: number}, logged as short metrics "<row>/<key>" and shown by the view "Headline"."""
    run_id = pipeline_run_id(experiment)
    client = MlflowClient(tracking_uri())
    logged = client.get_run(run_id).data.params
    params = [Param(k, _param(v)) for k, v in flatten(params).items() if k not in logged]
    now = int(time.time() * 1000)
    short = {f"{row}/{k}": float(v) for row, values in (headline or {}).items() for k, v in values.items()}
    metrics = [Metric(k, v, now, 0) for k, v in {**read_metrics(metrics_files), **short}.items()]
    for i in range(0, max(len(params), len(metrics)), 100):  # MLflow takes at most 100 params a call
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100])
    if short:
        headline_view(experiment_id(PIPELINE_EXPERIMENT), list(short))
    client.set_tag(run_id, SUMMARIZED_TAG, "true")
    client.set_terminated(run_id)
    return run_id
