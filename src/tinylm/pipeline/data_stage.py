"""What the data stages share at their end: their numbers, written once for DVC and logged once to MLflow.

    reports/data/<name>.json   the stage's metrics file (numeric JSON, cache: false in dvc.yaml)
    MLflow                     the same numbers as metrics (nested keys joined by ".") and as stats.json
"""

from tinylm.atomic import write_json
from tinylm.pipeline.paths import METRICS


def record_stats(name: str, stats: dict, mlflow) -> None:
    """Write reports/data/<name>.json and log the same numbers to the stage's run (`mlflow`, from
    tinylm.pipeline.tracked: nothing is logged when tracking is off)."""
    write_json(METRICS / f"{name}.json", stats)
    if mlflow:
        from tinylm.pipeline.tracking import flatten

        mlflow.log_metrics(flatten(stats))
        mlflow.log_dict(stats, "stats.json")
