"""Attention masks and the three attention implementations against an independent float64 reference.

The reference below is written from the definition (explicit exponentials over the visible scores, rows with
nothing visible -> zeros) and its masks from index comparisons, so it shares no code with tinylm.nn.
"""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.nn import attention as attention_mod
from tinylm.nn import flash as flash_mod
from tinylm.nn.attention import (
    causal_mask,
    combine_masks,
    flash_attention,
    naive_attention,
    padding_mask,
    sdpa_attention,
)

# ---------------------------------------------------------------------------------------------- reference


def visible(tq, tk, causal=False, mask=None):
    """Bool (..., Tq, Tk): key j visible to query i, from the definition (not from tinylm's masks)."""
    i = torch.arange(tq)[:, None]
    j = torch.arange(tk)[None, :]
    if causal is True or causal == "top_left":
        vis = j <= i
    elif causal == "bottom_right":
        vis = j <= i + (tk - tq)
    else:
        vis = torch.ones(tq, tk, dtype=torch.bool)
    return vis if mask is None else vis & mask


def reference(q, k, v, vis):
    """softmax over the visible scores, in float64; differentiable; rows with no visible key -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    s = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.size(-1))
    vis = vis.expand_as(s)
    mx = torch.where(vis, s, -math.inf).amax(dim=-1, keepdim=True).detach()
    mx = torch.where(torch.isfinite(mx), mx, 0.0)
    e = torch.where(vis, torch.exp(torch.where(vis, s - mx, 0.0)), 0.0)
    den = e.sum(dim=-1, keepdim=True)
    return torch.einsum("...ij,...jd->...id", e / torch.where(den > 0, den, 1.0), v)


def qkv(b, h, tq, tk, d, dtype=torch.float32, dv=None, requires_grad=False):
    q = torch.randn(b, h, tq, d, dtype=dtype)
    k = torch.randn(b, h, tk, d, dtype=dtype)
    v = torch.randn(b, h, tk, dv or d, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def make_mask(kind, b, h, tq, tk, gen=None):
    """Masks of several broadcast shapes; some of them leave query rows with no visible key."""
    if kind is None:
        return None
    if kind == "pad":  # (B, 1, 1, Tk): one sequence of length 0 (all its rows empty), one full
        lengths = torch.tensor([max(1, tk - 3), 0, tk, 1][:b])
        return (torch.arange(tk)[None, :] < lengths[:, None])[:, None, None, :]
    if kind == "keys1d":  # (Tk,)
        m = torch.rand(tk, generator=gen) < 0.7
        m[0] = True
        return m
    if kind == "2d":  # (Tq, Tk), random, some rows empty
        return torch.rand(tq, tk, generator=gen) < 0.6
    if kind == "heads":  # (1, H, Tq, Tk)
        return torch.rand(1, h, tq, tk, generator=gen) < 0.5
    if kind == "queries":  # (B, 1, Tq, 1): masks whole query rows
        return torch.rand(b, 1, tq, 1, generator=gen) < 0.7
    if kind == "full":  # (B, H, Tq, Tk)
        return torch.rand(b, h, tq, tk, generator=gen) < 0.5
    raise ValueError(kind)


IMPLS = {
    "naive": naive_attention,
    "sdpa": sdpa_attention,
    "flash": flash_attention,
    "flash_b1": partial(flash_attention, block_size=1),
    "flash_b5": partial(flash_attention, block_size=5),
    "flash_b16": partial(flash_attention, block_size=16),
    "flash_b128": partial(flash_attention, block_size=128),
}

# (B, H, Tq, Tk, D, causal, mask kind)
CASES = [
    (2, 3, 17, 17, 8, False, None),
    (1, 2, 33, 33, 16, True, None),
    (2, 2, 13, 29, 8, True, None),  # Tq < Tk, top-left
    (2, 2, 29, 13, 8, "top_left", None),  # Tq > Tk, top-left: every row sees key 0
    (2, 2, 13, 29, 8, "bottom_right", None),  # KV-cache shape
    (2, 2, 29, 13, 8, "bottom_right", None),  # Tq > Tk, bottom-right: the first 16 rows see nothing
    (1, 1, 1, 37, 4, "bottom_right", None),  # one decoding step
    (3, 2, 19, 23, 8, False, "pad"),
    (3, 2, 23, 23, 8, True, "pad"),
    (2, 2, 21, 35, 8, "bottom_right", "pad"),
    (2, 2, 35, 21, 8, "bottom_right", "pad"),
    (2, 3, 18, 27, 8, False, "2d"),
    (2, 3, 27, 27, 8, True, "2d"),
    (2, 3, 11, 31, 8, False, "keys1d"),
    (2, 3, 24, 24, 8, "bottom_right", "heads"),
    (2, 2, 25, 14, 8, False, "queries"),
    (2, 2, 19, 19, 8, True, "full"),
    (1, 1, 67, 131, 32, False, "pad"),  # more than one 64-block in each direction
    (1, 2, 131, 67, 32, "bottom_right", "2d"),
]


def case_inputs(case, dtype=torch.float32, requires_grad=False, seed=0):
    b, h, tq, tk, d, causal, kind = case
    torch.manual_seed(seed)
    q, k, v = qkv(b, h, tq, tk, d, dtype, requires_grad=requires_grad)
    mask = make_mask(kind, b, h, tq, tk, torch.Generator().manual_seed(seed + 1))
    return q, k, v, mask, causal


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("tq,tk", [(1, 1), (4, 4), (3, 7), (7, 3), (5, 1), (1, 5)])
@pytest.mark.parametrize("align", ["top_left", "bottom_right"])
def test_causal_mask_matches_hand_built(tq, tk, align):
    off = tk - tq if align == "bottom_right" else 0
    want = torch.tensor([[j <= i + off for j in range(tk)] for i in range(tq)], dtype=torch.bool)
    got = causal_mask(tq, tk, align=align)
    assert got.dtype == torch.bool and got.shape == (tq, tk)
    assert torch.equal(got, want)


def test_causal_mask_defaults_and_errors():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # square: both alignments are the same lower triangle
    assert torch.equal(causal_mask(6, 6, align="bottom_right"), causal_mask(6))
    # decoding one token against a 4-key cache sees every key
    assert causal_mask(1, 4, align="bottom_right").all()
    assert causal_mask(1, 4, align="top_left").tolist() == [[True, False, False, False]]
    with pytest.raises(ValueError, match="align"):
        causal_mask(3, 3, align="bottom-right")


def test_padding_mask_from_lengths():
    m = padding_mask(torch.tensor([3, 0, 5]))
    assert m.shape == (3, 1, 1, 5) and m.dtype == torch.bool
    want = [[j < n for j in range(5)] for n in (3, 0, 5)]
    assert m[:, 0, 0, :].tolist() == want
    m7 = padding_mask(torch.tensor([2, 4]), max_len=7)
    assert m7.shape == (2, 1, 1, 7)
    assert m7[:, 0, 0].tolist() == [[j < n for j in range(7)] for n in (2, 4)]


def test_padding_mask_from_attention_mask():
    am = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # right, left, no padding
    m = padding_mask(am)
    assert m.shape == (3, 1, 1, 5) and m.dtype == torch.bool
    assert torch.equal(m[:, 0, 0], am == 1)
    assert torch.equal(padding_mask(am.bool()), m)
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.ones(2, 3, 4))


def test_combine_masks():
    a = torch.tensor([[True, False], [True, True]])
    b = torch.tensor([True, False])
    assert combine_masks() is None and combine_masks(None, None) is None
    assert combine_masks(None, a) is a
    assert combine_masks(a, None, b).tolist() == [[True, False], [True, False]]


# ---------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}x{c[3]}-{c[5]}-{c[6]}" for c in CASES])
def test_forward_matches_float64_reference(impl, case):
    q, k, v, mask, causal = case_inputs(case)
    tq, tk = q.size(-2), k.size(-2)
    want = reference(q, k, v, visible(tq, tk, causal, mask))
    got = IMPLS[impl](q, k, v, mask=mask, causal=causal)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)
    # rows with no visible key: exactly zero
    empty = ~visible(tq, tk, causal, mask).expand(*q.shape[:2], tq, tk).any(-1)
    assert (got[empty] == 0).all()


@pytest.mark.parametrize("case", CASES[::3], ids=[f"{c[2]}x{c[3]}-{c[5]}-{c[6]}" for c in CASES[::3]])
def test_flash_float64_is_exact(case):
    q, k, v, mask, causal = case_inputs(case, dtype=torch.float64)
    want = reference(q, k, v, visible(q.size(-2), k.size(-2), causal, mask))
    for bs in (3, 64):
        got = flash_attention(q, k, v, mask=mask, causal=causal, block_size=bs)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("tq,tk", [(40, 40), (23, 57), (57, 23)])
@pytest.mark.parametrize("bs", [7, 16, 64])
def test_flash_vs_torch_sdpa(tq, tk, bs):
    q, k, v = qkv(2, 3, tq, tk, 16)
    # torch's is_causal is top-left
    torch.testing.assert_close(
        flash_attention(q, k, v, causal=True, block_size=bs),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        atol=1e-5, rtol=1e-5,
    )
    torch.testing.assert_close(
        flash_attention(q, k, v, block_size=bs), F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5
    )
    # bottom-right alignment and padding as an explicit boolean mask, no empty rows (torch's answer there
    # is backend-specific)
    keep = causal_mask(tq, tk, align="bottom_right") & padding_mask(torch.tensor([tk, tk - 2]), tk)
    keep[..., 0] = True
    torch.testing.assert_close(
        flash_attention(q, k, v, mask=keep, block_size=bs),
        F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
        atol=1e-5, rtol=1e-5,
    )


def test_flash_block_size_does_not_change_the_result():
    q, k, v = qkv(2, 2, 45, 45, 8, torch.float64)
    mask = padding_mask(torch.tensor([45, 30]))
    sizes = (1, 2, 7, 44, 45, 46, 1000)
    outs = [flash_attention(q, k, v, mask=mask, causal=True, block_size=bs) for bs in sizes]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-13, rtol=1e-13)


def test_flash_value_dim_differs_and_empty_sequences():
    q, k, v = qkv(2, 2, 9, 12, 8, dv=5)
    torch.testing.assert_close(
        flash_attention(q, k, v, causal="bottom_right", block_size=4).double(),
        reference(q, k, v, visible(9, 12, "bottom_right")),
        atol=2e-5, rtol=1e-5,
    )
    q, k, v = qkv(2, 2, 5, 0, 8)  # no keys at all: zeros
    assert torch.equal(flash_attention(q, k, v), torch.zeros(2, 2, 5, 8))
    q, k, v = qkv(2, 2, 0, 5, 8)  # no queries: empty
    assert flash_attention(q, k, v, causal=True).shape == (2, 2, 0, 8)


def test_flash_non_contiguous_inputs_and_expanded_mask():
    x = torch.randn(2, 19, 3, 3 * 8)  # (B, T, H, 3D): heads split by views, as a model does
    q, k, v = (t.transpose(1, 2) for t in x.split(8, dim=-1))
    assert not q.is_contiguous()
    mask = padding_mask(torch.tensor([19, 11])).expand(2, 3, 19, 19)  # a broadcast view, not a copy
    want = reference(q, k, v, visible(19, 19, True, mask))
    got = flash_attention(q, k, v, mask=mask, causal=True, block_size=8)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_half_precision(dtype):
    case = (2, 2, 37, 45, 16, "bottom_right", "pad")
    q, k, v, mask, causal = case_inputs(case, dtype=dtype, requires_grad=True)
    vis = visible(37, 45, causal, mask)
    got = flash_attention(q, k, v, mask=mask, causal=causal, block_size=16)
    assert got.dtype == dtype
    want = reference(q, k, v, vis)
    # fp32 accumulation: only the bf16/fp16 rounding of inputs and output remains
    torch.testing.assert_close(got.double(), want, atol=2e-2, rtol=2e-2)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (q, k, v), g)
    want_grads = torch.autograd.grad(want, (q, k, v), g.double())
    for a, b in zip(grads, want_grads, strict=True):
        assert a.dtype == dtype and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b.double(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_half_precision_rounds_once(dtype):
    # fp16 / bf16 inputs are computed in fp32: the output is the exact result rounded once (a 16-bit
    # accumulation is off by hundreds of ulps)
    q, k, v, mask, causal = case_inputs((2, 2, 37, 45, 16, "bottom_right", "pad"), dtype=dtype)
    want = reference(q, k, v, visible(37, 45, causal, mask)).to(dtype)
    got = flash_attention(q, k, v, mask=mask, causal=causal, block_size=16)
    torch.testing.assert_close(got, want, rtol=torch.finfo(dtype).eps, atol=1e-5)


# ---------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("impl", ["naive", "sdpa", "flash", "flash_b5", "flash_b16"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}x{c[3]}-{c[5]}-{c[6]}" for c in CASES])
def test_gradients_match_float64_reference(impl, case):
    q, k, v, mask, causal = case_inputs(case, dtype=torch.float64, requires_grad=True)
    vis = visible(q.size(-2), k.size(-2), causal, mask)
    out = IMPLS[impl](q, k, v, mask=mask, causal=causal)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(reference(q, k, v, vis), (q, k, v), g)
    for name, a, b in zip("qkv", got, want, strict=True):
        assert torch.isfinite(a).all(), f"d{name} has NaN/inf"
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=lambda m, n=name: f"d{n}: {m}")
    # queries with no visible key get zero gradient
    empty = ~vis.expand(*q.shape[:2], q.size(-2), k.size(-2)).any(-1)
    assert (got[0][empty] == 0).all()


@pytest.mark.parametrize("causal,kind", [("bottom_right", "pad"), (False, "2d"), (True, None)])
def test_flash_gradcheck(causal, kind):
    case = (2, 2, 6, 5, 3, causal, kind)
    q, k, v, mask, causal = case_inputs(case, dtype=torch.float64, requires_grad=True)
    fn = partial(flash_attention, mask=mask, causal=causal, block_size=2)
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_flash_gradient_of_one_input_only():
    q, k, v = qkv(1, 2, 10, 12, 4, torch.float64)
    k.requires_grad_(True)
    out = flash_attention(q, k, v, causal="bottom_right", block_size=4)
    (dk,) = torch.autograd.grad(out.sum(), (k,))
    k2 = k.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(reference(q, k2, v, visible(10, 12, "bottom_right")).sum(), (k2,))
    torch.testing.assert_close(dk, want)


# ---------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("impl", ["naive", "sdpa", "flash"])
@pytest.mark.parametrize("bad", ["bottom-right", "causal", 1, 0.5])
def test_bad_causal_argument(impl, bad):
    q, k, v = qkv(1, 1, 3, 3, 4)
    with pytest.raises(ValueError, match="causal"):
        IMPLS[impl](q, k, v, causal=bad)


def test_causal_rules_have_one_copy():
    assert attention_mod._resolve_causal is flash_mod._resolve_causal
    assert [flash_mod._resolve_causal(c) for c in (False, None, True, "top_left", "bottom_right")] == [
        None, None, "top_left", "top_left", "bottom_right"
    ]


def test_flash_argument_errors():
    q, k, v = qkv(2, 2, 5, 6, 4)
    with pytest.raises(TypeError, match="bool"):
        flash_attention(q, k, v, mask=torch.ones(5, 6))
    with pytest.raises(ValueError, match="broadcast"):
        flash_attention(q, k, v, mask=torch.ones(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):
        flash_attention(q, k, v, mask=torch.ones(1, 2, 2, 5, 6, dtype=torch.bool))
    for bs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block_size"):
            flash_attention(q, k, v, block_size=bs)
    with pytest.raises(ValueError, match="shapes"):
        flash_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="shapes"):
        flash_attention(q, k, v[..., :5, :])
    with pytest.raises(TypeError, match="dtype"):
        flash_attention(q, k.double(), v)
    with pytest.raises(NotImplementedError, match="dropout"):
        flash_attention(q, k, v, dropout_p=0.1)
    assert torch.equal(flash_attention(q, k, v, dropout_p=0.0), flash_attention(q, k, v))


# ------------------------------------------------------------------------------------- memory structure

try:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
except ImportError:  # a private torch API; the subprocess RSS test in test_flash_memory.py covers the same
    TorchDispatchMode = None


def _record(fn):
    """Run fn() and return (largest numel of any tensor an aten op produced, count of bmm calls)."""

    class Recorder(TorchDispatchMode):
        largest, bmm = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm):
                Recorder.bmm += 1
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    Recorder.largest = max(Recorder.largest, t.numel())
            return out

    with Recorder():
        fn()
    return Recorder.largest, Recorder.bmm


@pytest.mark.skipif(TorchDispatchMode is None, reason="torch.utils._python_dispatch is not available")
def test_flash_never_builds_the_score_matrix():
    b, h, t, d, bs = 1, 2, 256, 16, 32
    q, k, v = qkv(b, h, t, t, d, requires_grad=True)
    mask = padding_mask(torch.tensor([200]), t)
    full = b * h * t * t

    def fwd_bwd(f):
        out = f(q, k, v, mask=mask, causal="bottom_right")
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))

    naive_largest, _ = _record(lambda: fwd_bwd(naive_attention))
    assert naive_largest >= full  # the detector sees a (Tq, Tk) matrix when there is one
    largest, _ = _record(lambda: fwd_bwd(partial(flash_attention, block_size=bs)))
    assert largest <= max(b * h * t * d, b * h * bs * bs), largest  # inputs/outputs and tiles only
    assert largest < full // 8


@pytest.mark.skipif(TorchDispatchMode is None, reason="torch.utils._python_dispatch is not available")
def test_flash_causal_skips_hidden_tiles():
    q, k, v = qkv(1, 1, 256, 256, 8)
    n = 256 // 32
    _, dense = _record(lambda: flash_attention(q, k, v, block_size=32))
    _, causal = _record(lambda: flash_attention(q, k, v, causal=True, block_size=32))
    assert dense == 2 * n * n  # two matmuls per tile: S = Q K^T and P V
    assert causal == 2 * n * (n + 1) // 2  # only the tiles on or below the diagonal
    # decoding one query against 256 cached keys (bottom-right) visits every key tile once
    _, step = _record(lambda: flash_attention(q[..., -1:, :], k, v, causal="bottom_right", block_size=32))
    assert step == 2 * n
    # the backward pass skips the same tiles: five matmuls per tile (S again, dV, dP, dQ, dK)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    for causal, tiles in ((False, n * n), (True, n * (n + 1) // 2)):
        out = flash_attention(q, k, v, causal=causal, block_size=32)
        _, bwd = _record(lambda o=out: torch.autograd.grad(o, (q, k, v), torch.ones_like(o)))
        assert bwd == 5 * tiles


# ---------------------------------------------------------------------------------------------- property

MASK_KINDS = [None, "pad", "keys1d", "2d", "heads", "queries", "full"]


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    tq=st.integers(1, 40),
    tk=st.integers(1, 40),
    d=st.integers(1, 9),
    bs=st.integers(1, 48),
    causal=st.sampled_from([False, True, "top_left", "bottom_right"]),
    kind=st.sampled_from(MASK_KINDS),
    seed=st.integers(0, 2**16),
)
def test_flash_property(b, h, tq, tk, d, bs, causal, kind, seed):
    torch.manual_seed(seed)
    q, k, v = qkv(b, h, tq, tk, d, torch.float64, requires_grad=True)
    mask = make_mask(kind, b, h, tq, tk, torch.Generator().manual_seed(seed))
    vis = visible(tq, tk, causal, mask)
    out = flash_attention(q, k, v, mask=mask, causal=causal, block_size=bs)
    want = reference(q, k, v, vis)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    naive = naive_attention(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(naive, want, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    exp = torch.autograd.grad(want, (q, k, v), g)
    for a, e in zip(got, exp, strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8)


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flash_on_cuda(dtype):
    case = (2, 4, 200, 333, 64, "bottom_right", "pad")
    q, k, v, mask, causal = case_inputs(case, dtype=dtype, requires_grad=True)
    cq, ck, cv = (t.detach().cuda().requires_grad_(True) for t in (q, k, v))
    out = flash_attention(cq, ck, cv, mask=mask.cuda(), causal=causal)
    assert out.device.type == "cuda" and out.dtype == dtype
    want = reference(q, k, v, visible(200, 333, causal, mask))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out.double().cpu(), want, atol=tol, rtol=tol)
    g = torch.randn_like(want)
    got = torch.autograd.grad(out, (cq, ck, cv), g.to(out))
    exp = torch.autograd.grad(want, (q, k, v), g)
    for a, e in zip(got, exp, strict=True):
        torch.testing.assert_close(a.double().cpu(), e.double(), atol=5 * tol, rtol=5 * tol)  # e: the leaf dtype
