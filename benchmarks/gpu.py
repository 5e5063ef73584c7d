"""GPU training throughput at GPT-2 124M shapes (12 x 768, 12 heads, block 1024, vocab 50304): tokens/s and
MFU of tinylm's GPT against transformers' GPT2LMHeadModel (the named peer, same weights via to_hf), bf16
autocast, SDPA attention, torch.compile off and on; then the attention kernels (naive, tiled flash, SDPA) at
T = 1k..16k through benchmarks/attention.py.

    python benchmarks/gpu.py [--batch 8] [--steps 20] [--no-attention]

Needs a CUDA GPU (a few minutes on an H100/H200); prints a markdown table with the device name.
MFU = tokens/s * (6 N + 12 L T d) / peak bf16 FLOP/s (tinylm.training.base.PEAK_BF16_FLOPS).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.interop.hf import to_hf
from tinylm.models import build_model, presets
from tinylm.training.base import PEAK_BF16_FLOPS
from tinylm.training.optim import build_optimizer


def tokens_per_s(model, call, batch: int, block: int, vocab: int, steps: int) -> float:
    opt = build_optimizer(model, 6e-4, 0.1)
    x = torch.randint(0, vocab, (batch, block + 1), device="cuda")
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = call(model, x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps * batch * block / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-attention", action="store_true")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    cfg = presets("gpt2", vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    flops = 6 * (sum(p.numel() for p in build_model(cfg).parameters()) - 1024 * 768) + 12 * 12 * 1024 * 768
    print(f"device: {name}; GPT-2 124M shapes, batch {a.batch} x 1024, bf16 autocast\n")
    print("| model | compile | tokens/s | MFU |\n|---|---|---:|---:|")
    for label, make, call in (
        ("tinylm GPT", lambda: build_model(cfg), lambda m, x: m(x)),
        ("HF GPT2LMHeadModel", lambda: to_hf(build_model(cfg)).train(), lambda m, x: m(input_ids=x).logits),
    ):
        for compiled in (False, True):
            torch.manual_seed(0)
            model = make().cuda()
            if compiled:
                model.compile()
            tps = tokens_per_s(model, call, a.batch, 1024, 50304, a.steps)
            mfu = f"{tps * flops / peak:.1%}" if peak else "n/a"
            print(f"| {label} | {compiled} | {tps:,.0f} | {mfu} |", flush=True)
            del model
            torch.cuda.empty_cache()
    if not a.no_attention:
        script = Path(__file__).with_name("attention.py")
        subprocess.run([sys.executable, str(script), "--device", "cuda", "--causal",
                        "--seqs", "1024", "2048", "4096", "8192", "16384"], check=True)


if __name__ == "__main__":
    main()
