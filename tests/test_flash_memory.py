"""Peak memory of flash_attention vs naive_attention, measured as process RSS in a fresh interpreter.

Each measurement runs in its own subprocess (one thread): build the inputs, warm up on a small problem,
note the resident set size, reset the kernel's peak counter (Linux: write 5 to /proc/self/clear_refs),
run, and read the peak (VmHWM). The difference is the extra memory the attention call needed. Naive
attention holds (Tq, Tk) matrices (256 MiB each at T = 8192 in fp32); flash holds tiles and O(T) vectors.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)"),
]

SRC = str(Path(__file__).resolve().parents[1] / "src")

WORKER = r"""
import gc, json, resource, sys
import torch
torch.set_num_threads(1)
from tinylm.nn.attention import flash_attention, naive_attention

impl, t, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backward, causal = sys.argv[4] == "1", {"0": False, "1": True, "br": "bottom_right"}[sys.argv[5]]
fn = {"naive": naive_attention, "flash": flash_attention}[impl]

def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

def run(t):
    q, k, v = (torch.randn(1, h, t, 64, requires_grad=backward) for _ in range(3))
    def go():
        out = fn(q, k, v, causal=causal)
        if backward:
            out.backward(torch.ones_like(out))
        return out
    return go

run(256)()  # warm-up: lazy initialisation belongs to the baseline
go = run(t)
gc.collect()
base = status_kib("VmRSS")
exact = reset_peak()
out = go()
peak = status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mib": (peak - base) / 1024, "exact": exact}))
"""


def extra_mib(impl, t, h=1, backward=False, causal="0"):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", WORKER, impl, str(t), str(h), "1" if backward else "0", causal]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])["extra_mib"]


def test_forward_memory_t8192():
    naive = extra_mib("naive", 8192)
    flash = extra_mib("flash", 8192)
    print(f"forward T=8192 H=1 D=64 fp32: naive +{naive:.1f} MiB, flash +{flash:.1f} MiB")
    assert naive > 256  # at least one 8192 x 8192 fp32 matrix: the measurement sees it
    assert flash < naive / 8
    assert flash < 64  # O(T): q/k/v-sized buffers and 64 x 64 tiles, nowhere near one 256 MiB matrix


def test_forward_backward_memory_t4096():
    naive = extra_mib("naive", 4096, backward=True)
    flash = extra_mib("flash", 4096, backward=True)
    print(f"fwd+bwd T=4096 H=1 D=64 fp32: naive +{naive:.1f} MiB, flash +{flash:.1f} MiB")
    assert naive > 64  # the saved (T, T) probabilities alone are 64 MiB
    assert flash < naive / 8
    assert flash < 32
