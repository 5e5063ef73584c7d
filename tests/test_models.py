"""Presets and config validation; GPT, BERT, encoder-decoder: caching, padding, causality, tying, init."""

import math

import pytest
import torch

from tinylm.models import (
    BERT,
    GPT,
    BertClassifier,
    GPTClassifier,
    ModelConfig,
    Seq2SeqTransformer,
    build_classifier,
    build_model,
    classifier_from_pretrained,
    presets,
)
from tinylm.nn.mlp import MLP, SwiGLU
from tinylm.nn.norms import LayerNorm, RMSNorm

TINY = dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)
# every position scheme; baichuan also exercises GQA and NormHead
GPT_VARIANTS = {
    "learned": ("gpt2", {}),
    "sinusoidal": ("gpt2", dict(position="sinusoidal")),
    "rope": ("baichuan", dict(n_kv_head=2)),
    "alibi": ("gpt2", dict(position="alibi")),
    "none": ("gpt2", dict(position="none")),
}


def tiny(name, **kw):
    torch.manual_seed(0)
    return build_model(presets(name, **{**TINY, **kw})).eval()


@pytest.fixture(params=sorted(GPT_VARIANTS))
def gpt(request):
    name, kw = GPT_VARIANTS[request.param]
    return tiny(name, **kw)


def ids(*shape):
    return torch.randint(1, TINY["vocab_size"], shape)


# ---- presets and validation ------------------------------------------------------------------------------
def test_gpt2_preset():
    cfg = presets("gpt2", **TINY)
    arch = (cfg.arch, cfg.norm, cfg.norm_placement, cfg.position, cfg.mlp)
    assert arch == ("gpt", "layernorm", "pre", "learned", "gelu_tanh")
    assert cfg.mlp_hidden == 4 * 32 and cfg.bias and cfg.tie_embeddings and not cfg.norm_head
    m = build_model(cfg)
    assert isinstance(m, GPT) and "wpe" in m.transformer and m.rope is None
    block = m.transformer.h[0]
    assert block.pre and isinstance(block.ln_1, LayerNorm) and block.ln_1.bias is not None
    assert isinstance(block.mlp, MLP) and block.mlp.c_fc.out_features == 128
    assert block.attn.c_attn.bias is not None


@pytest.mark.parametrize("n_embd, hidden", [(32, 128), (64, 256), (128, 384), (384, 1024), (4096, 11008)])
def test_baichuan_hidden_is_8_thirds_rounded_up_to_128(n_embd, hidden):
    assert presets("baichuan", n_embd=n_embd, n_head=4).mlp_hidden == hidden


def test_baichuan_preset():
    cfg = presets("baichuan", **TINY)
    assert (cfg.norm, cfg.norm_eps, cfg.position, cfg.mlp) == ("rmsnorm", 1e-6, "rope", "swiglu")
    assert not cfg.bias and not cfg.tie_embeddings and cfg.norm_head and cfg.z_loss_weight == 2e-4
    m = build_model(cfg)
    assert "wpe" not in m.transformer and m.rope is not None
    assert isinstance(m.transformer.h[0].mlp, SwiGLU) and isinstance(m.transformer.ln_f, RMSNorm)
    assert not [n for n, _ in m.named_parameters() if n.endswith("bias")]
    assert m.lm_head.weight is not m.transformer.wte.weight


def test_norm_head_normalises_output_rows():
    m = tiny("baichuan")
    x = ids(2, 5)
    before = m(x)
    with torch.no_grad():
        m.lm_head.weight.mul_(torch.rand(TINY["vocab_size"], 1) * 5 + 0.1)  # rescale each row
    torch.testing.assert_close(m(x), before)


def test_bert_and_transformer_presets():
    bert = presets("bert", **TINY)
    assert (bert.arch, bert.norm_eps, bert.norm_placement, bert.mlp, bert.position) == (
        "bert", 1e-12, "post", "gelu", "learned")
    m = build_model(bert)
    assert isinstance(m, BERT) and not m.bert.layer[0].pre
    assert {mod.eps for mod in m.modules() if isinstance(mod, LayerNorm)} == {1e-12}
    t = presets("transformer", **TINY)
    arch = (t.arch, t.norm_placement, t.position, t.mlp, t.mlp_hidden)
    assert arch == ("seq2seq", "post", "sinusoidal", "relu", 128)
    assert isinstance(build_model(t), Seq2SeqTransformer)
    assert presets("gpt2", n_layer=6, dropout=0.1).n_layer == 6


@pytest.mark.parametrize("call, match", [
    (lambda: presets("llama"), "llama"),
    (lambda: presets("gpt2", n_layers=3), "n_layers"),
    (lambda: presets("gpt2", n_embd=30, n_head=4), "n_embd"),
    (lambda: presets("gpt2", n_head=4, n_kv_head=3), "n_kv_head"),
    (lambda: presets("gpt2", n_head=4, n_kv_head=0), "n_kv_head"),
    (lambda: presets("gpt2", norm="batchnorm"), "norm"),
    (lambda: presets("gpt2", position="xpos"), "position"),
    (lambda: presets("gpt2", attention="xformers"), "attention"),
    (lambda: presets("gpt2", dropout=-0.1), "dropout"),
    (lambda: presets("gpt2", dropout=1.0), "dropout"),
    (lambda: presets("gpt2", n_layer=0), "n_layer"),
    (lambda: presets("gpt2", vocab_size=2.5), "vocab_size"),
    (lambda: presets("gpt2", z_loss_weight=-1.0), "z_loss_weight"),
    (lambda: presets("gpt2", mlp_hidden=0), "mlp_hidden"),
    (lambda: presets("gpt2", pad_token_id=99, vocab_size=50), "pad_token_id"),
    (lambda: presets("gpt2", position="rope", n_embd=36, n_head=4), "even head size"),
    (lambda: presets("gpt2", position="alibi", attention="flash"), "alibi"),
    (lambda: ModelConfig(arch="rnn"), "arch"),
    (lambda: presets("bert", position="alibi"), "position='alibi': the bert model takes 'learned' or 'rope'"),
    (lambda: presets("transformer", position="learned", **TINY), "seq2seq model takes 'sinusoidal'"),
    (lambda: presets("gpt2", tie_embeddings="no"), "tie_embeddings must be true or false, got 'no'"),
    (lambda: presets("gpt2", bias=1), "bias must be true or false"),
    (lambda: presets("gpt2", n_layer=True), "n_layer must be a positive integer, got True"),
    (lambda: presets("gpt2", n_kv_head=1.0), "n_kv_head must be a positive integer, got 1.0"),
    (lambda: presets("gpt2", norm_eps=-1.0), "norm_eps must be a finite number > 0"),
    (lambda: presets("gpt2", norm_eps=float("nan")), "norm_eps"),
    (lambda: presets("baichuan", rope_base=0.0), "rope_base must be a finite number > 0"),
    (lambda: presets("baichuan", z_loss_weight=float("nan")), "z_loss_weight must be a finite number >= 0"),
    (lambda: presets("bert", tie_embeddings=False), "tie_embeddings=False: the bert model has no such option"),
    (lambda: presets("bert", norm_head=True), "norm_head=True: the bert model has no such option"),
    (lambda: presets("transformer", z_loss_weight=5.0), "z_loss_weight=5.0: the seq2seq model has no such"),
])
def test_config_validation_names_the_key(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- GPT --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 3, 1]])
def test_gpt_kv_cache_equals_full_forward(gpt, chunks):
    x = ids(2, 9)
    full = gpt(x)
    cache, start, outs = gpt.new_cache(), 0, []
    for n in chunks:
        outs.append(gpt(x[:, start:start + n], cache=cache))
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_gpt_kv_cache_with_left_padding(gpt):
    x = ids(2, 8)
    mask = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
    full = gpt(x, attention_mask=mask)
    cache = gpt.new_cache()
    prefix = gpt(x[:, :5], attention_mask=mask[:, :5], cache=cache)
    steps = [gpt(x[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache) for t in range(5, 8)]
    real = mask.bool()
    torch.testing.assert_close(torch.cat([prefix, *steps], 1)[real], full[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep", [1, 3, 8])
def test_gpt_logits_to_keep_gives_the_last_positions(gpt, keep):
    x, mask = ids(2, 8), torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])
    full = gpt(x, attention_mask=mask)
    torch.testing.assert_close(gpt(x, attention_mask=mask, logits_to_keep=keep), full[:, -keep:])
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="logits_to_keep"):
            gpt(x, logits_to_keep=bad)


def test_gpt_padding_gives_unpadded_logits(gpt):
    x = ids(1, 5)
    alone = gpt(x)[0]
    pad = torch.zeros(1, 3, dtype=torch.long)
    right = gpt(torch.cat([x, pad], 1), attention_mask=torch.tensor([[1] * 5 + [0] * 3]))[0, :5]
    left = gpt(torch.cat([pad, x], 1), attention_mask=torch.tensor([[0] * 3 + [1] * 5]))[0, 3:]
    torch.testing.assert_close(right, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=1e-5, atol=1e-5)


def test_gpt_is_causal(gpt):
    x = ids(2, 8)
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % TINY["vocab_size"]
    a, b = gpt(x), gpt(y)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


@pytest.mark.parametrize("variant", ["learned", "rope", "none"])
def test_gpt_attention_kernels_agree(variant):
    name, kw = GPT_VARIANTS[variant]
    x = ids(2, 7)
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    logits = {k: tiny(name, attention=k, **kw)(x, attention_mask=mask) for k in ("sdpa", "naive", "flash")}
    real = mask.bool()
    torch.testing.assert_close(logits["naive"][real], logits["sdpa"][real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits["flash"][real], logits["sdpa"][real], rtol=1e-5, atol=1e-5)


def test_gpt_block_size_overflow():
    m = tiny("gpt2")
    with pytest.raises(ValueError, match="block_size=32"):
        m(ids(1, 33))
    cache = m.new_cache()
    m(ids(1, 30), cache=cache)
    with pytest.raises(ValueError, match="block_size=32"):
        m(ids(1, 3), cache=cache)


@pytest.mark.parametrize("name", ["gpt2", "bert", "transformer"])
def test_a_full_block_size_sequence_is_accepted(name):
    # block_size is the longest sequence the model takes: exactly that many tokens run, one more does not
    m = tiny(name)

    def run(n):
        x = ids(1, n)
        return m(x, x) if name == "transformer" else m(x)

    assert run(32).shape == (1, 32, TINY["vocab_size"])
    with pytest.raises(ValueError, match="block_size=32"):
        run(33)


def test_gpt_attention_mask_must_cover_past_and_new_tokens():
    m = tiny("gpt2")
    cache = m.new_cache()
    m(ids(1, 4), cache=cache)
    with pytest.raises(ValueError, match="past \\+ T"):
        m(ids(1, 1), attention_mask=torch.ones(1, 1), cache=cache)


def test_weight_tying_shares_storage():
    gpt2 = tiny("gpt2")
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    bert = tiny("bert")
    assert bert.decoder_weight is bert.bert.embeddings.word_embeddings.weight
    s2s = tiny("transformer")
    V, C = TINY["vocab_size"], TINY["n_embd"]
    assert [n for n, p in s2s.named_parameters() if p.shape == (V, C)] == ["embed.weight"]
    with torch.no_grad():
        s2s.embed.weight[7] = 0  # the generator row of token 7 is the embedding row
    src, tgt = ids(1, 4), ids(1, 3)
    assert (s2s(src, tgt)[..., 7] == 0).all()


@pytest.mark.parametrize("name, scaled", [("gpt2", ("attn.c_proj", "mlp.c_proj")),
                                          ("baichuan", ("attn.c_proj", "down_proj"))])
def test_init_statistics(name, scaled):
    torch.manual_seed(0)
    m = build_model(presets(name, vocab_size=512, n_layer=4, n_head=4, n_embd=256))
    resid_std = 0.02 / math.sqrt(2 * 4)
    for pname, p in m.named_parameters():
        if pname.endswith("bias"):
            assert (p == 0).all(), pname
        elif "ln" in pname or "norm" in pname:
            assert (p == 1).all(), pname
        elif pname.endswith(tuple(s + ".weight" for s in scaled)):
            assert p.std().item() == pytest.approx(resid_std, rel=0.03), pname
        else:
            assert p.std().item() == pytest.approx(0.02, rel=0.03), pname
        if p.dim() == 2:
            assert abs(p.mean().item()) < 1e-3, pname


# ---- BERT --------------------------------------------------------------------------------------------------
def test_bert_right_padding_invariance():
    m = tiny("bert")
    x = ids(1, 6)
    alone = m(x)[0]
    padded = m(torch.cat([x, torch.zeros(1, 3, dtype=torch.long)], 1),
               attention_mask=torch.tensor([[1] * 6 + [0] * 3]))[0, :6]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_bert_is_bidirectional_and_token_types_matter():
    m = tiny("bert")
    x = ids(1, 6)
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % TINY["vocab_size"]
    assert not torch.allclose(m(x)[0, 0], m(y)[0, 0], atol=1e-4)  # the first token sees the last
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    assert not torch.allclose(m(x, token_type_ids=types), m(x), atol=1e-4)
    torch.testing.assert_close(m(x, token_type_ids=torch.zeros_like(x)), m(x))


def test_bert_dropout_follows_the_embedding_layernorm_and_the_pooler():
    """As in BERT: dropout acts on LayerNorm(embeddings) and on tanh(pooler(h)), so each entry is 0 or its eval
    value / (1 - p)."""
    m = tiny("bert", dropout=0.5)
    x = ids(2, 16)
    emb = m.bert.embeddings
    want = emb.eval()(x) / 0.5
    got = emb.train()(x)
    assert 0.3 < (got == 0).float().mean() < 0.7
    torch.testing.assert_close(got[got != 0], want[got != 0])
    clf = BertClassifier(m.config, num_labels=3).eval()
    clf.classifier = torch.nn.Identity()  # the classifier's input, the dropped-out pooled vector, comes out
    want = clf(x) / 0.5
    clf.dropout.train()
    got = clf(x)
    assert (got == 0).any()
    torch.testing.assert_close(got[got != 0], want[got != 0])


def test_bert_classifier_from_pretrained_mlm():
    mlm = tiny("bert")
    clf = BertClassifier.from_pretrained_mlm(mlm, num_labels=3).eval()
    ours, theirs = clf.bert.state_dict(), mlm.bert.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)
    x, mask = ids(2, 6), torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    assert clf(x, attention_mask=mask).shape == (2, 3)
    torch.testing.assert_close(clf.bert(x, mask), mlm.bert(x, mask))
    with pytest.raises(ValueError, match="2 labels"):
        BertClassifier(mlm.config, num_labels=1)


def test_bert_classifier_mean_pooling_is_each_items_own_mean(tmp_path):
    """Padded batch == each passage alone, unpadded (brute force); the pooling survives save/load."""
    from tinylm.models.io import load_pretrained, save_pretrained

    clf = BertClassifier.from_pretrained_mlm(tiny("bert"), num_labels=3, pooling="mean").eval()
    x, mask = ids(2, 6), torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    one = [clf.pooler(clf.bert(x[i:i + 1, :n]).mean(1)) for i, n in enumerate((6, 3))]
    want = torch.cat([clf.classifier(torch.tanh(p)) for p in one])
    torch.testing.assert_close(clf(x, attention_mask=mask), want)
    cls_pooled = BertClassifier.from_pretrained_mlm(tiny("bert"), num_labels=3).eval()
    cls_pooled.load_state_dict(clf.state_dict())
    assert not torch.allclose(cls_pooled(x, attention_mask=mask), want, atol=1e-4)
    back = load_pretrained(save_pretrained(clf, tmp_path / "clf"))
    assert back.pooling == "mean"
    torch.testing.assert_close(back(x, attention_mask=mask), want)
    with pytest.raises(ValueError, match="pooling must be one of"):
        BertClassifier(clf.config, num_labels=3, pooling="max")


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_gpt_classifier_pools_each_items_own_states(pooling, tmp_path):
    """Right- and left-padded batches == each passage alone, unpadded (brute force from the LM's own hidden
    states); the pretrained weights are copied exactly; the pooling survives save/load."""
    from tinylm.models.io import load_pretrained, save_pretrained

    lm = tiny("gpt2")
    clf = classifier_from_pretrained(lm, num_labels=3, pooling=pooling).eval()
    assert isinstance(clf, GPTClassifier)
    ours, theirs = clf.gpt.state_dict(), lm.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = ids(2, 6)
    alone = [lm.transformer.ln_f(lm.hidden_states(x[i:i + 1, :n]))[0] for i, n in enumerate((6, 3))]  # (n, C)
    pooled = torch.stack([h.mean(0) if pooling == "mean" else h[-1] for h in alone])  # (2, C)
    want = clf.classifier(pooled)
    right = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(clf(x, attention_mask=right), want)
    left_x = torch.stack([x[0], torch.cat([x[1, 3:], x[1, :3]])])  # row 1: 3 padding tokens, then its 3 real ones
    left = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    torch.testing.assert_close(clf(left_x, attention_mask=left), want)
    torch.testing.assert_close(clf(x[:1]), want[:1])  # no mask: every token is real
    back = load_pretrained(save_pretrained(clf, tmp_path / "clf"))
    assert isinstance(back, GPTClassifier) and back.pooling == pooling
    torch.testing.assert_close(back(x, attention_mask=right), want)


def test_classifier_guards():
    lm = tiny("gpt2")
    with pytest.raises(ValueError, match="pooling must be one of"):
        GPTClassifier(lm.config, num_labels=3, pooling="cls")  # a causal model's first token saw nothing
    with pytest.raises(ValueError, match="2 labels"):
        GPTClassifier(lm.config, num_labels=1)
    with pytest.raises(ValueError, match="arch='seq2seq'"):
        build_classifier(tiny("transformer").config, 3, "mean")
    with pytest.raises(ValueError, match="pretrained BERT or GPT"):
        classifier_from_pretrained(tiny("transformer"), 3, "mean")


# ---- encoder-decoder -------------------------------------------------------------------------------------
def test_seq2seq_cached_decode_equals_full_decode():
    m = tiny("transformer")
    src, tgt = ids(2, 6), ids(2, 7)
    src_mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    memory = m.encode(src, src_mask)
    full = m.decode(tgt, memory, src_mask)
    cache = m.new_cache()
    outs = [m.decode(tgt[:, :3], memory, src_mask, cache=cache)]
    outs += [m.decode(tgt[:, t:t + 1], memory, src_mask, cache=cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m(src, tgt, src_mask), full)


def test_seq2seq_source_padding_invariance():
    m = tiny("transformer")
    src, tgt = ids(1, 5), ids(1, 4)
    alone = m(src, tgt)
    padded_src = torch.cat([src, ids(1, 3)], 1)  # padding tokens with arbitrary ids
    padded = m(padded_src, tgt, src_mask=torch.tensor([[1] * 5 + [0] * 3]))
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(m(padded_src, tgt), alone, atol=1e-4)  # unmasked, the extra tokens matter


def test_seq2seq_target_is_causal():
    m = tiny("transformer")
    src, tgt = ids(1, 5), ids(1, 6)
    tgt2 = tgt.clone()
    tgt2[0, 4] = (tgt2[0, 4] + 1) % TINY["vocab_size"]
    a, b = m(src, tgt), m(src, tgt2)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-4)


def test_seq2seq_embedding_is_scaled_token_plus_sinusoid():
    """emb(x) * sqrt(d) + PE(t), PE(t, 2i) = sin(t / 10000^(2i/d)), PE(t, 2i+1) = cos(...) (Vaswani et al.), from
    an embedding initialised at N(0, 1/d): unit-scale tokens."""
    m = tiny("transformer")
    d, x = TINY["n_embd"], ids(2, 7)
    t = torch.arange(3, 10, dtype=torch.float64)[:, None]
    angle = t / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.stack([angle.sin(), angle.cos()], -1).flatten(1)  # interleaved: sin, cos, sin, ...
    want = m.embed.weight[x].double() * math.sqrt(d) + pe
    torch.testing.assert_close(m._embed(x, start=3).double(), want, rtol=1e-5, atol=1e-5)
    big = build_model(presets("transformer", vocab_size=512, n_embd=256, n_head=4))
    assert big.embed.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.03)


def test_seq2seq_target_mask_hides_masked_tokens():
    m = tiny("transformer")
    src, tgt = ids(1, 5), ids(1, 6)
    tgt_mask = torch.tensor([[0, 0, 1, 1, 1, 1]])  # left padding
    tgt2 = tgt.clone()
    tgt2[0, :2] = (tgt2[0, :2] + 1) % TINY["vocab_size"]
    torch.testing.assert_close(m(src, tgt, tgt_mask=tgt_mask)[:, 2:], m(src, tgt2, tgt_mask=tgt_mask)[:, 2:])
    assert not torch.allclose(m(src, tgt)[:, 2:], m(src, tgt2)[:, 2:], atol=1e-4)  # unmasked, they matter


def test_the_chat_flag_travels_with_the_saved_model(tmp_path):
    import json

    from tinylm.models.io import is_chat_model, save_pretrained

    model = build_model(presets("gpt2", vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    save_pretrained(model, tmp_path / "sft", chat=True)
    save_pretrained(model, tmp_path / "base")
    assert is_chat_model(tmp_path / "sft") and not is_chat_model(tmp_path / "base")
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    del config["chat"]  # a folder written before the flag existed: not a chat model
    (tmp_path / "base" / "config.json").write_text(json.dumps(config))
    assert not is_chat_model(tmp_path / "base")
