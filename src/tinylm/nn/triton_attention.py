"""FlashAttention-2 in Triton: the algorithm of `flash.py`, as fused GPU kernels (forward and backward).

For one query row i (scale c = 1/sqrt(D), key j visible or not by the masks):

    s_ij = c q_i . k_j,   P_ij = exp(s_ij - LSE_i),   LSE_i = log sum_{j visible} exp(s_ij),   o_i = sum_j P_ij v_j

Forward: one program per (query tile of BLOCK_M rows, batch x head). The tile Q_i stays in registers; key
and value tiles of BLOCK_N rows stream past it, and the online softmax (running max m, running sum l,
unnormalised output A, all fp32) is updated per key tile exactly as in `flash.py`:

    S = c Q_i K_j^T,  m' = max(m, rowmax S),  P = exp(S - m'),  l = e^(m - m') l + rowsum P,  A = e^(m - m') A + P V_j

At the end O_i = A / l and LSE_i = m + log l are written: O is the only (T, D) output, LSE one number per row.
Exponentials are base 2 (exp2 is the GPU's native one): scores are multiplied by c log2(e) once.

Backward: recompute P from the saved LSE, tile by tile; nothing of size (Tq, Tk) is ever stored.

    D_i  = dO_i . O_i                                   (a preprocess kernel, one number per row)
    dV_j = sum_i P_ij dO_i,   dP_ij = dO_i . v_j,   dS_ij = P_ij (dP_ij - D_i)
    dK_j = c sum_i dS_ij q_i                            (one program per key tile: loops over query tiles)
    dQ_i = c sum_j dS_ij k_j                            (one program per query tile: loops over key tiles)

Two kernels for the gradients, so that every program owns the rows it writes (no atomics). With grouped-query
attention (H query heads, Hkv key/value heads) query head h reads key/value head h // (H / Hkv), and a dK/dV
program loops over its group's query heads, summing their contributions.

Masks: causal from index arithmetic (key j visible to query i iff j <= i + offset; offset 0 top-left, Tk - Tq
bottom-right); key tiles that causality hides from a whole query tile are not visited, and only tiles that
straddle the diagonal (or the end of the keys) pay for a mask. A boolean mask (True = attend) broadcastable to
(B, H, Tq, Tk) is read through strides (stride 0 on broadcast dims): a key-padding mask (B, 1, 1, Tk) as one
vector per key tile, any other shape as a tile. A row with no visible key gets O = 0 and LSE = +inf, so that
the backward's P = exp(S - LSE) is 0 there and its gradients are zeros.

Inputs fp16 / bf16 / fp32 (fp32 dot products in IEEE fp32, not tf32); scores, softmax statistics and
accumulators are fp32; outputs in the input dtype. Head dim 16, 32, 64 or 128. The ops are registered with
`torch.library` (fake shapes + autograd), so `torch.compile` graphs keep them as single nodes.

Importing this module imports Triton. With TRITON_INTERPRET=1 (set before the import) the same kernels run in
Triton's CPU interpreter, on CPU tensors, with small fixed tiles; on a GPU the tile sizes are autotuned.
"""

import contextlib
import math

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from tinylm.nn.flash import _broadcast_mask, _resolve_causal

__all__ = ["triton_attention"]

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e); a constexpr, so that the kernels may read it
HEAD_DIMS = (16, 32, 64, 128)
NO_MASK, KEY_MASK, FULL_MASK = 0, 1, 2
LENGTHS = ["Tq", "Tk", "offset", "TUNE_TQ", "TUNE_TK"]  # not specialised on (% 16, == 1): one compiled kernel
# for any lengths; TUNE_TQ, TUNE_TK (the lengths rounded up to a power of 2) are the autotuner's key, unused in
# the kernels: tiles are tuned once per bucket, not at every new length (a KV-cache decode step has one)


# ---------------------------------------------------------------------------------------------- kernels


@triton.jit
def _hide(s, qi, kj, M, smq, smk, Tq, Tk, offset,
          EDGE: tl.constexpr, CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr):
    """s with -inf where key kj is hidden from query qi (qi, kj index tensors broadcastable to s).

    EDGE tiles may run past Tk or straddle the causal diagonal; other tiles lie wholly inside both."""
    if EDGE:
        vis = kj < Tk
        if CAUSAL:
            vis = vis & (kj <= qi + offset)
        s = tl.where(vis, s, float("-inf"))
    if MASK_KIND == 1:  # one mask value per key, shared by every query row
        s = tl.where(tl.load(M + kj * smk, mask=kj < Tk, other=0) != 0, s, float("-inf"))
    if MASK_KIND == 2:
        at = qi.to(tl.int64) * smq + kj * smk  # a (Tq, Tk) mask may hold 2^31 elements or more
        s = tl.where(tl.load(M + at, mask=(qi < Tq) & (kj < Tk), other=0) != 0, s, float("-inf"))
    return s


@triton.jit
def _kv_tile(K, V, cols, dims, skt, svt, Tk, EDGE: tl.constexpr):
    """The key and value rows `cols` of one head; past Tk (only in an EDGE tile) zeros."""
    if EDGE:
        k = tl.load(K + cols[:, None] * skt + dims[None, :], mask=cols[:, None] < Tk, other=0.0)
        v = tl.load(V + cols[:, None] * svt + dims[None, :], mask=cols[:, None] < Tk, other=0.0)
    else:
        k = tl.load(K + cols[:, None] * skt + dims[None, :])
        v = tl.load(V + cols[:, None] * svt + dims[None, :])
    return k, v


@triton.jit
def _fwd_tiles(acc, l, m, q, K, V, M, skt, svt, smq, smk, rows, lo, hi, Tq, Tk, offset, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, EDGE: tl.constexpr, CAUSAL: tl.constexpr,
               MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Online softmax over the key tiles starting at lo, lo + BLOCK_N, ... < hi (scores in log2 units)."""
    dims = tl.arange(0, HEAD_DIM)
    for k0 in range(lo, hi, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        k, v = _kv_tile(K, V, cols, dims, skt, svt, Tk, EDGE)  # (BLOCK_N, HEAD_DIM) each
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        s = _hide(s, rows[:, None], cols[None, :], M, smq, smk, Tq, Tk, offset, EDGE, CAUSAL, MASK_KIND)
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet: exp2(-inf - 0) = 0, not NaN
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m - m_safe)  # e^(m - m'), 0 while m = -inf
        l = l * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m = m_new
    return acc, l, m


@triton.jit
def _key_range(i0, Tk, offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """For the query tile at i0: keys [0, mid) in whole tiles visible to all its rows, [mid, hi) the rest."""
    if CAUSAL:
        hi = tl.minimum(tl.maximum(i0 + BLOCK_M + offset, 0), Tk)  # no row sees key i0 + BLOCK_M + offset
        mid = tl.minimum(tl.maximum(i0 + offset + 1, 0), Tk) // BLOCK_N * BLOCK_N  # row i0 sees keys <= i0 + offset
    else:
        hi = Tk
        mid = Tk // BLOCK_N * BLOCK_N
    return mid, hi


@triton.jit(do_not_specialize=LENGTHS)
def _fwd_kernel(Q, K, V, M, O, LSE,
                sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, smb, smh, smq, smk, sob, soh, sot,
                H, GROUP, Tq, Tk, offset, qk_scale, TUNE_TQ, TUNE_TK,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    i0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # last query tiles (most keys if causal) first
    bh = tl.program_id(1).to(tl.int64)  # offsets from it in int64: a tensor may hold 2^31 elements or more
    b, h = bh // H, bh % H
    hk = h // GROUP  # the key/value head of query head h
    rows = i0 + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :], mask=rows[:, None] < Tq, other=0.0)
    K += b * skb + hk * skh
    V += b * svb + hk * svh
    M += b * smb + h * smh
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    mid, hi = _key_range(i0, Tk, offset, BLOCK_M, BLOCK_N, CAUSAL)
    acc, l, m = _fwd_tiles(acc, l, m, q, K, V, M, skt, svt, smq, smk, rows, 0, mid, Tq, Tk, offset, qk_scale,
                           HEAD_DIM, BLOCK_N, False, CAUSAL, MASK_KIND, PRECISION)
    acc, l, m = _fwd_tiles(acc, l, m, q, K, V, M, skt, svt, smq, smk, rows, mid, hi, Tq, Tk, offset, qk_scale,
                           HEAD_DIM, BLOCK_N, True, CAUSAL, MASK_KIND, PRECISION)
    empty = l == 0.0  # no visible key: O = 0, LSE = +inf
    l = tl.where(empty, 1.0, l)
    lse = tl.where(empty, float("inf"), (m + tl.math.log2(l)) / LOG2E)  # natural log
    tl.store(O + b * sob + h * soh + rows[:, None] * sot + dims[None, :], (acc / l[:, None]).to(O.dtype.element_ty),
             mask=rows[:, None] < Tq)
    tl.store(LSE + bh * Tq + rows, lse, mask=rows < Tq)


@triton.jit
def _delta_kernel(O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, H, Tq,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """D_i = dO_i . O_i, fp32, (B, H, Tq)."""
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < Tq
    o = tl.load(O + b * sob + h * soh + rows[:, None] * sot + dims[None, :], mask=inside, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + dims[None, :], mask=inside, other=0.0)
    tl.store(DELTA + bh * Tq + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < Tq)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, Q, DO, LSE, DELTA, M, sqt, sdt, smq, smk, cols, lo, hi, Tq, Tk, offset, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, EDGE: tl.constexpr, CAUSAL: tl.constexpr,
                MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Add the query tiles lo, lo + BLOCK_M, ... < hi of one head to dK, dV (transposed tiles: keys x queries)."""
    dims = tl.arange(0, HEAD_DIM)
    for i0 in range(lo, hi, BLOCK_M):
        rows = i0 + tl.arange(0, BLOCK_M)
        inside = rows < Tq
        q = tl.load(Q + rows[:, None] * sqt + dims[None, :], mask=inside[:, None], other=0.0)
        do = tl.load(DO + rows[:, None] * sdt + dims[None, :], mask=inside[:, None], other=0.0)
        lse = tl.load(LSE + rows, mask=inside, other=float("inf")) * LOG2E  # rows past Tq: P = 0
        delta = tl.load(DELTA + rows, mask=inside, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # S^T, (BLOCK_N, BLOCK_M)
        st = _hide(st, rows[None, :], cols[:, None], M, smq, smk, Tq, Tk, offset, EDGE, CAUSAL, MASK_KIND)
        pt = tl.math.exp2(st - lse[None, :])  # P^T
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # dP^T = V dO^T
        dst = pt * (dpt - delta[None, :])  # dS^T
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=LENGTHS)
def _dkdv_kernel(Q, K, V, M, DO, LSE, DELTA, DK, DV,
                 sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, smb, smh, smq, smk, sdb, sdh, sdt,
                 H, GROUP, Tq, Tk, offset, qk_scale, sm_scale, TUNE_TQ, TUNE_TK,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                 MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """One program per (key tile, batch x kv head): dK, dV of its keys, summed over the group's query heads."""
    j0 = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1).to(tl.int64)
    hkv = H // GROUP
    b, hk = bhk // hkv, bhk % hkv
    cols = j0 + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    inside = cols[:, None] < Tk
    k = tl.load(K + b * skb + hk * skh + cols[:, None] * skt + dims[None, :], mask=inside, other=0.0)
    v = tl.load(V + b * svb + hk * svh + cols[:, None] * svt + dims[None, :], mask=inside, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:  # queries before j0 - offset see none of these keys; from j0 + BLOCK_N - 1 - offset on, all of them
        lo = tl.maximum(j0 - offset, 0) // BLOCK_M * BLOCK_M
        mid = tl.minimum(tl.cdiv(tl.maximum(j0 + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M, Tq)
    else:
        lo, mid = 0, 0
    for h in range(hk * GROUP, hk * GROUP + GROUP):
        bh = b * H + h
        q_h, do_h, m_h = Q + b * sqb + h * sqh, DO + b * sdb + h * sdh, M + b * smb + h * smh
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_h, do_h, LSE + bh * Tq, DELTA + bh * Tq, m_h, sqt, sdt, smq, smk, cols,
                             lo, mid, Tq, Tk, offset, qk_scale, HEAD_DIM, BLOCK_M, True, CAUSAL, MASK_KIND, PRECISION)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_h, do_h, LSE + bh * Tq, DELTA + bh * Tq, m_h, sqt, sdt, smq, smk, cols,
                             mid, Tq, Tq, Tk, offset, qk_scale, HEAD_DIM, BLOCK_M, False, CAUSAL, MASK_KIND,
                             PRECISION)
    out = (bhk * Tk + cols[:, None]) * HEAD_DIM + dims[None, :]  # dK, dV contiguous (B, Hkv, Tk, D)
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=inside)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=inside)


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, K, V, M, skt, svt, smq, smk, rows, lo, hi, Tq, Tk, offset, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, EDGE: tl.constexpr, CAUSAL: tl.constexpr,
              MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Add the key tiles lo, lo + BLOCK_N, ... < hi to dQ of one query tile."""
    dims = tl.arange(0, HEAD_DIM)
    for k0 in range(lo, hi, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        k, v = _kv_tile(K, V, cols, dims, skt, svt, Tk, EDGE)  # (BLOCK_N, HEAD_DIM) each
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = _hide(s, rows[:, None], cols[None, :], M, smq, smk, Tq, Tk, offset, EDGE, CAUSAL, MASK_KIND)
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit(do_not_specialize=LENGTHS)
def _dq_kernel(Q, K, V, M, DO, LSE, DELTA, DQ,
               sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, smb, smh, smq, smk, sdb, sdh, sdt,
               H, GROUP, Tq, Tk, offset, qk_scale, sm_scale, TUNE_TQ, TUNE_TK,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """One program per (query tile, batch x head): dQ of its rows, over the key tiles it sees."""
    i0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    hk = h // GROUP
    rows = i0 + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    inside = rows < Tq
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :], mask=inside[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + dims[None, :], mask=inside[:, None], other=0.0)
    lse = tl.load(LSE + bh * Tq + rows, mask=inside, other=float("inf")) * LOG2E
    delta = tl.load(DELTA + bh * Tq + rows, mask=inside, other=0.0)
    K += b * skb + hk * skh
    V += b * svb + hk * svh
    M += b * smb + h * smh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    mid, hi = _key_range(i0, Tk, offset, BLOCK_M, BLOCK_N, CAUSAL)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, M, skt, svt, smq, smk, rows, 0, mid, Tq, Tk, offset, qk_scale,
                   HEAD_DIM, BLOCK_N, False, CAUSAL, MASK_KIND, PRECISION)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, M, skt, svt, smq, smk, rows, mid, hi, Tq, Tk, offset, qk_scale,
                   HEAD_DIM, BLOCK_N, True, CAUSAL, MASK_KIND, PRECISION)
    out = (bh * Tq + rows[:, None]) * HEAD_DIM + dims[None, :]  # dQ contiguous (B, H, Tq, D)
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=inside[:, None])


# ---------------------------------------------------------------------------------------------- launching

INTERPRET = isinstance(_fwd_kernel, InterpretedFunction)  # TRITON_INTERPRET=1 was set before the import
TRITON = tuple(map(int, triton.__version__.split(".")[:2]))  # (major, minor)
INTERPRETER_RUNS = TRITON >= (3, 7)  # older interpreters cannot loop over tensor bounds (range(lo, hi))


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel for fp16 / bf16 (compiled for sm_90 on CPU: all fit
# shared memory but fwd (128, 128, 8, 3) at D 128 with a full mask, which the autotuner skips; (128, 128, 8, 2)
# fits it; dkdv at D 128 spills registers but in the small tiles)
CONFIGS = {"fwd": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3)],
           "dq": [(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
           "dkdv": [(32, 128, 8, 3), (64, 64, 8, 3), (32, 64, 4, 2), (32, 64, 8, 3), (16, 64, 8, 3)]}
# fp32 multiplies without tensor cores (IEEE, not tf32): one small tile per kernel, nothing to tune, since big
# tiles spill registers (fwd and dq 64 x 64 with 4 warps: 57 KB at D 128) and take seconds each to compile;
# these spill at most 40 bytes at D 64 and 128 (Triton 3.6 and 3.9, sm_90; benchmarks/triton_compile.py)
FP32_TILE = {"fwd": (32, 64, 8, 2), "dq": (32, 64, 8, 2), "dkdv": (16, 64, 8, 3)}


def tiles(name: str, dtype: torch.dtype) -> list[tuple[int, int, int, int]]:
    """The (BLOCK_M, BLOCK_N, num_warps, num_stages) configs the autotuner tries for kernel `name` on `dtype`."""
    return [FP32_TILE[name]] if dtype == torch.float32 else CONFIGS[name]


def _tuned(kernel, name: str):
    """The kernel autotuned over its tiles for the inputs' dtype, once per length bucket, dtype and mode."""
    def tile(c):
        return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages

    return triton.autotune(
        [triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn), num_warps=w, num_stages=s)
         for bm, bn, w, s in dict.fromkeys([*CONFIGS[name], FP32_TILE[name]])],
        key=["TUNE_TQ", "TUNE_TK", "GROUP", "HEAD_DIM", "CAUSAL", "MASK_KIND"],
        prune_configs_by={"early_config_prune": lambda configs, nargs, **_: [
            c for c in configs if tile(c) in tiles(name, nargs["Q"].dtype)]},
        do_bench=lambda fn, quantiles: triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles),
    )(kernel)


def _tuned_kernels() -> dict:
    return {name: (_tuned(kernel, name), {})
            for name, kernel in (("fwd", _fwd_kernel), ("dq", _dq_kernel), ("dkdv", _dkdv_kernel))}


if INTERPRET:  # small fixed tiles, BLOCK_M != BLOCK_N so that the tests see tile edges that do not line up
    _KERNELS = {"fwd": (_fwd_kernel, dict(BLOCK_M=32, BLOCK_N=16)), "dq": (_dq_kernel, dict(BLOCK_M=32, BLOCK_N=16)),
                "dkdv": (_dkdv_kernel, dict(BLOCK_M=16, BLOCK_N=32))}
else:
    _KERNELS = _tuned_kernels()


def _device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it t's (nothing to do for the interpreter's CPU tensors)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch(name, rows, bh, *args, **kw):
    """One program per tile of `rows` (queries; keys for dkdv) and per bh: fixed tiles or autotuned ones."""
    kernel, tiles = _KERNELS[name]
    block = "BLOCK_N" if name == "dkdv" else "BLOCK_M"
    kernel[lambda meta: (triton.cdiv(rows, meta[block]), bh)](*args, **kw, **tiles)


def _common(q, k, mask, align):
    """Scalar arguments and mask strides shared by the kernels."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.size(1), k.size(2)
    if mask is None:
        m, strides, kind = q, (0, 0, 0, 0), NO_MASK  # any pointer: never read
    else:
        m = mask.expand(B, H, Tq, Tk).view(torch.uint8)  # a view with stride 0 on broadcast dims
        strides, kind = m.stride(), KEY_MASK if mask.size(2) == 1 else FULL_MASK
    offset = Tk - Tq if align == "bottom_right" else 0
    sm_scale = 1.0 / math.sqrt(D)
    consts = dict(HEAD_DIM=D, CAUSAL=align is not None, MASK_KIND=kind,
                  PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
                  TUNE_TQ=triton.next_power_of_2(Tq), TUNE_TK=triton.next_power_of_2(Tk))
    return m, strides, (H, H // Hkv, Tq, Tk, offset), sm_scale, consts


def _bht(t):
    return t.stride(0), t.stride(1), t.stride(2)


@torch.library.custom_op("tinylm::triton_attention_fwd", mutates_args=())
def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   align: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, Tq, D) stored as (B, Tq, H, D), so that heads merge without a copy; lse (B, H, Tq) fp32)."""
    B, H, Tq, D = q.shape
    out = q.new_empty(B, Tq, H, D).transpose(1, 2)  # (B, H, Tq, D)
    lse = torch.empty(B, H, Tq, dtype=torch.float32, device=q.device)
    m, ms, sizes, sm_scale, consts = _common(q, k, mask, align)
    if out.numel():
        with _device(q):
            _launch("fwd", Tq, B * H, q, k, v, m, out, lse, *_bht(q), *_bht(k), *_bht(v), *ms,
                    *_bht(out), *sizes, sm_scale * LOG2E.value, **consts)
    return out, lse


@_attention_fwd.register_fake
def _(q, k, v, mask, align):
    B, H, Tq, D = q.shape
    return q.new_empty(B, Tq, H, D).transpose(1, 2), q.new_empty(B, H, Tq, dtype=torch.float32)


@torch.library.custom_op("tinylm::triton_attention_bwd", mutates_args=())
def _attention_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                   lse: torch.Tensor, mask: torch.Tensor | None,
                   align: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in the inputs' dtype."""
    B, H, Tq, D = q.shape
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    delta = torch.empty_like(lse)  # D_i = dO_i . O_i, (B, H, Tq)
    m, ms, sizes, sm_scale, consts = _common(q, k, mask, align)
    with _device(q):
        if dq.numel():
            _delta_kernel[(triton.cdiv(Tq, 64), B * H)](out, dout, delta, *_bht(out), *_bht(dout), H, Tq,
                                                         HEAD_DIM=D, BLOCK_M=64)
            _launch("dq", Tq, B * H, q, k, v, m, dout, lse, delta, dq, *_bht(q), *_bht(k), *_bht(v),
                    *ms, *_bht(dout), *sizes, sm_scale * LOG2E.value, sm_scale, **consts)
        if dk.numel():
            _launch("dkdv", k.size(2), B * k.size(1), q, k, v, m, dout, lse, delta, dk, dv,
                    *_bht(q), *_bht(k), *_bht(v), *ms, *_bht(dout), *sizes, sm_scale * LOG2E.value, sm_scale, **consts)
    return dq, dk, dv


@_attention_bwd.register_fake
def _(dout, q, k, v, out, lse, mask, align):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, align = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, mask)
    ctx.align = align


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse, mask = ctx.saved_tensors
    dq, dk, dv = _attention_bwd(dout, q, k, v, out, lse, mask, ctx.align)
    return dq, dk, dv, None, None


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    causal: bool | str = False,
) -> torch.Tensor:
    """Exact softmax(q k^T / sqrt(D) + M) v by the fused FlashAttention-2 kernels (see the module docstring).

    q: (B, H, Tq, D), k, v: (B, Hkv, Tk, D) with H % Hkv == 0 (grouped-query attention when Hkv < H); fp16,
    bf16 or fp32; D in 16, 32, 64, 128; CUDA tensors (CPU tensors under TRITON_INTERPRET=1). mask: bool, True
    = attend, broadcastable to (B, H, Tq, Tk). causal: False, True / "top_left" (key j visible to query i iff
    j <= i), or "bottom_right" (j <= i + Tk - Tq). Returns (B, H, Tq, D) in q's dtype (stored as (B, Tq, H, D));
    a query with no visible key gets zeros and passes no gradient.
    """
    align = _resolve_causal(causal)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, T, D), got shapes {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    B, H, Tq, D = q.shape
    if k.shape != v.shape or k.size(0) != B or k.size(-1) != D or k.size(1) < 1 or H % k.size(1):
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} (want "
                         "q (B, H, Tq, D), k and v (B, Hkv, Tk, D) with H % Hkv == 0)")
    if B * H > 65535:  # the kernels' grid axis 1
        raise ValueError(f"triton_attention launches one program column per batch x head, at most 65535 (CUDA's "
                         f"grid limit), got {B} x {H}: split the batch")
    if D not in HEAD_DIMS:
        raise ValueError(f"triton_attention supports head dims {HEAD_DIMS}, got {D}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"q, k, v must share one dtype among float16, bfloat16, float32, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device) or (q.device.type != "cuda" and not INTERPRET):
        raise ValueError(f"triton_attention needs q, k, v on one CUDA device (CPU tensors only under "
                         f"TRITON_INTERPRET=1, set before importing Triton), got {q.device}, {k.device}, {v.device}")
    if INTERPRET and not INTERPRETER_RUNS:
        raise RuntimeError(f"Triton {triton.__version__}'s interpreter cannot run these kernels (they loop over "
                           "tensor bounds, range(lo, hi)): pip install 'triton>=3.7', or run them on a CUDA GPU")
    if mask is not None:
        mask = _broadcast_mask(mask, (B, H, Tq, k.size(2))).to(q.device)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # the kernels read rows of D
    return _attention_fwd(q, k, v, mask, align)[0]
