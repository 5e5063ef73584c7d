"""Stage build_tasks: the corpus -> SFT pairs data/sft/ and passage -> genre data/cls/ (split respected).

    python pipelines/build_tasks.py [hydra overrides, e.g. sft.passage_lines=2]
"""

import sys
from dataclasses import asdict

import datasets

from tinylm.atomic import atomic_dir
from tinylm.data.instructions import load_instructions
from tinylm.data.tasks import build_cls, build_sft, task_stats
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.data_stage import record_stats
from tinylm.pipeline.paths import CLS_SETS, CORPUS, SFT
from tinylm.pipeline.tracked import tracked


def check_not_empty(sft: datasets.DatasetDict, cls: datasets.DatasetDict) -> None:
    """Stop, before anything is written, when a task set has an empty split, saying how to get items."""
    for split, ds in sft.items():
        if len(ds) == 0:
            sys.exit(f"build_tasks: the SFT set has no {split} items. The speaker/play/continue tasks come from "
                     "plays (SPEAKER: lines); for another corpus add instruction data (-S sft=alpaca, Alpaca "
                     "from the hub; for your files also -S sft.instructions.source=files -S "
                     "'sft.instructions.path=my/*.jsonl') or use data=plays.")
    for split, ds in cls.items():
        if len(ds) == 0:
            sys.exit(f"build_tasks: the classification set has no {split} items: it needs a label per document "
                     "(data.label_field names the column; the plays use their genre).")


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    d = cfg.data
    split = {"split_seed": d.split_seed, "val_fraction": d.val_fraction, "test_fraction": d.test_fraction}
    params = {"sft": asdict(cfg.sft), "cls": asdict(cfg.cls), "data": split}
    with tracked(cfg.tracking, "build_tasks", params, experiment=cfg.name) as mlflow:
        corpus = datasets.load_from_disk(str(CORPUS))
        extra = load_instructions(cfg.sft.instructions) if cfg.sft.instructions else []
        sft = build_sft(corpus, cfg.sft, d.split_seed, extra, d.val_fraction, d.test_fraction)
        cls = build_cls(corpus, cfg.cls, d.split_seed)
        check_not_empty(sft, cls)
        for out, dd in ((SFT, sft), (CLS_SETS, cls)):
            with atomic_dir(out) as tmp:
                dd.save_to_disk(str(tmp))
        stats = task_stats(sft, cls)
        record_stats("tasks", stats, mlflow)
        mlflow.log_dict(sft["test"][:20], "sft_test_sample.json")
        if mlflow:
            from tinylm.pipeline.tracking import log_dataset

            for split in sft:
                log_dataset(sft[split], SFT / split, f"sft/{split}", split)
                log_dataset(cls[split], CLS_SETS / split, f"cls/{split}", split)
    print(f"build_tasks: sft {stats['sft']}, cls {({s: v['items'] for s, v in stats['cls'].items()})}")

