"""Time and extra peak memory of naive vs tiled flash vs SDPA attention, forward and forward+backward.

    python benchmarks/attention.py                      # CPU, 1 thread, fp32, B1 H8 D64, T 512..4096
    python benchmarks/attention.py --causal             # the same with a causal mask
    python benchmarks/attention.py --device cuda        # GPU, bf16, T 512..16384

Every (mode, T, implementation) cell runs in a fresh subprocess, so one cell's allocations cannot hide
another's peak. Extra peak memory is measured over the first call after a small warm-up:
- CPU: resident set size, VmHWM after resetting it (write 5 to /proc/self/clear_refs) minus VmRSS before;
  if the reset is not allowed, ru_maxrss minus VmRSS before (an upper bound).
- CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before (tensor memory only).
Time is the median of the following calls (at least one; more while the cell's time budget lasts).
SDPA is the named peer: the ratio columns divide by its numbers at the same T and mode.
"""

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
IMPLS = ["naive", "flash64", "flash128", "sdpa"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ---------------------------------------------------------------------------------------------- worker


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(a) -> dict:
    """One cell: measure the extra peak memory of the first call, then time the next ones."""
    import torch

    sys.path.insert(0, str(SRC))
    from tinylm.nn.attention import flash_attention, naive_attention, sdpa_attention

    torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), getattr(torch, DTYPES[a.dtype])
    cuda = device.type == "cuda"
    fn = {
        "naive": naive_attention,
        "sdpa": sdpa_attention,
        "flash64": partial(flash_attention, block_size=64),
        "flash128": partial(flash_attention, block_size=128),
    }.get(a.impl) or partial(flash_attention, block_size=int(a.impl.removeprefix("flash")))
    backward = a.mode == "fwd+bwd"

    def make(t):
        x = [torch.randn(a.batch, a.heads, t, a.dim, device=device, dtype=dtype) for _ in range(4)]
        q, k, v, dout = [t_.requires_grad_(backward and i < 3) for i, t_ in enumerate(x)]

        def call():
            out = fn(q, k, v, causal=a.causal)
            if backward:
                out.backward(dout)
                q.grad = k.grad = v.grad = None
            return out

        return call

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    make(256)()  # warm-up: lazy initialisation (kernels, thread pools, allocator) belongs to the baseline
    sync()
    call = make(a.seq)
    gc.collect()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _status_kib("VmRSS") * 1024
        exact = _reset_peak_rss()
    t0 = time.perf_counter()
    out = call()
    sync()
    first = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak_kib = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak_kib * 1024
    del out
    times, spent = [], first
    while len(times) < a.repeats and (not times or spent < a.budget):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return {"time_s": statistics.median(times), "extra_mib": (peak - base) / 2**20, "runs": len(times)}


# ---------------------------------------------------------------------------------------------- driver


def run_cell(a, impl: str, seq: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--seq", str(seq), "--mode", mode,
           "--device", a.device, "--dtype", a.dtype, "--batch", str(a.batch), "--heads", str(a.heads),
           "--dim", str(a.dim), "--threads", str(a.threads), "--repeats", str(a.repeats),
           "--budget", str(a.budget)] + (["--causal"] if a.causal else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if res.returncode != 0:
        err = res.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"error": "OOM" if "out of memory" in res.stderr.lower() else err[0][:60]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def fmt_ratio(x, y) -> str:
    return f"{x / y:.2f}x" if y and y > 0 else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--seqs", type=int, nargs="+", help="default: 512..4096 on CPU, 512..16384 on CUDA")
    p.add_argument("--impls", nargs="+", default=IMPLS, help="naive, sdpa, flash<block> (e.g. flash256)")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per cell (after the memory call)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds per cell, then no more repeats")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per cell subprocess")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    a.dtype = a.dtype or ("bf16" if cuda else "fp32")
    if a.worker:
        print(json.dumps(worker(a)))
        return
    seqs = a.seqs or ([512, 1024, 2048, 4096, 8192, 16384] if cuda else [512, 1024, 2048, 4096])
    if "sdpa" not in a.impls:
        a.impls.append("sdpa")

    import torch

    if cuda:
        where = torch.cuda.get_device_name(a.device)
    else:
        cpu = platform.processor() or platform.machine()
        where = f"{cpu}, {a.threads} thread(s), load average {os.getloadavg()[0]:.1f}"
    print(f"# attention: B{a.batch} H{a.heads} D{a.dim} {a.dtype}, causal={a.causal}, "
          f"torch {torch.__version__}, {a.device} ({where})\n", flush=True)
    results = []
    for mode in a.modes:
        for seq in seqs:
            for impl in a.impls:
                r = run_cell(a, impl, seq, mode)
                results.append({"mode": mode, "T": seq, "impl": impl, **r})
                print(f"  {mode:8s} T={seq:<6d} {impl:9s} {r}", file=sys.stderr, flush=True)

    print("| mode | T | impl | time (ms) | extra peak mem (MiB) | time vs SDPA | mem vs SDPA |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        ref = next(x for x in results if x["mode"] == r["mode"] and x["T"] == r["T"] and x["impl"] == "sdpa")
        if "error" in r:
            print(f"| {r['mode']} | {r['T']} | {r['impl']} | {r['error']} | | | |")
            continue
        t_ratio = fmt_ratio(r["time_s"], ref.get("time_s"))
        m_ratio = fmt_ratio(r["extra_mib"], ref.get("extra_mib"))
        print(f"| {r['mode']} | {r['T']} | {r['impl']} | {1e3 * r['time_s']:.1f} | {r['extra_mib']:.1f} "
              f"| {t_ratio} | {m_ratio} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
