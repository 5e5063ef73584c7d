"""Stage tokenize: the corpus -> pretraining memmaps data/tokens/{train,val,test}.bin + meta.json, and the
task sets -> data/tokens/sft, data/tokens/cls (tinylm.data.tokens), with reports/data/tokens.json.

    python pipelines/tokenize_data.py [hydra overrides, e.g. sft.max_length=96]

(Not named tokenize.py: the script's folder heads sys.path, so that file would shadow the stdlib module
`tokenize`, which `inspect` imports, for every script in pipelines/.)
"""

import sys
from dataclasses import asdict

import datasets

from tinylm.atomic import atomic_dir
from tinylm.data.tokens import encode_cls, encode_sft, write_pretrain
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.data_stage import record_stats
from tinylm.pipeline.paths import CLS_SETS, CORPUS, SFT, TOKENIZER, TOKENS
from tinylm.pipeline.tracked import tracked


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    params = {"tokenizer": asdict(cfg.tokenizer), "sft": {"max_length": cfg.sft.max_length},
              "cls": {"max_length": cfg.cls.max_length}}
    with tracked(cfg.tracking, "tokenize", params, experiment=cfg.name) as mlflow:
        sft_text, cls_text = datasets.load_from_disk(str(SFT)), datasets.load_from_disk(str(CLS_SETS))
        with atomic_dir(TOKENS) as tmp:
            meta = write_pretrain(datasets.load_from_disk(str(CORPUS)), TOKENIZER, tmp, cfg.tokenizer.num_proc)
            sft = encode_sft(sft_text, TOKENIZER, cfg.sft.max_length)
            for split, ds in sft.items():  # before anything is kept: the SFT stage would fail hours later
                if len(ds) == 0:
                    sys.exit(f"tokenize: sft.max_length={cfg.sft.max_length} leaves no {split} item with a "
                             f"response token (all {len(sft_text[split])} dropped): raise sft.max_length")
            cls = encode_cls(cls_text, TOKENIZER, cfg.cls.max_length)
            sft.save_to_disk(str(tmp / "sft"))
            cls.save_to_disk(str(tmp / "cls"))
        sft_stats = {s: {"items": len(ds), "dropped": len(sft_text[s]) - len(ds),
                         "response_tokens": sum(map(len, ds["response_ids"]))} for s, ds in sft.items()}
        stats = {"pretrain": meta["splits"], "vocab_size": meta["vocab_size"], "sft": sft_stats,
                 "cls": {s: {"items": len(ds)} for s, ds in cls.items()}}
        record_stats("tokens", stats, mlflow)
        mlflow.log_dict(meta, "meta.json")
    print("tokenize: " + ", ".join(f"{s} {v['tokens']:,} tokens" for s, v in meta["splits"].items())
          + f" ({meta['dtype']}) -> {TOKENS}/")

