"""Compile tinylm's Triton attention kernels for an NVIDIA GPU on a machine without one: every autotuner config
of every kernel, through Triton's real compiler (not the interpreter) down to a cubin for sm_<arch>, with the
shared memory, registers and spills each needs. It catches what the interpreter cannot: a tl.dot shape or
dtype the GPU rejects, shared memory over the limit, register spills.

    python benchmarks/triton_compile.py                                    # sm_90 (H100, H200): every variant
    python benchmarks/triton_compile.py --dtypes bfloat16 --dims 128 --masks full   # the largest tiles only

A stand-in driver tells Triton the target is CUDA sm_<arch>; the real host wrappers (`_attention_fwd`,
`_attention_bwd`) build every kernel's arguments, and each launch is replaced by `JITFunction.warmup` (compile,
no launch) once per config the autotuner would try (`tiles`). Registers and spills come from `ptxas -v` on the
PTX, with the ptxas that Triton ships. Exit status 1 if a kernel fails to compile or no config of a kernel fits
shared memory (the autotuner skips a config that does not fit, at its first launch). Run without TRITON_INTERPRET set.
"""

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes of shared memory per block, opt-in max


def stand_in_driver(arch: int) -> None:
    """Make Triton compile for CUDA sm_<arch> with no GPU (and no CUDA driver) present."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    class Driver:
        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

        def is_active(self):
            return True

    driver.set_active(Driver())


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    """(registers per thread, bytes of spill stores) that ptxas reports for the PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        out = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    return regs, sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", text))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100, H200)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"], choices=["bfloat16", "float16", "float32"])
    p.add_argument("--dims", nargs="+", type=int, default=[64, 128])
    p.add_argument("--masks", nargs="+", default=["none", "key", "full"], choices=["none", "key", "full"])
    a = p.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: this compiles the kernels, the interpreter runs them")
    stand_in_driver(a.arch)
    from tinylm.nn import triton_attention as ta

    limit = SHARED_LIMIT.get(a.arch, SHARED_LIMIT[90])
    rows, failed, fits = [], 0, {}

    def compile_all(name, kernel, configs, args, kw, variant):
        nonlocal failed
        for bm, bn, warps, stages in configs:
            tiles = dict(BLOCK_M=bm, BLOCK_N=bn) if bm else {}
            label = f"{name} {bm}x{bn} w{warps} s{stages}" if bm else name
            try:
                compiled = kernel.warmup(*args, grid=(1,), **kw, **tiles, num_warps=warps, num_stages=stages)
                shared = compiled.metadata.shared
                regs, spill = ptxas_usage(compiled.asm["ptx"], a.arch)
            except Exception as e:  # a compile error is this script's finding, reported with the rest
                failed += 1
                rows.append(f"| {variant} | {label} | FAILED: {type(e).__name__}: {str(e).splitlines()[-1][:80]} |")
                continue
            fits.setdefault((variant, name), False)
            fits[(variant, name)] |= shared <= limit
            over = " (over: skipped by the autotuner)" if shared > limit else ""
            rows.append(f"| {variant} | {label} | {shared:,}{over} | {regs} | {spill} |")

    kernels = {"fwd": ta._fwd_kernel, "dq": ta._dq_kernel, "dkdv": ta._dkdv_kernel}
    variant = ""

    def launch(name, _rows, _bh, *args, **kw):  # what _launch would autotune over
        compile_all(name, kernels[name], ta.tiles(name, args[0].dtype), args, kw, variant)

    class Delta:  # _delta_kernel[grid](...): one fixed config
        def __getitem__(self, _grid):
            return lambda *args, **kw: compile_all("delta", delta, [(0, 0, 4, 3)], args, kw, variant)

    delta, ta._launch, ta._delta_kernel = ta._delta_kernel, launch, Delta()
    B, H, T = 1, 2, 256
    for dtype, dim, causal, mask in itertools.product(a.dtypes, a.dims, (False, True), a.masks):
        variant = f"{dtype} D{dim} {'causal' if causal else 'full'} mask={mask}"
        dt = getattr(torch, dtype)
        q, k, v = (torch.randn(B, H, T, dim, dtype=dt) for _ in range(3))
        m = {"none": None, "key": torch.ones(B, 1, 1, T, dtype=torch.bool),
             "full": torch.ones(B, H, T, T, dtype=torch.bool)}[mask]
        align = "bottom_right" if causal else None
        out, lse = ta._attention_fwd(q, k, v, m, align)
        ta._attention_bwd(torch.randn_like(out), q, k, v, out, lse, m, align)

    import triton

    print(f"Triton {triton.__version__}, sm_{a.arch}, shared memory limit {limit:,} bytes per block\n")
    print("| variant | kernel, tile, warps, stages | shared bytes | registers | spill bytes |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    none_fit = [f"{v}: {n}" for (v, n), ok in fits.items() if not ok]
    print(f"\n{len(rows)} compiles, {failed} failed; kernels with no config that fits: {none_fit or 'none'}")
    return 1 if failed or none_fit else 0


if __name__ == "__main__":
    sys.exit(main())
