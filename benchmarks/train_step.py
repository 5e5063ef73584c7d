"""Training throughput, CPU fp32, same model size, batch and data, one run:

  1. tinylm GPT in a plain PyTorch loop (forward, loss, backward, clipping, AdamW, schedule)
  2. transformers GPT2LMHeadModel with the same shapes in the same plain loop (the named peer)
  3. tinylm's CausalLMModule under Lightning (tinylm.training.fit), to measure Lightning's overhead

Prints tokens/s and the ratios tinylm/HF (target >= 1.2) and Lightning/raw (target >= 0.95).
Run: python benchmarks/train_step.py [--steps 30] [--threads 2] [--rounds 3]
"""

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tinylm.data.windows import FixedWindows, RandomWindows
from tinylm.interop.hf import to_hf
from tinylm.models import build_model, presets
from tinylm.training.causal_lm import CausalLMModule
from tinylm.training.datamodules import StepDataModule
from tinylm.training.fit import fit
from tinylm.training.losses import label_smoothed_cross_entropy
from tinylm.training.optim import build_optimizer, build_scheduler


def batches(tokens, block, batch, n):
    ds = RandomWindows(tokens, block, batch, seed=0)
    return [ds[i] for i in range(n)]


def raw_loop(model, data, call) -> float:
    """The work of one Lightning step, by hand: forward, loss, backward, clip, AdamW, schedule."""
    opt = build_optimizer(model, 3e-4, 0.1)
    sched = build_scheduler(opt, 3e-4, 3e-5, 1, len(data))
    model.train()
    for i, b in enumerate(data):
        if i == 3:  # after warm-up
            t = time.perf_counter()
        call(model, b).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (len(data) - 3) * data[0]["input_ids"].numel() / (time.perf_counter() - t)


def ours(model, b):  # as CausalLMModule.training_step: the output layer fused with the loss
    return model(b["input_ids"], targets=b["labels"])


def hf(model, b):
    return label_smoothed_cross_entropy(model(input_ids=b["input_ids"]).logits, b["labels"], 0.0)


def lightning_loop(cfg, tokens, steps, block, batch) -> float:
    optim = dict(lr=3e-4, min_lr=3e-5, weight_decay=0.1, warmup_steps=1, max_steps=steps, grad_clip=1.0)
    module = CausalLMModule(cfg.to_dict(), optim)
    dm = StepDataModule(RandomWindows(tokens, block, batch, 0), FixedWindows(tokens, block, batch, 1),
                        batch_size=None, seed=0, max_steps=steps)
    t = SimpleNamespace(max_steps=steps, val_every=10**9, val_batches=1, log_every=10, ckpt_every=10**9,
                        precision="32-true", accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                        accumulate_grad_batches=1, compile=False)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        trainer, history = fit(module, dm, t, Path(d), fingerprint="bench", say=lambda *_: None)
        total = time.perf_counter() - start
    tps = [r["train/tokens_per_s"] for r in history.speed if "train/tokens_per_s" in r]
    return float(np.median(tps)), steps * block * batch / total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)  # the default pipeline decoder
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, a.vocab, 200_000).astype(np.uint16)
    cfg = presets("gpt2", vocab_size=a.vocab, block_size=a.block, n_layer=a.n_layer, n_head=4, n_embd=a.n_embd)
    data = batches(tokens, a.block, a.batch, a.steps + 3)
    # rounds interleave the three loops so that load drift on a shared box hits them alike; best of rounds
    runs = {"ours": [], "hf": [], "pl": []}
    for _ in range(a.rounds):
        runs["ours"].append(raw_loop(build_model(cfg), data, ours))
        runs["hf"].append(raw_loop(to_hf(build_model(cfg)).train(), data, hf))
        runs["pl"].append(lightning_loop(cfg, tokens, a.steps, a.block, a.batch))
    ours_tps, hf_tps = max(runs["ours"]), max(runs["hf"])
    pl_step_tps, pl_wall_tps = max(r[0] for r in runs["pl"]), max(r[1] for r in runs["pl"])
    print(f"| loop | tokens/s |\n|---|---|\n| tinylm GPT, raw loop | {ours_tps:,.0f} |\n"
          f"| HF GPT2LMHeadModel, raw loop | {hf_tps:,.0f} |\n"
          f"| tinylm under Lightning (per step) | {pl_step_tps:,.0f} |\n"
          f"| tinylm under Lightning (wall, incl. setup) | {pl_wall_tps:,.0f} |")
    print(f"tinylm_vs_hf={ours_tps / hf_tps:.2f}x lightning_vs_raw={pl_step_tps / ours_tps:.3f} "
          f"(shape: {a.n_layer}x{a.n_embd}, block {a.block}, batch {a.batch}, vocab {a.vocab}, threads {a.threads})")


if __name__ == "__main__":
    main()
