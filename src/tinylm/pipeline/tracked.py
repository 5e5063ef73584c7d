"""A stage's MLflow run, or none when the config says `tracking: false` (mlflow is then never imported).

    with tracked(cfg.tracking, "prepare", params, experiment=cfg.name) as mlflow:
        mlflow.log_dict(stats, "stats.json")   # the mlflow module when tracking; a call that does nothing when not
        if mlflow: log_dataset(...)            # tinylm.pipeline.tracking's helpers, imported only when tracking

Tracking on: `tinylm.pipeline.tracking.stage_run(stage, params, **kw)` (the run, nested under the pipeline run).
"""

from collections.abc import Iterator
from contextlib import contextmanager


class NotTracking:
    """Stands for the mlflow module when tracking is off: every call does nothing; false in a test."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None

    def __bool__(self) -> bool:
        return False


@contextmanager
def tracked(on: bool, stage: str, params: dict, **kw) -> Iterator:
    if not on:
        yield NotTracking()
        return
    import mlflow

    from tinylm.pipeline.tracking import stage_run

    with stage_run(stage, params, **kw):
        yield mlflow
