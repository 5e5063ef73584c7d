"""`tinylm compare`: runs grouped by their params without `seed` keys, each metric's mean +- sd over a config's
runs, and an exact permutation test of every other config against the first one run.

Runs come from `dvc exp show --json` (each baseline commit and its experiments) or from the MLflow
pipeline runs tagged with `tinylm.config_hash`.
"""

import fnmatch
import json
import subprocess
import sys
from pathlib import Path


def _dvc_runs(show: list[dict]) -> list[dict]:
    """Runs with metrics in `dvc exp show --json` output, oldest first: each baseline commit and its experiments
    (the workspace row repeats the last applied experiment and queued experiments have no metrics: both left
    out). A run: name, config (`tracking.config_hash` of its params), flat params, metrics keyed
    "<file without .json>/<a.b>" as on MLflow pipeline runs."""
    from tinylm.pipeline.tracking import config_hash, flatten, metric_numbers

    out = []
    for row in show:
        if row["rev"] == "workspace":
            continue
        for r in [row, *(rev for exp in row.get("experiments") or [] for rev in exp["revs"])]:
            data = r.get("data") or {}
            metrics = {k: v for path, m in (data.get("metrics") or {}).items()
                       for k, v in metric_numbers(path, m.get("data", {})).items()}
            if r.get("error") or not metrics:
                continue
            params = {k: v for f in (data.get("params") or {}).values() for k, v in f.get("data", {}).items()}
            out.append({"name": r.get("name") or r["rev"][:7], "config": config_hash(params),
                        "params": {k: str(v) for k, v in flatten(params).items()}, "metrics": metrics,
                        "time": data.get("timestamp") or ""})
    return sorted(out, key=lambda r: r["time"])


def _mlflow_runs() -> list[dict]:
    """Finished pipeline runs of the MLflow store (`tracking.tracking_uri()`) that carry the config hash tag, oldest
    first."""
    from mlflow.tracking import MlflowClient

    from tinylm.pipeline.tracking import CONFIG_HASH_TAG, PIPELINE_EXPERIMENT, tracking_uri

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(PIPELINE_EXPERIMENT)
    if exp is None:
        raise SystemExit(f"error: no experiment {PIPELINE_EXPERIMENT!r} in {tracking_uri()}: run the pipeline first")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000,
                              order_by=["attributes.start_time ASC"])
    return [{"name": r.info.run_name, "config": r.data.tags[CONFIG_HASH_TAG], "params": dict(r.data.params),
             "metrics": dict(r.data.metrics)} for r in runs if CONFIG_HASH_TAG in r.data.tags]


def compare(patterns: list[str] | None, dvc_json: str | None = None, mlflow: bool = False) -> None:
    """Print each config's metrics (names matching `patterns`, globs) as mean +- sd over its runs, and a test
    of every other config against the first one run; runs from `dvc exp show --json` (run here, or the file
    `dvc_json`) or, with `mlflow`, from the MLflow pipeline runs."""
    import numpy as np

    from tinylm.evaluation.statistics import permutation_test

    if mlflow:
        runs = _mlflow_runs()
    else:
        if dvc_json:
            text = Path(dvc_json).read_text()
        else:
            done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True,
                                  text=True)
            if done.returncode:
                raise SystemExit(f"error: `dvc exp show --json` failed: {done.stderr.strip()}")
            text = done.stdout
        runs = _dvc_runs(json.loads(text))
    if not runs:
        raise SystemExit("error: no finished runs with metrics to compare")
    by_config: dict[str, list[dict]] = {}  # runs come oldest first: #1 is the config run first
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    groups = list(by_config.values())
    keys = sorted({k for r in runs for k in r["params"]})
    seeds = [k for k in keys if k.split(".")[-1] == "seed"]
    differ = [k for k in keys if k not in seeds and len({r["params"].get(k) for r in runs}) > 1]
    for i, g in enumerate(groups, 1):
        label = " ".join(f"{k}={g[0]['params'].get(k)}" for k in differ) or "one config"
        seen = ", ".join("/".join(r["params"].get(k, "?") for k in seeds) for r in g)
        print(f"#{i} {label}: {len(g)} runs" + (f", {'/'.join(seeds)} {seen}" if seeds else "")
              + f" (config {g[0]['config']})")
    names = sorted({m for r in runs for m in r["metrics"]})
    names = [m for m in names if not patterns or any(fnmatch.fnmatchcase(m, p) for p in patterns)]
    if not names:
        raise SystemExit(f"error: no metric matches {patterns}")
    w = max(len(m) for m in names)
    print(f"\n{'metric':<{w}}" + "".join(f"{f'#{i} mean ± sd (n)':>24}" for i in range(1, len(groups) + 1))
          + "".join(f"{f'#{i} - #1':>12}{'p':>8}" for i in range(2, len(groups) + 1)))
    floor = False
    for m in names:
        values = [np.array([r["metrics"][m] for r in g if m in r["metrics"]]) for g in groups]
        line = f"{m:<{w}}" + "".join(f"{_mean_sd(v):>24}" for v in values)
        for v in values[1:]:
            if not len(v) or not len(values[0]):
                line += f"{'-':>12}{'-':>8}"
                continue
            t = permutation_test(v, values[0])
            at_floor = t["exact"] and t["p_value"] <= t["min_p"] * (1 + 1e-9) < 1
            floor |= at_floor
            line += f"{t['diff']:>12.4g}{t['p_value']:>7.3f}{'^' if at_floor else ' '}"
        print(line)
    print("\nmean ± sample sd over the runs (n); p: two-sided permutation test of the difference of means against #1, "
          "exact (every split of the pooled runs into groups of these sizes) up to 20000 splits")
    if floor:
        print("^ the smallest p these runs can give (0.10 for 3 runs against 3, 0.029 for 4 against 3): add seeds")


def _mean_sd(v) -> str:
    if len(v) > 1:
        return f"{v.mean():.4g} ± {v.std(ddof=1):.2g} ({len(v)})"
    return f"{v.mean():.4g} ({len(v)})" if len(v) else "-"
