"""Quality check of pretraining: the pipeline's GPT (pretrain@decoder, read from reports/decoder/metrics.json)
against a same-size transformers GPT2LMHeadModel trained by a plain PyTorch loop with identical data,
batches (RandomWindows, same seed), initial weights (to_hf of the same seeded init), AdamW groups,
warm-up + cosine schedule, gradient clipping and steps; both evaluated on the same fixed val windows.

Run after `dvc repro pretrain@decoder` (default params): python benchmarks/quality.py
Prints both val losses and their difference (target: |diff| <= 0.02).
"""

import json
import math
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
from common import REPORTS, TOKENIZER, TOKENS  # noqa: E402

from tinylm.data.tokens import load_tokenizer, read_tokens  # noqa: E402
from tinylm.data.windows import FixedWindows, RandomWindows  # noqa: E402
from tinylm.interop.hf import to_hf  # noqa: E402
from tinylm.models import build_model  # noqa: E402
from tinylm.pipeline.config import load_config  # noqa: E402
from tinylm.training.fit import set_threads  # noqa: E402
from tinylm.training.optim import build_optimizer, build_scheduler  # noqa: E402


def main() -> None:
    cfg = load_config([])
    t = cfg.trainer_for("decoder")
    set_threads(t.num_threads)
    mcfg = cfg.decoder.model_config(load_tokenizer(TOKENIZER).vocab_size)
    pl.seed_everything(t.seed, workers=True, verbose=False)
    hf = to_hf(build_model(mcfg)).train()  # the pipeline's initial weights, in GPT2LMHeadModel
    train = RandomWindows(read_tokens(TOKENS, "train"), mcfg.block_size, t.batch_size, t.seed)
    val = FixedWindows(read_tokens(TOKENS, "val"), mcfg.block_size, t.batch_size, t.val_batches)
    opt = build_optimizer(hf, t.lr, t.weight_decay, t.betas)  # same groups: GPT-2 names its position table wpe too
    sched = build_scheduler(opt, t.lr, t.min_lr, t.warmup_steps, t.max_steps)
    start = time.perf_counter()
    for step in range(t.max_steps):
        b = train[step]
        logits = hf(input_ids=b["input_ids"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten())
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(hf.parameters(), t.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    hf.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(hf(input_ids=b["input_ids"]).logits.flatten(0, 1), b["labels"].flatten()).item()
                  for b in val]
    hf_loss = sum(losses) / len(losses)
    ours = json.loads((REPORTS / "decoder" / "metrics.json").read_text())["val_loss"]
    print(f"tinylm_val_loss={ours:.4f} hf_gpt2_val_loss={hf_loss:.4f} diff={ours - hf_loss:+.4f} "
          f"(steps {t.max_steps}, {mcfg.n_layer}x{mcfg.n_embd}, block {mcfg.block_size}, batch {t.batch_size}; "
          f"hf ppl {math.exp(hf_loss):.2f})")


if __name__ == "__main__":
    main()
