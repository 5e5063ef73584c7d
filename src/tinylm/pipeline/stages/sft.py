"""Stage sft: supervised fine-tuning of the pretrained decoder on the instruction tasks (chat template
from the tokenizer's special tokens); only response tokens are in the loss (labels -100 on the prompt).

    python pipelines/sft.py [hydra overrides, e.g. sft.train.max_steps=50]
"""


import datasets

from tinylm.data.special_tokens import PAD
from tinylm.data.tokens import load_tokenizer
from tinylm.models.io import load_pretrained
from tinylm.pipeline.config import stage_config
from tinylm.pipeline.paths import MODELS, TOKENIZER, TOKENS
from tinylm.pipeline.training_stage import datamodule, optim_dict, prepare, train
from tinylm.training.causal_lm import CausalLMModule
from tinylm.training.datamodules import pad_collate


def items(ds: datasets.Dataset, keys: list[str]) -> list[dict]:
    return ds.select_columns(keys).to_list()


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    tcfg = cfg.trainer_for("sft")
    pretrained = load_pretrained(MODELS / "decoder")  # fails first, with the fix, if pretraining is missing
    tok = load_tokenizer(TOKENIZER)
    prepare(tcfg)
    sets = datasets.load_from_disk(str(TOKENS / "sft"))
    module = CausalLMModule(pretrained.config.to_dict(), optim_dict(tcfg), seed=tcfg.seed,
                            label_smoothing=tcfg.label_smoothing, loss_average=tcfg.loss_average,
                            token_bytes=tok.token_bytes)
    module.model.load_state_dict(pretrained.state_dict())
    keys = ["input_ids", "labels"]
    dm = datamodule(items(sets["train"], keys), items(sets["val"], keys), tcfg,
                    collate=pad_collate(tok.token_to_id(PAD)), step_targets=tcfg.loss_average == "token")
    params = {"sft": {k: v for k, v in cfg.to_dict()["sft"].items() if k != "train"},
              "model": pretrained.config.to_dict()}
    train(stage="sft", name="decoder-sft", experiment=cfg.name, module=module, datamodule=dm, tcfg=tcfg,
          params=params, inputs=[TOKENIZER, MODELS / "decoder" / "model.safetensors",
                                 *sorted((TOKENS / "sft").rglob("*.arrow"))], export_hf=True, tracking=cfg.tracking,
          chat=True)

