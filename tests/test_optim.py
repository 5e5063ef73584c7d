"""AdamW decay groups, Muon + AdamW and the warm-up + cosine schedule (training/optim.py)."""

import copy
import math

import pytest
import torch

from tinylm.models import build_model, presets
from tinylm.training.optim import Muon, build_optimizer, build_scheduler, lr_at, orthogonalize, param_groups

TINY = dict(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16)


def group_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return [sorted(names[id(p)] for p in g["params"]) for g in groups]


def decayed_by_hand(name, p):
    """GPT-2's rule, stated independently of param_groups: matrices decay, the position table does not."""
    return p.dim() >= 2 and "wpe" not in name


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
        assert (n in decay) == decayed_by_hand(n, p), n


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


# ---- Muon on the blocks' matrices, AdamW on the rest --------------------------------------------------------
def test_muon_takes_the_blocks_linear_weights_only():
    model = build_model(presets("gpt2", **TINY))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, optimizer="muon")
    muon, *rest = group_names(model, opt.param_groups)
    assert muon == sorted(f"transformer.h.{i}.{m}.weight" for i in range(2)
                          for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert "transformer.wte.weight" in rest[0] and "transformer.ln_f.weight" in rest[1]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, lr=1e-2, weight_decay=0.1, optimizer="sgd")


def test_muon_adamw_steps_as_torch_muon_and_adamw_side_by_side():
    """Reference: Muon and torch.optim.AdamW on copies of the same groups, under the same schedule."""
    torch.manual_seed(0)
    model = build_model(presets("gpt2", **TINY))
    ref = build_model(presets("gpt2", **TINY))
    ref.load_state_dict(model.state_dict())
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, optimizer="muon")
    sched = build_scheduler(opt, 1e-2, 1e-3, 2, 6)
    by_name = dict(ref.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{**g, "params": [by_name[names[id(p)]] for p in g["params"]]} for g in opt.param_groups]
    muon = Muon([{k: groups[0][k] for k in ("params", "weight_decay")}], lr=1e-2)
    adamw = torch.optim.AdamW([{k: g[k] for k in ("params", "weight_decay")} for g in groups[1:]], lr=1e-2,
                              betas=(0.9, 0.95))
    ref_scheds = [build_scheduler(o, 1e-2, 1e-3, 2, 6) for o in (muon, adamw)]
    x = torch.randint(0, 32, (4, 16))
    for _ in range(5):
        for m, steppers in ((model, [opt]), (ref, [muon, adamw])):
            loss = torch.nn.functional.cross_entropy(m(x)[:, :-1].reshape(-1, 32), x[:, 1:].reshape(-1))
            loss.backward()
            for o in steppers:
                o.step()
                o.zero_grad()
        for s in (sched, *ref_scheds):
            s.step()
    assert opt.param_groups[0]["lr"] == muon.param_groups[0]["lr"] < 1e-2
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, by_name[n], rtol=0, atol=0, msg=n)


def test_muon_adamw_state_dict_resumes_exactly():
    torch.manual_seed(0)
    x = torch.randint(0, 32, (4, 16))

    def run(model, opt, steps):
        for _ in range(steps):
            torch.nn.functional.cross_entropy(model(x)[:, :-1].reshape(-1, 32), x[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad()

    a = build_model(presets("gpt2", **TINY))
    b = build_model(presets("gpt2", **TINY))
    b.load_state_dict(a.state_dict())
    opt_a = build_optimizer(a, lr=1e-2, weight_decay=0.1, optimizer="muon")
    run(a, opt_a, 2)
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, lr=1e-2, weight_decay=0.1, optimizer="muon")
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as through torch.save/load: no shared tensors
    assert opt_b.param_groups[0] is opt_b.muon.param_groups[0]  # a scheduler still reaches Muon
    assert opt_b.param_groups[-1] is opt_b.adamw.param_groups[-1]
    run(a, opt_a, 2)
    run(b, opt_b, 2)
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="the reference, torch.optim.Muon, came in torch 2.9")
@pytest.mark.parametrize("shape", [(8, 8), (24, 8), (8, 40)])
def test_muon_in_bf16_is_torch_muon_and_fp32_is_close(shape):
    torch.manual_seed(0)
    w0, grads = torch.randn(shape), [torch.randn(shape) for _ in range(3)]
    runs = {}
    for name, make in (("torch", lambda p: torch.optim.Muon([p], lr=0.02, weight_decay=0.1,
                                                            adjust_lr_fn="match_rms_adamw")),
                       ("bf16", lambda p: Muon([p], lr=0.02, weight_decay=0.1, ns_dtype=torch.bfloat16)),
                       ("fp32", lambda p: Muon([p], lr=0.02, weight_decay=0.1))):
        p = torch.nn.Parameter(w0.clone())
        opt = make(p)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        runs[name] = p.detach()
    torch.testing.assert_close(runs["bf16"], runs["torch"], rtol=0, atol=0)
    torch.testing.assert_close(runs["fp32"], runs["torch"], rtol=0, atol=0.02 * 0.2 * max(shape) ** 0.5 * 3 * 0.05)


def test_orthogonalize_flattens_the_spectrum():
    """NS5 maps singular values into roughly [0.5, 1.5] and keeps the singular vectors (float64, SVD)."""
    torch.manual_seed(0)
    g = torch.randn(16, 48, dtype=torch.float64) @ torch.diag(torch.logspace(-2, 1, 48, dtype=torch.float64))
    o = orthogonalize(g)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    s_o = torch.linalg.svdvals(o)
    assert s_o.min() > 0.3 and s_o.max() < 1.6, s_o
    torch.testing.assert_close(o, u @ torch.diag((u.T @ o @ vh.T).diagonal()) @ vh, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))], lr=0.1)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_lr_scale_gives_a_prefix_its_own_lr_through_the_schedule(optimizer):
    """The scaled parameters get lr x scale, the rest lr, and the schedule keeps the ratio at every step."""
    model = build_model(presets("bert", **TINY))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, optimizer=optimizer, lr_scale={"transform": 10.0})
    sched = build_scheduler(opt, 1e-3, 1e-4, warmup_steps=2, max_steps=6)
    scaled = {id(p) for n, p in model.named_parameters() if n.startswith("transform")}
    assert len(scaled) == 4  # transform.{weight,bias}, transform_norm.{weight,bias}
    lrs = {}
    for step in range(8):
        for g in opt.param_groups:
            for p in g["params"]:
                lrs.setdefault(id(p) in scaled, set()).add(g["lr"])
        assert len(lrs[True]) == 1 and len(lrs[False]) == 1, "one lr per kind at a step"
        (fast,), (slow,) = lrs.pop(True), lrs.pop(False)
        assert fast == pytest.approx(10 * slow) and slow == pytest.approx(lr_at(step, 1e-3, 1e-4, 2, 6))
        opt.step()
        sched.step()
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted({id(p) for p in model.parameters()})  # each once


def test_without_lr_scale_the_groups_are_decay_then_keep():
    model = build_model(presets("gpt2", **TINY))
    assert [g["lr_scale"] for g in param_groups(model, 0.1)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="lr_scale must be > 0"):
        from tinylm.training.optim import OptimConfig
        OptimConfig(lr=1e-3, min_lr=0.0, warmup_steps=0, max_steps=2, weight_decay=0.0, lr_scale={"x": 0.0})


def test_adamw_steps_as_torch_adamw_over_hand_made_groups():
    """Reference: torch.optim.AdamW on a copy, groups built by hand (matrices but wpe decayed), same betas and eps."""
    torch.manual_seed(0)
    model = build_model(presets("gpt2", **TINY))
    ref = copy.deepcopy(model)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-3)
    decay = [p for n, p in ref.named_parameters() if decayed_by_hand(n, p)]
    keep = [p for n, p in ref.named_parameters() if not decayed_by_hand(n, p)]
    ref_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}],
                                lr=1e-2, betas=(0.8, 0.9), eps=1e-3)
    x = torch.randint(0, 32, (4, 16))
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            torch.nn.functional.cross_entropy(m(x)[:, :-1].reshape(-1, 32), x[:, 1:].reshape(-1)).backward()
            o.step()
            o.zero_grad()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_with_zero_gradients_a_step_only_decays_the_decayed_parameters(optimizer):
    """Decoupled decay by hand: a zero gradient moves nothing but the decayed weights, each times (1 - lr wd);
    under Muon the blocks' matrices decay too."""
    model = build_model(presets("gpt2", **TINY))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, optimizer=optimizer)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 0.95 if decayed_by_hand(n, p) else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-6, atol=0, msg=n)


def test_decay_goes_by_the_dimensions_before_wrapping():
    """FSDP flattens every parameter to 1-D: `dims` (the shapes before) decides, else each one's own shape."""
    model = torch.nn.Module()
    model.shard = torch.nn.Parameter(torch.zeros(12))  # a flattened 3 x 4 weight
    model.gain = torch.nn.Parameter(torch.zeros(4))
    decay, keep = group_names(model, param_groups(model, 0.1, dims={id(model.shard): 2, id(model.gain): 1}))
    assert decay == ["shard"] and keep == ["gain"]
    assert group_names(model, param_groups(model, 0.1)) == [[], ["gain", "shard"]]


def test_lr_scale_keys_are_name_prefixes():
    model = build_model(presets("gpt2", **TINY))
    assert len(param_groups(model, 0.1, lr_scale={"wte": 3.0})) == 2  # inside "transformer.wte.weight": no match
    *_, scaled = group_names(model, param_groups(model, 0.1, lr_scale={"transformer.wte": 3.0}))
    assert scaled == ["transformer.wte.weight"]
