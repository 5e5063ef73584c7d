"""A model directory: `config.json` (the ModelConfig, plus what the model needs beyond it, e.g.
num_labels) and `model.safetensors` (tied tensors stored once). `save_pretrained` writes every file into a
temporary sibling first and renames them into place only when all are written, so an error (a full disk) or
Ctrl-C leaves the previous files, never a mix; other files there (checkpoints) are left alone."""

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from tinylm.atomic import atomic_file
from tinylm.models.bert import BertClassifier
from tinylm.models.config import ModelConfig
from tinylm.models.gpt import GPTClassifier


def save_pretrained(model: nn.Module, path: str | Path, extra_files: dict[str, Path] | None = None, *,
                    chat: bool = False) -> Path:
    """Write model.safetensors + config.json (+ copies of extra_files, e.g. the tokenizer) into `path`.
    chat: the model was fine-tuned on the chat template (tinylm.data.chat), so prompts go through it."""
    path = Path(path)
    config = {"model": model.config.to_dict(), "chat": chat}
    if isinstance(model, (BertClassifier, GPTClassifier)):
        config |= {"num_labels": model.num_labels, "pooling": model.pooling}
    with ExitStack() as files:  # on leaving, each temporary file is renamed into place (or removed on error)
        files.enter_context(atomic_file(path / "config.json")).write_text(json.dumps(config, indent=2) + "\n")
        save_model(model, str(files.enter_context(atomic_file(path / "model.safetensors"))))
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, files.enter_context(atomic_file(path / name)))
    return path


def is_chat_model(path: str | Path) -> bool:
    """Whether the model saved at `path` was fine-tuned on the chat template (see save_pretrained)."""
    return json.loads((Path(path) / "config.json").read_text()).get("chat", False)


def load_pretrained(path: str | Path) -> nn.Module:
    """The model saved by `save_pretrained` (eval mode)."""
    from tinylm.models import build_classifier, build_model

    path = Path(path)
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path} is not a tinylm model directory (needs config.json and model.safetensors); "
                                "run the training stage that writes it (dvc repro)")
    config = json.loads((path / "config.json").read_text())
    cfg = ModelConfig(**config["model"])
    model = build_classifier(cfg, config["num_labels"], config.get("pooling", "cls")) if "num_labels" in config \
        else build_model(cfg)
    try:
        load_model(model, str(path / "model.safetensors"))
    except RuntimeError as e:
        raise ValueError(f"{path / 'model.safetensors'} does not fit {path / 'config.json'} (written for another "
                         f"model config?): re-run the stage that wrote {path}. Details: {str(e)[:300]}") from None
    return model.eval()
