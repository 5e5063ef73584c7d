"""Stage summarize (last): log every param and every DVC metrics file (those listed in dvc.yaml) to this
invocation's MLflow pipeline run, so pipeline runs compare side by side; stages DVC skipped still appear.

    python pipelines/summarize.py
"""

import sys
from pathlib import Path

import yaml
from common import config

from tinylm.tracking import log_pipeline_summary


def metrics_files(dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """Every `metrics:` path of every stage of dvc.yaml."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return [m if isinstance(m, str) else next(iter(m)) for s in stages.values() for m in s.get("metrics", [])]


def main(argv: list[str]) -> None:
    cfg = config(argv)
    files = metrics_files()
    run_id = log_pipeline_summary(cfg.to_dict(), files, experiment=cfg.name)
    print(f"summarize: {len(files)} metrics files -> MLflow pipeline run {run_id}")


if __name__ == "__main__":
    main(sys.argv[1:])
