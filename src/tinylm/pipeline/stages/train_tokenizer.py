"""Stage train_tokenizer: byte-level BPE on the corpus's train split -> artifacts/tokenizer/tokenizer.json,
with reports/data/tokenizer.json (vocab size, merges, UTF-8 bytes per token on val) and the training time in
reports/speed/tokenizer.json.

    python pipelines/train_tokenizer.py [hydra overrides, e.g. tokenizer.vocab_size=8192]
"""

import time
from dataclasses import asdict

import datasets

from tinylm.atomic import atomic_dir, write_json
from tinylm.data.special_tokens import SPECIAL_TOKENS
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.data_stage import record_stats
from tinylm.pipeline.paths import CORPUS, SPEED, TOKENIZER, TOKENIZER_DIR
from tinylm.pipeline.tracked import tracked
from tinylm.tokenizer import BPETokenizer


def bytes_per_token(tok: BPETokenizer, texts: list[str]) -> float:
    """UTF-8 bytes per token of texts (the compression ratio)."""
    return sum(len(t.encode("utf-8")) for t in texts) / max(1, sum(map(len, tok.encode_batch(texts))))


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    params = {"tokenizer": asdict(cfg.tokenizer)}
    with tracked(cfg.tracking, "train_tokenizer", params, experiment=cfg.name) as mlflow:
        corpus = datasets.load_from_disk(str(CORPUS))
        t0 = time.perf_counter()
        tok = BPETokenizer.train(corpus["train"]["text"], cfg.tokenizer.vocab_size, list(SPECIAL_TOKENS),
                                 min_frequency=cfg.tokenizer.min_frequency)
        seconds = time.perf_counter() - t0
        with atomic_dir(TOKENIZER_DIR) as tmp:
            tok.save(tmp / TOKENIZER.name)
        stats = {"vocab_size": tok.vocab_size, "merges": len(tok.merges),
                 "val_bytes_per_token": round(bytes_per_token(tok, corpus["val"]["text"]), 4)}
        record_stats("tokenizer", stats, mlflow)
        write_json(SPEED / "tokenizer.json", {"train_seconds": round(seconds, 2)})
        mlflow.log_metric("train_seconds", round(seconds, 2))
        mlflow.log_artifact(str(TOKENIZER))
    print(f"train_tokenizer: vocab {tok.vocab_size} in {seconds:.1f} s, "
          f"{stats['val_bytes_per_token']} bytes/token on val -> {TOKENIZER}")

