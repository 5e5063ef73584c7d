"""Export to and import from Hugging Face `transformers`.

    gpt2-style GPT       <-> GPT2LMHeadModel   (GPT-2's Conv1D stores weights as (in, out): transposed)
    baichuan-style GPT   <-> LlamaForCausalLM  (fused c_attn split into q/k/v_proj; NormHead rows are
                                                normalised on export, since Llama's head is a plain matrix)
    BERT                 <-> BertForMaskedLM
    BERT with RoPE       <-> RoFormerForMaskedLM (base 10000, RoFormer's fixed one; RoFormer rotates adjacent
                                                 pairs (2i, 2i+1) where tinylm rotates (i, i + D/2): the q and
                                                 k rows of each head are permuted to match)

Logits agree to float32 round-off on the same inputs (pass HF the position_ids that tinylm derives from the
attention mask: p = cumsum(mask) - 1). The tinylm ModelConfig travels in the HF config under `tinylm`, so
`from_hf(to_hf(m))` rebuilds the same model. `save_hf(model, path)` writes a directory that
`AutoModelFor*.from_pretrained(path)` loads.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models import BERT, GPT, ModelConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _gpt2_compatible(cfg: ModelConfig) -> bool:
    return (cfg.norm, cfg.norm_placement, cfg.position, cfg.mlp, cfg.bias, cfg.tie_embeddings, cfg.norm_head) == (
        "layernorm", "pre", "learned", "gelu_tanh", True, True, False) and cfg.n_kv_head == cfg.n_head


def _llama_compatible(cfg: ModelConfig) -> bool:
    return (cfg.norm, cfg.norm_placement, cfg.position, cfg.mlp, cfg.bias, cfg.tie_embeddings) == (
        "rmsnorm", "pre", "rope", "swiglu", False, False)


def _bert_compatible(cfg: ModelConfig) -> bool:
    return (cfg.norm, cfg.norm_placement, cfg.mlp, cfg.bias) == ("layernorm", "post", "gelu", True) \
        and cfg.n_kv_head == cfg.n_head and (cfg.position == "learned" or (cfg.position, cfg.rope_base) == (
            "rope", 10000.0))


# ---- GPT-2 ---------------------------------------------------------------------------------------------------
def _gpt2_state(state: dict) -> dict:
    """GPT-2's Conv1D weights are nn.Linear's transposed: the same map both ways."""
    return {k: (v.t() if k.endswith(_CONV1D) else v).clone() for k, v in state.items()}


def _gpt2_config(cfg: ModelConfig):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, n_inner=cfg.mlp_hidden, activation_function="gelu_new",
                      resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                      layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=True, pad_token_id=cfg.pad_token_id,
                      bos_token_id=None, eos_token_id=None)


# ---- Llama (Baichuan-style) ----------------------------------------------------------------------------------
def _llama_pairs(cfg: ModelConfig):
    """(tinylm key, HF key) for every tensor except the split c_attn."""
    yield "transformer.wte.weight", "model.embed_tokens.weight"
    yield "transformer.ln_f.weight", "model.norm.weight"
    yield "lm_head.weight", "lm_head.weight"
    for i in range(cfg.n_layer):
        a, b = f"transformer.h.{i}.", f"model.layers.{i}."
        yield a + "ln_1.weight", b + "input_layernorm.weight"
        yield a + "ln_2.weight", b + "post_attention_layernorm.weight"
        yield a + "attn.c_proj.weight", b + "self_attn.o_proj.weight"
        for p in ("gate_proj", "up_proj", "down_proj"):
            yield a + f"mlp.{p}.weight", b + f"mlp.{p}.weight"


def _qkv_sizes(cfg: ModelConfig) -> list[int]:
    return [cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim]


def _llama_state(model: GPT) -> dict:
    cfg, ours = model.config, model.state_dict()
    out = {hf: ours[k].clone() for k, hf in _llama_pairs(cfg)}
    if cfg.norm_head:
        out["lm_head.weight"] = F.normalize(out["lm_head.weight"], dim=-1)
    for i in range(cfg.n_layer):
        q, k, v = ours[f"transformer.h.{i}.attn.c_attn.weight"].split(_qkv_sizes(cfg), dim=0)
        for name, w in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
            out[f"model.layers.{i}.self_attn.{name}.weight"] = w.clone()
    return out


def _llama_config(cfg: ModelConfig):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.mlp_hidden,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.block_size,
                       rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_base, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False, hidden_act="silu", attention_dropout=cfg.dropout,
                       pad_token_id=cfg.pad_token_id)


def _from_llama_state(hf: dict, cfg: ModelConfig) -> dict:
    out = {k: hf[h].clone() for k, h in _llama_pairs(cfg)}
    for i in range(cfg.n_layer):
        b = f"model.layers.{i}.self_attn."
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([hf[b + f"{n}_proj.weight"] for n in "qkv"], dim=0)
    return out


# ---- BERT ----------------------------------------------------------------------------------------------------
def _bert_pairs(cfg: ModelConfig):
    """(tinylm key, HF key): BertForMaskedLM's, or RoFormerForMaskedLM's for RoPE (no position table)."""
    hf = "bert" if cfg.position == "learned" else "roformer"
    for k in ("word_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias",
              *(("position_embeddings.weight",) if cfg.position == "learned" else ())):
        yield f"bert.embeddings.{k}", f"{hf}.embeddings.{k}"
    names = {"attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key",
             "attn.v_proj": "attention.self.value", "attn.c_proj": "attention.output.dense",
             "ln_1": "attention.output.LayerNorm", "mlp.c_fc": "intermediate.dense",
             "mlp.c_proj": "output.dense", "ln_2": "output.LayerNorm"}
    for i in range(cfg.n_layer):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                yield f"bert.layer.{i}.{ours}.{p}", f"{hf}.encoder.layer.{i}.{theirs}.{p}"
    for p in ("weight", "bias"):
        yield f"transform.{p}", f"cls.predictions.transform.dense.{p}"
        yield f"transform_norm.{p}", f"cls.predictions.transform.LayerNorm.{p}"
    yield "decoder_bias", "cls.predictions.bias"


def _rotary_rows(w: torch.Tensor, n_head: int, to_hf: bool) -> torch.Tensor:
    """q/k projection rows (n_head * D, ...) from tinylm's rotate-half order (pair i with i + D/2) to
    RoFormer's adjacent pairs (row 2i <- i, row 2i+1 <- i + D/2), or back (to_hf=False)."""
    d = w.size(0) // n_head
    perm = torch.arange(d).view(2, d // 2).t().flatten()  # (D,): [0, D/2, 1, D/2 + 1, ...]
    perm = perm if to_hf else perm.argsort()
    return w.view(n_head, d, *w.shape[1:])[:, perm].reshape(w.shape)


def _bert_state(state: dict, cfg: ModelConfig, to_hf: bool) -> dict:
    """tinylm BERT state -> the HF model's (to_hf) or back, RoPE heads' q/k rows reordered."""
    out = {}
    for ours, theirs in _bert_pairs(cfg):
        src, dst = (ours, theirs) if to_hf else (theirs, ours)
        w = state[src].clone()
        if cfg.position == "rope" and ours.endswith(("attn.q_proj.weight", "attn.q_proj.bias", "attn.k_proj.weight",
                                                     "attn.k_proj.bias")):
            w = _rotary_rows(w, cfg.n_head, to_hf)
        out[dst] = w
    return out


def _bert_config(cfg: ModelConfig):
    from transformers import BertConfig, RoFormerConfig

    if cfg.position == "rope":  # RoFormer's embedding_size: no projection between embeddings and layers
        return RoFormerConfig(vocab_size=cfg.vocab_size, embedding_size=cfg.n_embd, hidden_size=cfg.n_embd,
                              num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                              intermediate_size=cfg.mlp_hidden, hidden_act="gelu",
                              max_position_embeddings=cfg.block_size, type_vocab_size=cfg.type_vocab_size,
                              layer_norm_eps=cfg.norm_eps, hidden_dropout_prob=cfg.dropout,
                              attention_probs_dropout_prob=cfg.dropout, pad_token_id=cfg.pad_token_id or 0,
                              rotary_value=False)
    return BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
                      num_attention_heads=cfg.n_head, intermediate_size=cfg.mlp_hidden, hidden_act="gelu",
                      max_position_embeddings=cfg.block_size, type_vocab_size=cfg.type_vocab_size,
                      layer_norm_eps=cfg.norm_eps, hidden_dropout_prob=cfg.dropout,
                      attention_probs_dropout_prob=cfg.dropout, pad_token_id=cfg.pad_token_id or 0)


# ---- public API ----------------------------------------------------------------------------------------------
def to_hf(model: nn.Module) -> nn.Module:
    """A `transformers` model (eval mode) computing the same logits as `model`."""
    from transformers import BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM, RoFormerForMaskedLM

    cfg = model.config
    if isinstance(model, GPT) and _gpt2_compatible(cfg):
        hf_cls, hf_cfg, state = GPT2LMHeadModel, _gpt2_config(cfg), _gpt2_state(model.state_dict())
    elif isinstance(model, GPT) and _llama_compatible(cfg):
        hf_cls, hf_cfg, state = LlamaForCausalLM, _llama_config(cfg), _llama_state(model)
    elif isinstance(model, BERT) and _bert_compatible(cfg):
        hf_cls = BertForMaskedLM if cfg.position == "learned" else RoFormerForMaskedLM
        hf_cfg, state = _bert_config(cfg), _bert_state(model.state_dict(), cfg, to_hf=True)
        state["cls.predictions.decoder.weight"] = state[f"{hf_cls.base_model_prefix}.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    else:
        raise ValueError(
            f"no transformers architecture matches this {type(model).__name__} (norm={cfg.norm}, norm_placement="
            f"{cfg.norm_placement}, position={cfg.position}, mlp={cfg.mlp}, bias={cfg.bias}, tie_embeddings="
            f"{cfg.tie_embeddings}, n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}): export supports "
            "the gpt2 preset (GPT2LMHeadModel), the baichuan preset (LlamaForCausalLM) and bert (BertForMaskedLM; "
            "with position=rope at rope_base 10000: RoFormerForMaskedLM)")
    hf_cfg.tinylm = cfg.to_dict()
    hf = hf_cls(hf_cfg)
    _load_exact(hf, state)
    return hf.eval()


def from_hf(hf_model: nn.Module) -> nn.Module:
    """The tinylm model equal to a GPT2LMHeadModel, LlamaForCausalLM, BertForMaskedLM or RoFormerForMaskedLM."""
    hf_cfg, state = hf_model.config, hf_model.state_dict()
    saved = getattr(hf_cfg, "tinylm", None)
    kind = hf_cfg.model_type
    if not saved:
        _refuse_what_tinylm_cannot_compute(hf_cfg)
    if kind == "gpt2":
        cfg = ModelConfig(**saved) if saved else _gpt2_from_config(hf_cfg)
        model, ours = GPT(cfg), _gpt2_state({k: v for k, v in state.items()
                                             if not k.endswith((".attn.bias", ".attn.masked_bias"))})
    elif kind == "llama":
        cfg = ModelConfig(**saved) if saved else _llama_from_config(hf_cfg)
        model, ours = GPT(cfg), _from_llama_state(state, cfg)
    elif kind in ("bert", "roformer"):
        cfg = ModelConfig(**saved) if saved else _bert_from_config(hf_cfg)
        model, ours = BERT(cfg), _bert_state(state, cfg, to_hf=False)
    else:
        raise ValueError(f"cannot import model_type={kind!r}: supported are gpt2, llama, bert and roformer")
    if cfg.tie_embeddings and "lm_head.weight" in ours:
        ours.pop("lm_head.weight")
    _load_exact(model, ours)
    return model.eval()


def save_hf(model: nn.Module, path: str | Path, tokenizer_file: str | Path | None = None) -> Path:
    """Export with `to_hf` and `save_pretrained(path)` (safetensors) and, given the tokenizer.json, its fast
    tokenizer with tinylm's special tokens, so `AutoTokenizer` loads the folder too and HF behaves as tinylm
    does: a decoder's config and generation_config carry the EOS and pad ids (`generate` stops at EOS) and its
    tokenizer pads on the left; an encoder's tokenizer frames text as [CLS] ... [SEP], as it was trained. The
    folder is written whole or not at all (made aside, then renamed). Returns the path; ValueError for an
    architecture `transformers` has no counterpart of (e.g. gpt2 with RoPE)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from tinylm.atomic import atomic_dir
    from tinylm.data.special_tokens import CLS, EOS, MASK, PAD, SEP

    hf = to_hf(model)  # raises before anything is written
    tok = None
    if tokenizer_file is not None:
        decoder = isinstance(model, GPT)
        extra = dict(padding_side="left") if decoder else dict(cls_token=CLS, sep_token=SEP)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=EOS, pad_token=PAD,
                                      mask_token=MASK, **extra)
        if decoder:
            for c in (hf.config, hf.generation_config):
                c.eos_token_id, c.pad_token_id = tok.eos_token_id, tok.pad_token_id
        else:
            tok.backend_tokenizer.post_processor = TemplateProcessing(
                single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
                special_tokens=[(CLS, tok.cls_token_id), (SEP, tok.sep_token_id)])
    path = Path(path)
    with atomic_dir(path) as tmp:
        hf.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
    return path


def _load_exact(model: nn.Module, state: dict) -> None:
    """load_state_dict that tolerates only tied or non-persistent duplicates, never a missing weight."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
            "roformer.encoder.embed_positions.weight"}  # RoFormer's sinusoid table: a function of its config
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"weight mismatch converting {type(model).__name__}: "
                         f"missing={missing} unexpected={unexpected}")


def _refuse_what_tinylm_cannot_compute(c) -> None:
    """ValueError for options of a transformers config that tinylm's models do not have: imported regardless,
    such a model would give other logits (Llama 3's rope scaling, biased Llama projections, ReLU, untied GPT-2)."""
    bad, get = [], lambda key, default=None: getattr(c, key, default)
    if c.model_type == "gpt2":
        bad += [f"activation_function={get('activation_function')!r}"] * (
            get("activation_function") not in ("gelu_new", "gelu_pytorch_tanh"))
        bad += ["tie_word_embeddings=False"] * (not get("tie_word_embeddings", True))
        bad += ["scale_attn_weights=False"] * (not get("scale_attn_weights", True))
        bad += ["scale_attn_by_inverse_layer_idx=True"] * bool(get("scale_attn_by_inverse_layer_idx"))
    elif c.model_type == "llama":
        bad += [f"{key}=True" for key in ("attention_bias", "mlp_bias") if get(key)]
        bad += [f"hidden_act={get('hidden_act')!r}"] * (get("hidden_act") != "silu")
        rope_type = (get("rope_parameters") or get("rope_scaling") or {}).get("rope_type", "default")
        bad += [f"rope_type={rope_type!r}"] * (rope_type != "default")
    elif c.model_type in ("bert", "roformer"):
        bad += [f"hidden_act={get('hidden_act')!r}"] * (get("hidden_act") != "gelu")
    if bad:
        raise ValueError(f"cannot import this {c.model_type} model: {', '.join(bad)}; tinylm's model has no such "
                         "option, and the import would compute other logits")


def _gpt2_from_config(c) -> ModelConfig:
    from tinylm.models import presets

    return presets("gpt2", vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                   n_embd=c.n_embd, mlp_hidden=c.n_inner or 4 * c.n_embd, norm_eps=c.layer_norm_epsilon)


def _llama_from_config(c) -> ModelConfig:
    from tinylm.models import presets

    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
    return presets("baichuan", vocab_size=c.vocab_size, block_size=c.max_position_embeddings,
                   n_layer=c.num_hidden_layers, n_head=c.num_attention_heads, n_kv_head=c.num_key_value_heads,
                   n_embd=c.hidden_size, mlp_hidden=c.intermediate_size, norm_eps=c.rms_norm_eps, rope_base=rope,
                   norm_head=False, z_loss_weight=0.0)


def _bert_from_config(c) -> ModelConfig:
    from tinylm.models import presets

    if c.model_type == "roformer" and (c.embedding_size != c.hidden_size or c.rotary_value):
        raise ValueError("cannot import a RoFormer with embedding_size != hidden_size or rotary_value=True: "
                         "tinylm's BERT has neither")
    return presets("bert", vocab_size=c.vocab_size, block_size=c.max_position_embeddings,
                   n_layer=c.num_hidden_layers, n_head=c.num_attention_heads, n_embd=c.hidden_size,
                   mlp_hidden=c.intermediate_size, norm_eps=c.layer_norm_eps, type_vocab_size=c.type_vocab_size,
                   position="learned" if c.model_type == "bert" else "rope")
