"""tinylm's Triton FlashAttention-2 (attention=triton) against SDPA's flash backend on one GPU: time and memory.

    python benchmarks/attention_triton.py            # bf16, B4 H16, D 64 and 128, causal and not, T 1k, 4k, 16k
    python benchmarks/attention_triton.py --quick    # T 1k and 4k, causal only

Forward and forward + backward, each timed in a CUDA graph (triton.testing.do_bench_cudagraph, median ms,
gradients reset between calls), so that Python and launch overheads (tens of microseconds, as much as the
kernels' own time at T 1k) do not count; the first, uncaptured call compiles and autotunes. Where capture
fails the cell is timed by do_bench instead and marked "eager". Both kernels see the same inputs (seeded).
Extra peak memory: torch.cuda.max_memory_allocated() during one call minus memory_allocated() before it
(inputs excluded; output, saved tensors and gradients included). TFLOP/s count 4 B H T^2 D for the forward
(halved when causal) and 2.5 times that for the backward. Targets (issue 14): forward within 1.25x of SDPA,
forward + backward within 1.5x. Prints a markdown table; needs a CUDA GPU (about a minute on an H200, most
of it compiling).
"""

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
B, H = 4, 16
TARGET = {"fwd": 1.25, "fwd+bwd": 1.5}


def sdpa_flash(q, k, v, causal):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def measure(fn, d: int, causal: bool, t: int, mode: str) -> dict:
    """Median ms and extra peak MiB of one call of fn(q, k, v, causal) (+ backward)."""
    import triton

    backward = mode == "fwd+bwd"
    torch.manual_seed(0)  # the same inputs for both kernels: the max abs diff column compares like with like
    q, k, v, dout = (torch.randn(B, H, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    q, k, v = (x.requires_grad_(backward) for x in (q, k, v))

    def call():
        out = fn(q, k, v, causal)
        if backward:
            out.backward(dout)
        return out

    timing = "graph"
    try:
        ms = triton.testing.do_bench_cudagraph(call, rep=100, grad_to_none=[q, k, v], return_mode="median")
    except Exception:  # a kernel that cannot be captured is timed with its launches
        torch.cuda.synchronize()
        timing = "eager"
        ms = triton.testing.do_bench(call, warmup=50, rep=100, grad_to_none=[q, k, v], return_mode="median")
    q.grad = k.grad = v.grad = None
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = call()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    flops = 4 * B * H * t * t * d * (0.5 if causal else 1.0) * (3.5 if backward else 1.0)
    return {"ms": ms, "timing": timing, "extra_mib": extra, "tflops": flops / ms / 1e9, "out": out.detach()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="T 1k and 4k, causal only")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention_triton.py needs a CUDA GPU (the Triton kernels are compiled for it)")
    try:
        import triton

        from tinylm.nn.triton_attention import triton_attention
    except ImportError as e:
        sys.exit(f"benchmarks/attention_triton.py needs triton (pip install -e '.[dev]'): {e}")

    def tri(q, k, v, causal):
        return triton_attention(q, k, v, causal=causal)

    seqs, causals = ([1024, 4096], [True]) if a.quick else ([1024, 4096, 16384], [False, True])
    print(f"# attention=triton vs SDPA flash: B{B} H{H} bf16, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}, triton {triton.__version__}\n", flush=True)
    print("| D | causal | T | mode | triton (ms) | SDPA flash (ms) | ratio | target | triton TFLOP/s "
          "| triton extra MiB | SDPA extra MiB | max abs diff | timing |")
    print("| ---: | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |", flush=True)
    rows = []
    for d in (64, 128):
        for causal in causals:
            for t in seqs:
                for mode in ("fwd", "fwd+bwd"):  # each row printed as it is measured: a stopped run keeps it
                    r = {"D": d, "causal": causal, "T": t, "mode": mode}
                    head = f"| {d} | {causal} | {t} | {mode} "
                    try:
                        ours, ref = measure(tri, d, causal, t, mode), measure(sdpa_flash, d, causal, t, mode)
                    except Exception as e:  # a failed cell is reported, the others still run
                        r["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
                        print(head + f"| {r['error']} | | | | | | | | |", flush=True)
                        rows.append(r)
                        continue
                    r.update(triton=ours, sdpa=ref, ratio=ours["ms"] / ref["ms"],
                             diff=(ours.pop("out").float() - ref.pop("out").float()).abs().max().item())
                    rows.append(r)
                    goal = TARGET[mode]
                    print(head + f"| {ours['ms']:.3f} | {ref['ms']:.3f} | {r['ratio']:.2f}x "
                          f"| {'ok' if r['ratio'] <= goal else 'over'} (<= {goal}x) | {ours['tflops']:.0f} "
                          f"| {ours['extra_mib']:.0f} | {ref['extra_mib']:.0f} | {r['diff']:.1e} "
                          f"| {ours['timing']}/{ref['timing']} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
