"""AdamW decay groups and the warm-up + cosine schedule (training/optim.py)."""

import math

import pytest
import torch

from tinylm.models import build_model, presets
from tinylm.training.optim import build_optimizer, build_scheduler, lr_at, param_groups

TINY = dict(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16)


def group_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return [sorted(names[id(p)] for p in g["params"]) for g in groups]


def test_gpt2_groups_decay_matrices_only():
    model = build_model(presets("gpt2", **TINY))
    groups = param_groups(model, weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, keep = group_names(model, groups)
    assert "transformer.wte.weight" in decay
    assert "transformer.h.0.attn.c_attn.weight" in decay and "transformer.h.1.mlp.c_proj.weight" in decay
    assert "transformer.wpe.weight" in keep  # position table: never decayed
    assert "transformer.h.0.ln_1.weight" in keep and "transformer.ln_f.bias" in keep
    assert "transformer.h.0.attn.c_attn.bias" in keep
    # lm_head is tied to wte: counted once, under wte's name
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" not in decay + keep
    for p in groups[0]["params"]:
        assert p.dim() == 2
    for n, p in model.named_parameters():
        if n != "transformer.wpe.weight":
            assert (n in decay) == (p.dim() >= 2)


@pytest.mark.parametrize("preset", ["gpt2", "baichuan", "bert", "transformer"])
def test_every_trainable_parameter_in_exactly_one_group(preset):
    model = build_model(presets(preset, **TINY))
    first = next(model.parameters())
    first.requires_grad_(False)  # frozen parameters are left out
    groups = param_groups(model, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert id(first) not in ids


def test_bert_position_and_segment_tables_not_decayed():
    model = build_model(presets("bert", **TINY))
    decay, keep = group_names(model, param_groups(model, 0.1))
    assert "bert.embeddings.word_embeddings.weight" in decay
    assert "bert.embeddings.position_embeddings.weight" in keep
    assert "bert.embeddings.token_type_embeddings.weight" in keep
    assert "decoder_bias" in keep


def test_no_decay_is_configurable():
    model = build_model(presets("gpt2", **TINY))
    decay, keep = group_names(model, param_groups(model, 0.1, no_decay=("wte",)))
    assert "transformer.wte.weight" in keep
    assert "transformer.wpe.weight" in decay  # no longer exempt: the default list was replaced
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, no_decay=("wte", "wpe"))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.transformer.wte.weight) not in decayed and id(model.transformer.wpe.weight) not in decayed
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0


LR, MIN_LR, WARMUP, MAX = 1e-3, 1e-4, 10, 110


@pytest.mark.parametrize(("step", "expected"), [
    (0, 1e-4),            # lr * 1 / warmup
    (4, 5e-4),
    (9, 1e-3),            # end of warm-up: full lr
    (10, 1e-3),           # cosine starts at lr
    (35, 1e-4 + 0.5 * (1 + math.sqrt(0.5)) * 9e-4),  # a quarter into the cosine: 8.682e-4
    (60, 5.5e-4),         # half way: (lr + min_lr) / 2
    (110, 1e-4),          # max_steps: min_lr
    (111, 1e-4),
    (10_000, 1e-4),
])
def test_lr_at(step, expected):
    assert lr_at(step, LR, MIN_LR, WARMUP, MAX) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_lr_at_is_monotone_after_warmup():
    lrs = [lr_at(s, LR, MIN_LR, WARMUP, MAX) for s in range(WARMUP, MAX + 5)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_scheduler_drives_optimizer_lr_step_by_step():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([w], lr=LR)
    sched = build_scheduler(opt, LR, MIN_LR, WARMUP, MAX)
    seen = []
    for _ in range(MAX + 10):
        seen.append(opt.param_groups[0]["lr"])
        w.sum().backward()
        opt.step()
        sched.step()
    expected = [lr_at(s, LR, MIN_LR, WARMUP, MAX) for s in range(MAX + 10)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(1e-4) and seen[60] == pytest.approx(5.5e-4)
    assert seen[-1] == pytest.approx(1e-4)
