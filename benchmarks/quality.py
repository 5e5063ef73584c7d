"""Pretraining against transformers' GPT-2: the pretrain@decoder stage (its own code, run in a scratch folder)
against a same-size `GPT2LMHeadModel` trained by a plain PyTorch loop with the same initial weights (`to_hf` of
the same seeded init), batches (`RandomWindows`, same seed), AdamW groups, warm-up + cosine schedule, gradient
clipping and steps; both evaluated on the same fixed val windows. Two independent implementations (model, loss,
Lightning's loop and a plain one) that end at the same val loss show that the training path adds and drops
nothing.

Both sides use AdamW at lr 1e-3 (min 1e-4): Muon, the default decoder's optimizer, orthogonalizes the matrices
of tinylm's blocks, which a GPT2LMHeadModel (Conv1D, transposed) does not have; and at AdamW 5e-3 two orders of
float sums drift apart by themselves (the smoke decoder, 200 steps: 0.018 apart at 5e-3, equal to 4 digits at
1e-3). Overrides after the script's own win.

Run where the data stages ran (`dvc repro tokenize`), with any Hydra overrides of the stage:

    python benchmarks/quality.py [--steps N] [overrides, e.g. experiment=smoke]

Prints both val losses and their difference (target |diff| <= 0.02).
"""

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tinylm.data.tokens import load_tokenizer, read_tokens
from tinylm.data.windows import FixedWindows, RandomWindows
from tinylm.interop.hf import to_hf
from tinylm.models import build_model
from tinylm.pipeline.config import load_config
from tinylm.pipeline.paths import RAW, TOKENIZER, TOKENIZER_DIR, TOKENS
from tinylm.pipeline.stages import pretrain
from tinylm.training.fit import set_threads
from tinylm.training.optim import build_optimizer, build_scheduler


def stage_val_loss(overrides: list[str]) -> float:
    """val loss of the pretrain@decoder stage run with `overrides` in a scratch folder that links this one's
    conf/, data/ and artifacts/ (the stage's outputs go to the scratch folder)."""
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as d:
        for part in ("conf", RAW.parts[0], TOKENIZER_DIR.parts[0]):
            (Path(d) / part).symlink_to(here / part)
        os.chdir(d)
        try:
            pretrain.main(["decoder", *overrides])
            return json.loads(Path("reports/decoder/metrics.json").read_text())["val_loss"]
        finally:
            os.chdir(here)


def hf_val_loss(overrides: list[str]) -> tuple[float, str]:
    """val loss of GPT2LMHeadModel trained in a plain loop as the stage trains (same config), and a shape note."""
    cfg = load_config(overrides)
    t = cfg.trainer_for("decoder")
    set_threads(t.num_threads)
    mcfg = cfg.decoder.model_config(load_tokenizer(TOKENIZER).vocab_size)
    pl.seed_everything(t.seed, workers=True, verbose=False)
    hf = to_hf(build_model(mcfg)).train()  # the stage's initial weights, in GPT2LMHeadModel
    train = RandomWindows(read_tokens(TOKENS, "train"), mcfg.block_size, t.batch_size, t.seed)
    val = FixedWindows(read_tokens(TOKENS, "val"), mcfg.block_size, t.batch_size, t.val_batches)
    opt = build_optimizer(hf, t.lr, t.weight_decay, t.betas)  # same groups: GPT-2 names its position table wpe too
    sched = build_scheduler(opt, t.lr, t.min_lr, t.warmup_steps, t.max_steps)
    start = time.perf_counter()
    for step in range(t.max_steps):
        b = train[step]
        logits = hf(input_ids=b["input_ids"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), label_smoothing=t.label_smoothing)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(hf.parameters(), t.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            print(f"hf step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    hf.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(hf(input_ids=b["input_ids"]).logits.flatten(0, 1), b["labels"].flatten()).item()
                  for b in val]
    shape = f"steps {t.max_steps}, {mcfg.n_layer}x{mcfg.n_embd}, block {mcfg.block_size}, batch {t.batch_size}"
    return sum(losses) / len(losses), shape


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="training steps (default: the decoder's trainer.max_steps)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the stage's config")
    a = p.parse_args()
    overrides = ["tracking=false", "++decoder.train.optimizer=adamw", "++decoder.train.lr=1e-3",
                 "++decoder.train.min_lr=1e-4", *a.overrides]
    if a.steps:
        overrides.append(f"++decoder.train.max_steps={a.steps}")
    cfg = load_config(overrides)  # a bad override fails here, before any training
    try:
        to_hf(build_model(cfg.decoder.model_config(load_tokenizer(TOKENIZER).vocab_size)))
    except ValueError as e:
        raise SystemExit(f"benchmarks/quality.py compares against GPT2LMHeadModel: {e}") from None
    ours = stage_val_loss(overrides)
    theirs, shape = hf_val_loss(overrides)
    print(f"tinylm_val_loss={ours:.4f} hf_gpt2_val_loss={theirs:.4f} diff={ours - theirs:+.4f} ({shape}; "
          f"hf ppl {math.exp(theirs):.2f})")


if __name__ == "__main__":
    main()
