"""Stage summarize (last): log every param and every DVC metrics file (of every stage in dvc.yaml) to this
invocation's MLflow pipeline run, so pipeline runs compare side by side; stages DVC skipped still appear.

    python pipelines/summarize.py
"""

import sys

from common import config
from dvc.repo import Repo

from tinylm.tracking import log_pipeline_summary


def metrics_files() -> list[str]:
    """Every `metrics:` path of every stage of the pipeline (foreach/templating resolved by DVC)."""
    with Repo() as repo:
        return [out.def_path for stage in repo.index.stages for out in stage.outs if out.metric]


def main(argv: list[str]) -> None:
    cfg = config(argv)
    print("summarize: logging the params and every metrics file to the MLflow pipeline run", flush=True)
    files = metrics_files()
    run_id = log_pipeline_summary(cfg.to_dict(), files, experiment=cfg.name)
    print(f"summarize: {len(files)} metrics files -> MLflow pipeline run {run_id}")


if __name__ == "__main__":
    main(sys.argv[1:])
