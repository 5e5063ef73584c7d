"""Stage prepare: data/raw/ -> the clean corpus data/corpus/ (train/val/test) and reports/data/corpus.json.

    python pipelines/prepare.py [hydra overrides, e.g. data.stage_directions=drop]
"""

import sys
from dataclasses import asdict

import mlflow
from common import CORPUS, METRICS, RAW, config

from tinylm.atomic import atomic_dir, write_json
from tinylm.data.corpus import build_corpus, corpus_stats
from tinylm.pipeline.tracking import flatten, log_dataset, stage_run


def main(argv: list[str]) -> None:
    cfg = config(argv)
    with stage_run("prepare", {"data": asdict(cfg.data)}, experiment=cfg.name):
        corpus = build_corpus(RAW, cfg.data)
        with atomic_dir(CORPUS) as tmp:
            corpus.save_to_disk(str(tmp))
        stats = corpus_stats(corpus)
        write_json(METRICS / "corpus.json", stats)
        mlflow.log_metrics(flatten(stats))
        mlflow.log_dict(stats, "stats.json")
        mlflow.log_text(corpus["train"][0]["text"][:5000], "sample.txt")
        for split, ds in corpus.items():
            log_dataset(ds, CORPUS / split, f"corpus/{split}", split)
    print("prepare: " + ", ".join(f"{s} {v['sections']} sections {v['chars']:,} chars"
                                  for s, v in stats.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
