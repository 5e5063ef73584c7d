"""Stage train_seq2seq: the original encoder-decoder Transformer on the SFT pairs (source: the bare
prompt; target: the response), label smoothing from the trainer config (0.1 as in the paper by default).
Decoder input = [<|endoftext|>] + response[:-1] (EOS doubles as the start token), labels = response.

    python pipelines/train_seq2seq.py [hydra overrides, e.g. seq2seq.n_layer=2]
"""


import datasets

from tinylm.data.special_tokens import EOS, PAD
from tinylm.data.tokens import load_tokenizer
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.paths import TOKENIZER, TOKENS
from tinylm.pipeline.training_stage import datamodule, optim_dict, prepare, train
from tinylm.training.datamodules import pad_collate
from tinylm.training.seq2seq import Seq2SeqModule


def pairs(ds: datasets.Dataset, bos: int) -> list[dict]:
    return [{"src_ids": r["src_ids"], "tgt_ids": [bos, *r["response_ids"][:-1]], "labels": r["response_ids"]}
            for r in ds.select_columns(["src_ids", "response_ids"]).to_list()]


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    tcfg = cfg.trainer_for("seq2seq")
    tok = load_tokenizer(TOKENIZER)
    mcfg = cfg.seq2seq.model_config(tok.vocab_size)
    prepare(tcfg)
    sets = datasets.load_from_disk(str(TOKENS / "sft"))
    bos = tok.token_to_id(EOS)
    module = Seq2SeqModule(mcfg.to_dict(), optim_dict(tcfg), seed=tcfg.seed, label_smoothing=tcfg.label_smoothing,
                           loss_average=tcfg.loss_average, token_bytes=tok.token_bytes)
    dm = datamodule(pairs(sets["train"], bos), pairs(sets["val"], bos), tcfg,
                    collate=pad_collate(tok.token_to_id(PAD)), step_targets=tcfg.loss_average == "token")
    params = {"seq2seq": cfg.seq2seq.to_dict(), "model": mcfg.to_dict()}
    train(stage="train_seq2seq", name="seq2seq", experiment=cfg.name, module=module, datamodule=dm, tcfg=tcfg,
          params=params, inputs=[TOKENIZER, *sorted((TOKENS / "sft").rglob("*.arrow"))], export_hf=False,
          tracking=cfg.tracking)

