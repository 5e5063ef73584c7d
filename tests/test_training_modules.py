"""LightningModules: each learns a fixed tiny batch; losses, logging, guards (training/*.py)."""

import copy
import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tinylm.data.masking import mask_tokens
from tinylm.models import BertClassifier, classifier_from_pretrained, presets
from tinylm.training.base import peak_flops, peak_for
from tinylm.training.causal_lm import CausalLMModule
from tinylm.training.classification import SequenceClassificationModule
from tinylm.training.datamodules import StepDataModule, pad_collate
from tinylm.training.history import MetricHistory
from tinylm.training.masked_lm import MaskedLMModule
from tinylm.training.optim import lr_at
from tinylm.training.seq2seq import Seq2SeqModule

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

V = 32
TINY = dict(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=32)
OPTIM = dict(lr=1e-2, min_lr=1e-3, weight_decay=0.01, warmup_steps=3, max_steps=60)
PAD, CLS, SEP, MASK = 0, 1, 2, 3


def cfg(preset, **kw):
    return presets(preset, **{**TINY, **kw}).to_dict()


def lm_batch(B=4, T=16, seed=0):
    x = torch.randint(4, V, (B, T + 1), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": x[:, :-1], "labels": x[:, 1:]}


def train(module, batch, steps):
    """Plain optimiser steps on one batch with the module's own optimiser and schedule: the losses."""
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    losses = []
    for i in range(steps):
        module.on_train_batch_start(batch, i)
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def tiny_trainer(steps, callbacks=(), accumulate=1):
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                      accumulate_grad_batches=accumulate)


def one_batch_loader(batch):
    return DataLoader([batch], batch_size=None)


# ---- causal LM ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["gpt2", "baichuan"])
def test_causal_lm_overfits_a_fixed_batch(preset):
    module = CausalLMModule(cfg(preset), OPTIM, seed=0)
    losses = train(module, lm_batch(), 40)
    assert losses[0] > 3.0  # about log(32) = 3.47 (NormHead's unit rows give baichuan somewhat larger logits)
    assert losses[-1] < 0.2


def test_causal_lm_loss_is_cross_entropy_plus_z_loss():
    batch = lm_batch()
    gpt = CausalLMModule(cfg("gpt2"), OPTIM)
    logits = gpt(batch["input_ids"])
    ce = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
    torch.testing.assert_close(gpt.training_step(batch, 0), ce)
    bc = CausalLMModule(cfg("baichuan"), OPTIM)
    assert bc.model.config.z_loss_weight == 2e-4
    logits = bc(batch["input_ids"])
    ce = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
    z = 2e-4 * logits.max(-1).values.pow(2).mean()
    torch.testing.assert_close(bc.training_step(batch, 0), ce + z)
    assert z > 0


@pytest.mark.parametrize(("preset", "z_logged"), [("gpt2", False), ("baichuan", True)])
def test_training_logs(preset, z_logged):
    module = CausalLMModule(cfg(preset), OPTIM)
    trainer = tiny_trainer(3)
    trainer.fit(module, train_dataloaders=one_batch_loader(lm_batch()))
    m = trainer.callback_metrics
    assert ("train/z_loss" in m) == z_logged
    if z_logged:
        assert 0 < float(m["train/z_loss"]) < 0.1
    sched = {k: OPTIM[k] for k in ("lr", "min_lr", "warmup_steps", "max_steps")}
    assert float(m["train/lr"]) == pytest.approx(lr_at(2, **sched))  # the third optimizer step's lr
    assert float(m["train/grad_norm"]) > 0 and float(m["train/tokens_per_s"]) > 0
    assert trainer.global_step == 3


def test_sft_loss_counts_response_positions_only():
    module = CausalLMModule(cfg("gpt2"), OPTIM)
    ids = torch.randint(4, V, (2, 10), generator=torch.Generator().manual_seed(1))
    attn = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    labels = torch.full_like(ids, -100)
    labels[0, 4:9] = ids[0, 5:10]  # prompt 0..4, response 5..9
    labels[1, 2:6] = ids[1, 3:7]  # prompt 0..2, response 3..6, padding 7..9
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    logits = module(ids, attn)
    pos = labels != -100
    expected = F.cross_entropy(logits[pos], labels[pos])
    by_hand = -torch.stack([logits[b, t].log_softmax(-1)[labels[b, t]]
                            for b, t in pos.nonzero().tolist()]).mean()
    loss = module.training_step(batch, 0)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, by_hand)
    assert pos.sum() == 9
    # counting the prompt's next tokens too would change the loss: the -100s are what leave them out
    with_prompt = labels.clone()
    with_prompt[0, :4] = ids[0, 1:5]
    assert not torch.isclose(module.training_step({**batch, "labels": with_prompt}, 0), loss)


class GradsAtStep(pl.Callback):
    """The gradients the optimizer is about to apply (Lightning has divided each micro-batch's by accumulate)."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in module.named_parameters()}


def sft_items(kind: str, n: int = 6) -> list[dict]:
    """n items with 1 to 11 response tokens after prompts of 1 to 3 tokens (decoder) or as targets (seq2seq)."""
    g, items = torch.Generator().manual_seed(0), []
    for i in range(n):
        prompt, response = 1 + i % 3, 1 + 2 * i
        ids = torch.randint(4, V, (prompt + response,), generator=g).tolist()
        if kind == "transformer":
            items.append({"src_ids": ids[:prompt], "tgt_ids": [1, *ids[prompt:-1]], "labels": ids[prompt:]})
        else:
            items.append({"input_ids": ids, "labels": [-100] * prompt + ids[1 + prompt:] + [2]})
    return items


@pytest.mark.parametrize("step_targets", [True, False])
@pytest.mark.parametrize("kind", ["gpt2", "baichuan", "transformer"])
def test_accumulated_token_mean_is_the_large_batch_mean(kind, step_targets):
    """loss_average=token over 3 accumulated micro-batches with unequal response tokens: the gradient the
    optimizer gets (through Lightning) equals one batch of all 6 items' with step_targets, and not without.
    baichuan: the max-z term too (weighted 0.5 here, not 2e-4, so that an inexact one shows)."""
    model = cfg(kind, z_loss_weight=0.5) if kind == "baichuan" else cfg(kind)
    module = (Seq2SeqModule if kind == "transformer" else CausalLMModule)(model, OPTIM, label_smoothing=0.1)
    ref = copy.deepcopy(module)
    items = sft_items(kind)
    dm = StepDataModule(items, items, batch_size=2, seed=0, max_steps=1, accumulate=3, collate=pad_collate(PAD),
                        val_batch_size=2, step_targets=step_targets)  # 3 batches per epoch: step 0 has every item
    seen = GradsAtStep()
    tiny_trainer(1, [seen], accumulate=3).fit(module, datamodule=dm)
    ref.training_step(pad_collate(PAD)(items), 0).backward()
    diff = max((seen.grads[n] - p.grad).abs().max().item() for n, p in ref.named_parameters())
    assert (diff < 1e-6) == step_targets, diff


# ---- masked LM, classification, seq2seq --------------------------------------------------------------------
def mlm_batch(B=4, T=16, seed=0):
    ids = torch.randint(4, V, (B, T), generator=torch.Generator().manual_seed(seed))
    ids[:, 0], ids[:, -1] = CLS, SEP
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def mlm_module(**kw):
    return MaskedLMModule(cfg("bert"), {**OPTIM, "max_steps": 80}, mask_token_id=MASK,
                          special_ids=[PAD, CLS, SEP, MASK], **kw)


def test_masked_lm_overfits_a_fixed_batch():
    module = mlm_module()
    losses = train(module, mlm_batch(), 80)
    assert losses[0] == pytest.approx(math.log(V), abs=0.5)
    assert sum(losses[-10:]) / 10 < 0.5  # masks change every step: average the tail


def test_masked_lm_validation_masks_are_fixed():
    module = mlm_module().eval()
    batch = mlm_batch()
    a = module._step(batch, torch.Generator().manual_seed(5))
    b = module._step(batch, torch.Generator().manual_seed(5))
    assert a[0].item() == b[0].item() and a[2] == b[2] > 0


def test_masks_are_seeded_per_micro_batch(monkeypatch):
    import tinylm.training.masked_lm as masked_lm

    masks = []

    def spy(*args, **kwargs):
        out = mask_tokens(*args, **kwargs)
        masks.append(out[1] != -100)
        return out

    monkeypatch.setattr(masked_lm, "mask_tokens", spy)
    for _ in range(2):
        loader = DataLoader([mlm_batch()] * 4, batch_size=None)
        tiny_trainer(2, accumulate=2).fit(mlm_module(), train_dataloaders=loader)
    first, second = masks[:4], masks[4:]
    assert len(first) == len(second) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # a pure function of the step
    # the micro-batches of one optimizer step (same data here) are corrupted differently
    assert all(not torch.equal(first[i], first[j]) for i in range(4) for j in range(i + 1, 4))


def test_classifier_from_pretrained_mlm_copies_encoder_and_learns():
    mlm = mlm_module()
    train(mlm, mlm_batch(), 5)
    optim = {**OPTIM, "lr": 2e-3, "max_steps": 1000}
    module = SequenceClassificationModule(cfg("bert"), num_labels=3, optim=optim)
    module.model = BertClassifier.from_pretrained_mlm(mlm.model, num_labels=3)
    ours, theirs = module.model.bert.state_dict(), mlm.model.bert.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    batch = {**mlm_batch(B=6, seed=3), "labels": torch.tensor([0, 1, 2, 2, 1, 0])}
    batch["input_ids"][:, 1:8] = 4 + batch["labels"][:, None]  # the genre shows in the text
    losses = train(module, batch, 80)
    assert losses[0] == pytest.approx(math.log(3), abs=0.05)
    assert losses[-1] < 0.1
    # fine-tuning moved the copy only
    assert not torch.equal(module.model.bert.embeddings.word_embeddings.weight,
                           mlm.model.bert.embeddings.word_embeddings.weight)


def test_classifier_on_the_pretrained_decoder_learns():
    """GPT-1's recipe: the causal LM's weights under a fresh linear head, fine-tuned end to end."""
    lm = CausalLMModule(cfg("gpt2"), OPTIM)
    module = SequenceClassificationModule(cfg("gpt2"), num_labels=3, optim={**OPTIM, "lr": 2e-3, "max_steps": 1000},
                                          pooling="last", head_lr_scale=10.0)
    module.model = classifier_from_pretrained(lm.model, num_labels=3, pooling="last")
    batch = {**mlm_batch(B=6, seed=3), "labels": torch.tensor([0, 1, 2, 2, 1, 0])}
    batch["input_ids"][:, 1:8] = 4 + batch["labels"][:, None]  # the genre shows in the text
    losses = train(module, batch, 80)
    assert losses[0] == pytest.approx(math.log(3), abs=0.1)
    assert losses[-1] < 0.1
    assert not torch.equal(module.model.gpt.transformer.wte.weight, lm.model.transformer.wte.weight)


def test_classifier_head_learns_at_head_lr_scale():
    module = SequenceClassificationModule(cfg("bert"), num_labels=3, optim=OPTIM, pooling="mean", head_lr_scale=10.0)
    opt = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in module.model.named_parameters():
        head = name.startswith(("pooler.", "classifier."))
        assert lr_of[id(p)] == pytest.approx(OPTIM["lr"] * (10.0 if head else 1.0) / OPTIM["warmup_steps"]), name
    assert module.model.pooling == "mean"


def test_seq2seq_overfits_a_fixed_batch():
    BOS, EOS = 1, 2
    g = torch.Generator().manual_seed(0)
    items = []
    for n_src, n_tgt in [(6, 5), (4, 7), (7, 3)]:
        src = torch.randint(4, V, (n_src,), generator=g).tolist()
        resp = torch.randint(4, V, (n_tgt,), generator=g).tolist()
        items.append({"src_ids": src, "tgt_ids": [BOS] + resp, "labels": resp + [EOS]})
    batch = pad_collate(pad_id=PAD)(items)
    module = Seq2SeqModule(cfg("transformer"), OPTIM, label_smoothing=0.0)
    d = module.model.config.n_embd
    # the shared embedding starts at N(0, 1/d), so emb * sqrt(d) has unit scale like the positions
    assert module.model.embed.weight.std().item() == pytest.approx(d ** -0.5, rel=0.1)
    losses = train(module, batch, 50)
    assert losses[-1] < 0.1 < 1.0 < losses[0]
    smoothed = Seq2SeqModule(cfg("transformer"), OPTIM)  # label smoothing 0.1 by default: a higher floor
    assert smoothed.label_smoothing == 0.1
    logits = smoothed._logits(batch)
    keep = batch["labels"] != -100
    expected = F.cross_entropy(logits[keep], batch["labels"][keep], label_smoothing=0.1)
    torch.testing.assert_close(smoothed.training_step(batch, 0), expected)


# ---- guards and accounting ---------------------------------------------------------------------------------
def test_wrong_arch_raises():
    with pytest.raises(ValueError, match="arch='bert'"):
        CausalLMModule(cfg("bert"), OPTIM)
    with pytest.raises(ValueError, match="arch='gpt'"):
        MaskedLMModule(cfg("gpt2"), OPTIM, mask_token_id=MASK, special_ids=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="arch='gpt'"):
        Seq2SeqModule(cfg("gpt2"), OPTIM)
    with pytest.raises(ValueError, match="arch='seq2seq'"):
        SequenceClassificationModule(cfg("transformer"), num_labels=2, optim=OPTIM)


class PoisonAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.model.transformer.wte.weight.fill_(float("nan"))


def test_non_finite_loss_raises_naming_the_step():
    module = CausalLMModule(cfg("gpt2"), OPTIM)
    trainer = tiny_trainer(10, [PoisonAt(3)])
    loader = DataLoader([lm_batch()] * 10, batch_size=None)
    with pytest.raises(FloatingPointError, match="at step 3"):
        trainer.fit(module, train_dataloaders=loader)


def test_flops_per_token():
    module = CausalLMModule(cfg("gpt2", n_layer=2), OPTIM)
    d, L, T = 32, 2, 16
    per_layer = 12 * d * d + 13 * d  # qkv 3d^2+3d, proj d^2+d, MLP 8d^2+5d, two LayerNorms 4d
    n = V * d + L * per_layer + 2 * d  # tied wte/lm_head once, final LayerNorm; no position table
    assert module.flops_per_token() == 6 * n + 12 * L * d * T
    assert n == sum(p.numel() for p in module.model.parameters()) - 16 * d
    untied = CausalLMModule(cfg("baichuan", n_layer=2), OPTIM)  # wte is a lookup, lm_head multiplies
    n = sum(p.numel() for p in untied.model.parameters()) - V * d
    assert untied.flops_per_token() == 6 * n + 12 * L * d * T
    bert = MaskedLMModule(cfg("bert", n_layer=2), OPTIM, mask_token_id=MASK, special_ids=[0, 1, 2, 3])
    n = sum(p.numel() for p in bert.model.parameters()) - 16 * d - 2 * d  # the word table is the MLM decoder's
    assert bert.flops_per_token() == 6 * n + 12 * L * d * T  # weight; position and token-type tables lookups
    s2s = Seq2SeqModule(cfg("transformer", n_layer=2), OPTIM)  # the embedding is the generator's weight
    assert s2s.flops_per_token() == 6 * sum(p.numel() for p in s2s.model.parameters()) + 12 * L * d * T


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989),
    ("NVIDIA H200 NVL", 835), ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A10", 125),
    ("Tesla T4", None)])
def test_peak_flops_by_device_name(name, tflops):
    """MFU's denominator, bf16 dense: a PCIe or NVL card is not taken for its SXM namesake."""
    assert peak_for(name) == (tflops and tflops * 1e12)
    assert peak_flops(torch.device("cpu")) is None


def test_val_bpb_is_nats_over_bytes_of_all_validation_targets():
    """val/bpb = sum_t CE_t / (ln 2 * sum_t bytes(y_t)) over every batch: batches weigh by their bytes."""
    sizes = [0] + [1 + i % 3 for i in range(1, V)]  # id 0 is "special": no bytes
    module = CausalLMModule(cfg("gpt2"), OPTIM, token_bytes=sizes)
    batches = [lm_batch(B=2, seed=1), lm_batch(B=3, seed=2)]
    batches[1]["labels"] = batches[1]["labels"].clone()  # a view of the inputs
    batches[1]["labels"][0, :5] = -100
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, DataLoader(batches, batch_size=None), verbose=False)
    nats = nbytes = 0.0
    for b in batches:
        keep = b["labels"] != -100
        logits = module(b["input_ids"])
        nats += F.cross_entropy(logits[keep], b["labels"][keep], reduction="sum").item()
        nbytes += sum(sizes[i] for i in b["labels"][keep].tolist())
    assert float(trainer.callback_metrics["val/bpb"]) == pytest.approx(nats / math.log(2) / nbytes, rel=1e-5)
    with pytest.raises(ValueError, match="more than vocab_size"):
        CausalLMModule(cfg("gpt2"), OPTIM, token_bytes=sizes + [1])


def test_causal_lm_trains_on_smoothed_targets_and_validates_on_plain_cross_entropy():
    module = CausalLMModule(cfg("gpt2"), OPTIM, label_smoothing=0.1)
    batch = lm_batch()
    logits = module(batch["input_ids"]).flatten(0, 1)
    smoothed = F.cross_entropy(logits, batch["labels"].flatten(), label_smoothing=0.1)
    torch.testing.assert_close(module.training_step(batch, 0), smoothed)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, one_batch_loader(batch), verbose=False)
    plain = F.cross_entropy(logits, batch["labels"].flatten())
    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(plain.item(), rel=1e-5)


def test_grad_clip_scales_the_global_norm_to_the_limit():
    """Reference: the gradients times min(1, grad_clip / ||g||), the global norm by hand."""
    module = CausalLMModule(cfg("gpt2"), {**OPTIM, "grad_clip": 0.05})
    module.training_step(lm_batch(), 0).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    norm = torch.cat([g.flatten() for g in grads]).norm()
    assert norm > 0.05
    module.on_before_optimizer_step(module.configure_optimizers()["optimizer"])
    for p, g in zip(module.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g * 0.05 / norm)


def test_train_loss_is_the_mean_over_the_steps_micro_batches():
    module = CausalLMModule(cfg("gpt2"), OPTIM)
    b0, b1 = lm_batch(seed=1), lm_batch(seed=2)
    expected = (module.training_step(b0, 0).item() + module.training_step(b1, 1).item()) / 2  # step 0's weights
    trainer = tiny_trainer(1, accumulate=2)
    trainer.fit(module, train_dataloaders=DataLoader([b0, b1], batch_size=None))
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(expected, rel=1e-5)


def test_masked_lm_step_scores_the_chosen_positions_only():
    """mask_rate reaches the masking, padding (whatever its id) is never chosen; loss and accuracy by hand over
    the chosen."""
    module = mlm_module(mask_rate=0.5)
    batch = mlm_batch()
    batch["attention_mask"][:, 10:] = 0  # padding with ordinary ids: only the attention mask tells
    inputs, labels = mask_tokens(batch["input_ids"], mask_token_id=MASK, special_ids=module.special_ids,
                                 vocab_size=V, rate=0.5, generator=torch.Generator().manual_seed(5),
                                 attention_mask=batch["attention_mask"])
    chosen = labels != -100
    assert not chosen[:, 10:].any() and chosen.sum() > 0.3 * 4 * 9  # 9 maskable tokens a row, about half chosen
    logits = module.model(inputs, batch["attention_mask"])
    loss, acc, n = module._step(batch, torch.Generator().manual_seed(5))
    assert n == chosen.sum()
    torch.testing.assert_close(loss, F.cross_entropy(logits[chosen], labels[chosen]))
    torch.testing.assert_close(acc, (logits[chosen].argmax(-1) == labels[chosen]).float().mean())


def test_history_keeps_every_log_every_th_step_and_the_last():
    history = MetricHistory(log_every=2)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[history],
                         log_every_n_steps=2, accumulate_grad_batches=2)
    trainer.fit(CausalLMModule(cfg("gpt2"), OPTIM), train_dataloaders=DataLoader([lm_batch()] * 6, batch_size=None))
    assert [r["step"] for r in history.train] == [2, 3]  # one row per optimizer step, not per micro-batch
    assert all("train/loss" in r and "train/tokens_per_s" not in r for r in history.train)
    assert [r["step"] for r in history.speed] == [2, 3] and all("train/tokens_per_s" in r for r in history.speed)


def test_history_keeps_one_val_row_per_step_the_latest():
    """Validating again at the same step (a finished run rerun: fit's closing validation) replaces the row."""
    history = MetricHistory(log_every=1)
    for step, loss in ((4, 3.0), (7, 2.5), (7, 2.0)):
        metrics = {"val/loss": torch.tensor(loss), "train/loss": torch.tensor(9.0)}
        history.on_validation_end(SimpleNamespace(sanity_checking=False, callback_metrics=metrics, global_step=step),
                                  None)
    assert history.val == [{"step": 4, "val/loss": 3.0}, {"step": 7, "val/loss": 2.0}]
