"""Stage prepare: data/raw/ -> the clean corpus data/corpus/ (train/val/test) and reports/data/corpus.json.

    python pipelines/prepare.py [hydra overrides, e.g. data.stage_directions=drop]
"""

import shutil
from dataclasses import asdict

import datasets

from tinylm.atomic import atomic_dir
from tinylm.data.corpus import build_corpus, corpus_stats
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.data_stage import record_stats
from tinylm.pipeline.paths import CORPUS, RAW
from tinylm.pipeline.tracked import tracked


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    with tracked(cfg.tracking, "prepare", {"data": asdict(cfg.data)}, experiment=cfg.name) as mlflow:
        with atomic_dir(CORPUS) as tmp:  # the rows stream to tmp/rows (memory stays flat), then each split
            build_corpus(RAW, cfg.data, workdir=tmp / "rows").save_to_disk(str(tmp))
            shutil.rmtree(tmp / "rows")
        corpus = datasets.load_from_disk(str(CORPUS))
        stats = corpus_stats(corpus)
        record_stats("corpus", stats, mlflow)
        mlflow.log_text(corpus["train"][0]["text"][:5000], "sample.txt")
        if mlflow:
            from tinylm.pipeline.tracking import log_dataset

            for split, ds in corpus.items():
                log_dataset(ds, CORPUS / split, f"corpus/{split}", split)
    print("prepare: " + ", ".join(f"{s} {v['sections']} sections {v['chars']:,} chars"
                                  for s, v in stats.items()))

