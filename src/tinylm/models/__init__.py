"""Models built from `tinylm.nn`: decoder-only LM, BERT encoder, encoder-decoder Transformer."""

from torch import nn

from tinylm.models.bert import BERT, BertClassifier
from tinylm.models.config import ModelConfig, presets
from tinylm.models.gpt import GPT
from tinylm.models.seq2seq import Seq2SeqTransformer

__all__ = ["ModelConfig", "presets", "build_model", "GPT", "BERT", "BertClassifier", "Seq2SeqTransformer"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for cfg.arch: "gpt" -> GPT, "bert" -> BERT (masked LM), "seq2seq" -> Seq2SeqTransformer."""
    return {"gpt": GPT, "bert": BERT, "seq2seq": Seq2SeqTransformer}[cfg.arch](cfg)
