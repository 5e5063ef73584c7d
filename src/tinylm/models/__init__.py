"""Models built from `tinylm.nn`: decoder-only LM, BERT encoder, encoder-decoder Transformer."""

from torch import nn

from tinylm.models.bert import BERT, BertClassifier
from tinylm.models.config import ModelConfig, presets
from tinylm.models.gpt import GPT, GPTClassifier
from tinylm.models.seq2seq import Seq2SeqTransformer

__all__ = ["ModelConfig", "presets", "build_model", "GPT", "BERT", "BertClassifier", "GPTClassifier",
           "Seq2SeqTransformer", "build_classifier", "classifier_from_pretrained"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for cfg.arch: "gpt" -> GPT, "bert" -> BERT (masked LM), "seq2seq" -> Seq2SeqTransformer."""
    return {"gpt": GPT, "bert": BERT, "seq2seq": Seq2SeqTransformer}[cfg.arch](cfg)


def build_classifier(cfg: ModelConfig, num_labels: int, pooling: str) -> nn.Module:
    """The sequence classifier on cfg.arch's backbone: "bert" -> BertClassifier, "gpt" -> GPTClassifier."""
    if cfg.arch not in ("bert", "gpt"):
        raise ValueError(f"a sequence classifier needs a bert or gpt backbone, got arch={cfg.arch!r}")
    return (BertClassifier if cfg.arch == "bert" else GPTClassifier)(cfg, num_labels, pooling)


def classifier_from_pretrained(backbone: nn.Module, num_labels: int, pooling: str) -> nn.Module:
    """The classifier on a pretrained BERT (masked LM) or GPT: its weights copied in, a fresh head."""
    if isinstance(backbone, BERT):
        return BertClassifier.from_pretrained_mlm(backbone, num_labels, pooling)
    if isinstance(backbone, GPT):
        return GPTClassifier.from_pretrained_lm(backbone, num_labels, pooling)
    raise ValueError(f"a sequence classifier needs a pretrained BERT or GPT, got {type(backbone).__name__}")
