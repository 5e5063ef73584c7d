"""Decoding throughput: tinylm's greedy_decode / beam_search against transformers' generate, same model.

The model (gpt2 preset, random weights) is exported with `to_hf`; both decoders get the same left-padded
prompts (no EOS: every run makes --new-tokens tokens), their outputs are asserted identical, and each
timing is the best of --repeats runs after a warm-up, ours and theirs interleaved so that both see the same
machine load. Throughput = batch x new tokens / seconds (returned sequences for beam search), in CPU seconds
of this process by default (--clock cpu: robust on a shared machine; with several threads it sums them) or
in wall seconds (--clock wall).

    OMP_NUM_THREADS=1 python benchmarks/generate.py [--threads 1] [--n-head 4] [--batches 1 8] [--clock wall]
"""

import argparse
import time

import torch
from transformers.utils import logging as hf_logging

from tinylm.decoding import beam_search, greedy_decode
from tinylm.interop.hf import to_hf
from tinylm.models import build_model, presets


def best_times(fns, repeats: int, clock) -> tuple[list[float], list]:
    """Best time of each fn over `repeats` interleaved rounds, and each fn's output."""
    outs = [fn() for fn in fns]  # warm-up
    times = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            outs[i] = fn()
            times[i] = min(times[i], clock() - start)
    return times, outs


def left_padded_prompts(batch: int, length: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of length//2 ... length tokens (the first the longest), left-padded: (ids, mask)."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, vocab_size, (batch, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    lengths[0] = length
    return ids, (torch.arange(length) >= length - lengths[:, None]).long()


def compare(model, hf, ids, mask, new_tokens: int, beams: int, repeats: int, clock) -> None:
    """Print one table row per decoder: tokens/s of tinylm and transformers, and their ratio."""
    runs = {
        "greedy": (lambda: greedy_decode(model, ids, new_tokens, attention_mask=mask),
                   lambda: hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                       pad_token_id=0)),
        f"beam K={beams}": (lambda: beam_search(model, ids, beams, new_tokens, attention_mask=mask)[0],
                            lambda: hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                                num_beams=beams, do_sample=False, pad_token_id=0)),
    }
    batch = ids.size(0)
    for name, (ours, theirs) in runs.items():
        with torch.inference_mode():
            (t_ours, t_hf), (out_ours, out_hf) = best_times([ours, theirs], repeats, clock)
        assert torch.equal(out_ours, out_hf), f"{name}, batch {batch}: outputs differ from transformers"
        tokens = batch * new_tokens
        print(f"{name:<10}{batch:>6}{tokens / t_ours:>14.0f}{tokens / t_hf:>11.0f}{t_hf / t_ours:>7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)  # the default pipeline decoder: 4 x 128, 4 heads, vocab 4096
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = presets("gpt2", n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                  vocab_size=args.vocab_size, block_size=args.block_size)
    model = build_model(cfg).eval()
    hf = to_hf(model)
    print(f"gpt2 preset: {args.n_layer} layers, n_embd {args.n_embd}, {args.n_head} heads, vocab {args.vocab_size}, "
          f"block {args.block_size}; prompts <= {args.prompt_len} tokens (left-padded), {args.new_tokens} new "
          f"tokens, {torch.get_num_threads()} thread(s), {args.clock} time, torch {torch.__version__}")
    print(f"{'decoder':<10}{'batch':>6}{'tinylm tok/s':>14}{'HF tok/s':>11}{'ratio':>8}")
    for batch in args.batches:
        ids, mask = left_padded_prompts(batch, args.prompt_len, args.vocab_size)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        compare(model, hf, ids, mask, args.new_tokens, args.beams, args.repeats, clock)


if __name__ == "__main__":
    main()
