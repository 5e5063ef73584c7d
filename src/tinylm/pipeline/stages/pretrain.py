"""Stage pretrain@decoder / pretrain@encoder: train the decoder LM (next-token prediction on random
windows of the token memmaps) or the BERT encoder (masked LM on [CLS] window [SEP]) from scratch.

    python pipelines/pretrain.py decoder [hydra overrides, e.g. decoder=baichuan trainer.max_steps=10]
    python pipelines/pretrain.py encoder
"""

import sys

from tinylm.data.special_tokens import CLS, MASK, SEP
from tinylm.data.tokens import load_tokenizer, read_tokens, special_ids
from tinylm.data.windows import FixedWindows, RandomWindows, with_cls_sep
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.paths import TOKENIZER, TOKENS
from tinylm.pipeline.training_stage import datamodule, optim_dict, prepare, train
from tinylm.training.causal_lm import CausalLMModule
from tinylm.training.masked_lm import MaskedLMModule


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("decoder", "encoder"):
        sys.exit("usage: python pipelines/pretrain.py {decoder,encoder} [hydra overrides]")
    group, cfg = argv[0], stage_config(argv[1:])
    tcfg, spec = cfg.trainer_for(group), getattr(cfg, group)
    tok = load_tokenizer(TOKENIZER)
    mcfg = spec.model_config(tok.vocab_size)
    prepare(tcfg)
    train_tokens, val_tokens = read_tokens(TOKENS, "train", TOKENIZER), read_tokens(TOKENS, "val", TOKENIZER)
    optim = optim_dict(tcfg)
    if group == "decoder":
        module = CausalLMModule(mcfg.to_dict(), optim, seed=tcfg.seed, label_smoothing=tcfg.label_smoothing,
                                loss_average=tcfg.loss_average, token_bytes=tok.token_bytes)
        window, collate = mcfg.block_size, None
    else:
        special = list(special_ids(tok).values())
        module = MaskedLMModule(mcfg.to_dict(), optim, mask_token_id=tok.token_to_id(MASK), special_ids=special,
                                seed=tcfg.seed)
        cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
        window, collate = mcfg.block_size - 2, lambda b: {"input_ids": with_cls_sep(b["input_ids"], cls_id, sep_id)}
    dm = datamodule(RandomWindows(train_tokens, window, tcfg.batch_size, tcfg.seed),
                    FixedWindows(val_tokens, window, tcfg.batch_size, tcfg.val_batches), tcfg, collate=collate,
                    batched=True)
    params = {group: spec.to_dict(), "model": mcfg.to_dict()}
    train(stage="pretrain", name=group, experiment=cfg.name, module=module, datamodule=dm, tcfg=tcfg,
          params=params, inputs=[TOKENIZER, *(TOKENS / f for f in ("meta.json", "train.bin", "val.bin"))],
          export_hf=True, tracking=cfg.tracking)

