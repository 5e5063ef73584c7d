"""Export to / import from transformers: logits parity with padding, round trips, save_pretrained, errors."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RoFormerConfig,
    RoFormerForMaskedLM,
)

from tinylm.interop.hf import from_hf, save_hf, to_hf
from tinylm.models import build_model, presets

SIZES = dict(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=32)
VARIANTS = {
    "gpt2": ("gpt2", {}, GPT2LMHeadModel),
    "baichuan": ("baichuan", dict(rope_base=500.0), LlamaForCausalLM),
    "baichuan-gqa": ("baichuan", dict(n_kv_head=2, n_embd=64), LlamaForCausalLM),
    "bert": ("bert", {}, BertForMaskedLM),
    "bert-rope": ("bert", dict(position="rope"), RoFormerForMaskedLM),
    # a non-default MLP width and norm eps: the HF config has to carry them
    "gpt2-sized": ("gpt2", dict(mlp_hidden=48, norm_eps=1e-2), GPT2LMHeadModel),
    "baichuan-sized": ("baichuan", dict(mlp_hidden=48, norm_eps=1e-2), LlamaForCausalLM),
    "bert-sized": ("bert", dict(mlp_hidden=48, norm_eps=1e-2), BertForMaskedLM),
}
# no padding, left padding, right padding
MASK = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]])


def make(name, **kw):
    """A tiny model whose biases and norm weights are not at their init values (so mapping errors show)."""
    torch.manual_seed(0)
    m = build_model(presets(name, **{**SIZES, **kw})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def ours_logits(m, x, mask):
    return m(x, attention_mask=mask)


def hf_logits(hf, x, mask):
    if hf.config.model_type in ("bert", "roformer"):
        return hf(input_ids=x, attention_mask=mask).logits
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return hf(input_ids=x, attention_mask=mask, position_ids=pos).logits


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    name, kw, hf_cls = VARIANTS[request.param]
    return make(name, **kw), hf_cls


def test_to_hf_logits_match(variant):
    model, hf_cls = variant
    hf = to_hf(model)
    assert type(hf) is hf_cls and not hf.training
    x = torch.randint(0, 100, MASK.shape)
    real = MASK.bool()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(hf, x, MASK)[real], ours_logits(model, x, MASK)[real],
                                   rtol=1e-4, atol=1e-4)


def test_llama_export_carries_gqa_and_rope_base():
    hf = to_hf(make("baichuan", n_kv_head=2, n_embd=64, rope_base=500.0))
    assert hf.config.num_key_value_heads == 2 and hf.config.num_attention_heads == 4
    assert hf.config.rope_parameters["rope_theta"] == 500.0
    assert hf.model.layers[0].self_attn.k_proj.weight.shape == (2 * 16, 64)


@pytest.mark.parametrize("variant_name", ["gpt2", "bert", "bert-rope"])
def test_round_trip_is_exact(variant_name):
    name, kw, _ = VARIANTS[variant_name]
    model = make(name, **kw)
    back = from_hf(to_hf(model))
    assert type(back) is type(model) and back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(theirs[k], ours[k], rtol=0, atol=0, msg=k)


def test_round_trip_baichuan_logits():
    model = make("baichuan", n_kv_head=2, n_embd=64)
    back = from_hf(to_hf(model))
    assert back.config == model.config
    x = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant_name, auto", [("gpt2", AutoModelForCausalLM), ("baichuan", AutoModelForCausalLM),
                                                ("bert", AutoModelForMaskedLM), ("bert-rope", AutoModelForMaskedLM)])
def test_save_hf_loads_with_auto_class(tmp_path, variant_name, auto):
    name, kw, _ = VARIANTS[variant_name]
    model = make(name, **kw)
    path = save_hf(model, tmp_path / "export")
    loaded = auto.from_pretrained(path).eval()
    x = torch.randint(0, 100, MASK.shape)
    real = MASK.bool()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(loaded, x, MASK)[real], ours_logits(model, x, MASK)[real],
                                   rtol=1e-4, atol=1e-4)
        assert from_hf(loaded).config == model.config  # the tinylm config survives config.json


@pytest.mark.parametrize("variant_name", ["gpt2", "baichuan", "bert"])
def test_save_hf_with_the_tokenizer_behaves_in_transformers_as_in_tinylm(tmp_path, variant_name):
    """A decoder's export stops HF's generate at EOS (config and generation_config name it; they named none, so
    generate ran to max_new_tokens) and its tokenizer pads on the left; an encoder's tokenizer adds [CLS] ... [SEP]
    as its masked-LM training did."""
    from transformers import AutoTokenizer

    from tinylm.data.special_tokens import CLS, EOS, PAD, SEP, SPECIAL_TOKENS
    from tinylm.tokenizer import BPETokenizer

    tok = BPETokenizer.train(["ROMEO: But soft, what light through yonder window breaks?\n"] * 5, vocab_size=300,
                             special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.save(tmp_path / "tokenizer.json")
    name, kw, _ = VARIANTS[variant_name]
    path = save_hf(make(name, **{**kw, "vocab_size": tok.vocab_size}), tmp_path / "export", tmp_path / "tokenizer.json")
    hf_tok = AutoTokenizer.from_pretrained(path)
    ids = tok.encode("ROMEO: But soft")
    if variant_name == "bert":
        assert hf_tok("ROMEO: But soft")["input_ids"] == [tok.token_to_id(CLS), *ids, tok.token_to_id(SEP)]
        return
    hf = AutoModelForCausalLM.from_pretrained(path)
    for c in (hf.config, hf.generation_config):
        assert (c.eos_token_id, c.pad_token_id) == (tok.token_to_id(EOS), tok.token_to_id(PAD))
    assert hf_tok.padding_side == "left" and hf_tok("ROMEO: But soft")["input_ids"] == ids


@pytest.mark.parametrize("hf_model", [
    lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4)),
    lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, rope_theta=1000.0)),
    lambda: BertForMaskedLM(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32)),
    lambda: RoFormerForMaskedLM(RoFormerConfig(
        vocab_size=100, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32)),
    # non-default widths, norm eps, segment vocabulary and GPT-2's other name for its tanh GELU
    lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=48,
                                       layer_norm_epsilon=1e-2, activation_function="gelu_pytorch_tanh")),
    lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, rms_norm_eps=1e-2)),
    lambda: BertForMaskedLM(BertConfig(**BERT_CFG, layer_norm_eps=1e-2, type_vocab_size=3)),
], ids=["gpt2", "llama", "bert", "roformer", "gpt2-sized", "llama-eps", "bert-sized"])
def test_from_hf_without_tinylm_key(hf_model):
    torch.manual_seed(0)
    hf = hf_model().eval()
    assert getattr(hf.config, "tinylm", None) is None
    ours = from_hf(hf)
    x = torch.randint(0, 100, MASK.shape)
    real = MASK.bool()
    with torch.no_grad():
        torch.testing.assert_close(ours_logits(ours, x, MASK)[real], hf_logits(hf, x, MASK)[real],
                                   rtol=1e-4, atol=1e-4)


LLAMA = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32)
BERT_CFG = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=32)


@pytest.mark.parametrize("hf_model, match", [
    (lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, attention_bias=True)), "attention_bias=True"),
    (lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, mlp_bias=True)), "mlp_bias=True"),
    (lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, hidden_act="gelu")), "hidden_act='gelu'"),
    (lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, rope_parameters={
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})), "rope_type='llama3'"),
    (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                        activation_function="relu")), "activation_function='relu'"),
    (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                        tie_word_embeddings=False)), "tie_word_embeddings=False"),
    (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                        scale_attn_by_inverse_layer_idx=True)), "scale_attn_by_inverse_layer_idx"),
    (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                        scale_attn_weights=False)), "scale_attn_weights=False"),
    (lambda: BertForMaskedLM(BertConfig(**BERT_CFG, hidden_act="relu")), "hidden_act='relu'"),
], ids=["llama-attention-bias", "llama-mlp-bias", "llama-gelu", "llama3-rope", "gpt2-relu", "gpt2-untied",
        "gpt2-layer-scaled", "gpt2-unscaled", "bert-relu"])
def test_from_hf_refuses_options_tinylm_cannot_compute(hf_model, match):
    """Imported anyway, each of these gave other logits (max |diff| 0.01 to 1.8): a clear error instead."""
    with pytest.raises(ValueError, match=rf"cannot import this \w+ model: {match}.*would compute other logits"):
        from_hf(hf_model())


@pytest.mark.parametrize("kw", [dict(embedding_size=16), dict(rotary_value=True)])
def test_from_hf_refuses_a_roformer_unlike_tinylms_bert(kw):
    hf = RoFormerForMaskedLM(RoFormerConfig(**{**BERT_CFG, "embedding_size": 32, **kw}))
    with pytest.raises(ValueError, match="embedding_size != hidden_size or rotary_value=True"):
        from_hf(hf)


@pytest.mark.parametrize("name, kw, match", [
    ("gpt2", dict(position="rope"), "position=rope"),
    ("gpt2", dict(n_kv_head=2), "gpt2 preset"),
    ("baichuan", dict(bias=True), "bias=True"),
    ("bert", dict(mlp="relu"), "mlp=relu"),
    ("bert", dict(norm_placement="pre"), "norm_placement=pre"),
    ("bert", dict(bias=False), "bias=False"),
    ("bert", dict(position="rope", rope_base=500.0), "rope_base 10000"),
])
def test_to_hf_rejects_unsupported_configs(name, kw, match):
    with pytest.raises(ValueError, match=match):
        to_hf(make(name, **kw))
