"""The Triton FlashAttention-2 kernels (nn/triton_attention.py) against a float64 reference, outputs and gradients.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py sets TRITON_INTERPRET=1 for
the session, before anything imports triton). With a GPU the same tests run the compiled, autotuned kernels on
CUDA, and the gpu-marked tests add large shapes. bfloat16 runs only on a GPU: the interpreter does no bfloat16
arithmetic (its tl.dot multiplies the uint16 storage; triton-lang/triton#11584).
"""

import math
import re

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]', Linux only)")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tinylm.models import build_model, presets  # noqa: E402
from tinylm.nn import triton_attention as ta  # noqa: E402
from tinylm.nn.attention import padding_mask, sdpa_attention  # noqa: E402

triton_attention = ta.triton_attention
if not ta.INTERPRET and not torch.cuda.is_available():
    pytest.skip("tinylm.nn.triton_attention was imported before TRITON_INTERPRET=1 was set, and there is no GPU",
                allow_module_level=True)
if ta.INTERPRET and not ta.INTERPRETER_RUNS:
    pytest.skip(f"Triton {ta.triton.__version__}'s interpreter cannot loop over tensor bounds (range(lo, hi) in the "
                "kernels; the compiled kernels can): pip install 'triton>=3.7' to run these tests on CPU",
                allow_module_level=True)
DEV = "cpu" if ta.INTERPRET else "cuda"
DTYPES = [torch.float32, torch.float16] + ([] if ta.INTERPRET else [torch.bfloat16])


# ---------------------------------------------------------------------------------------------- reference


def visible(tq, tk, causal=False, mask=None):
    """Bool (..., Tq, Tk): key j visible to query i, from the definition."""
    i, j = torch.arange(tq)[:, None], torch.arange(tk)[None, :]
    vis = {False: j >= 0, True: j <= i, "top_left": j <= i, "bottom_right": j <= i + tk - tq}[causal]
    return vis if mask is None else vis & mask.cpu()


def reference(q, k, v, vis):
    """softmax over the visible scores in float64 (new leaves); key/value heads repeated for GQA; empty rows -> 0."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    rep = q.size(1) // k.size(1)
    s = q @ k.repeat_interleave(rep, 1).transpose(-2, -1) / math.sqrt(q.size(-1))
    vis = vis.to(s.device).expand_as(s)
    s = s.masked_fill(~vis, -math.inf)
    mx = s.amax(-1, keepdim=True).detach().nan_to_num(0.0, neginf=0.0)
    e = (s - mx).exp()
    den = e.sum(-1, keepdim=True)
    out = e / torch.where(den > 0, den, 1.0) @ v.repeat_interleave(rep, 1)
    return out, (q, k, v)


def inputs(b, h, hkv, tq, tk, d, dtype=torch.float32):
    return [torch.randn(b, n, t, d, device=DEV, dtype=dtype, requires_grad=True)
            for n, t in ((h, tq), (hkv, tk), (hkv, tk))]


def make_mask(kind, b, h, tq, tk):
    if kind is None:
        return None
    if kind == "pad":  # (B, 1, 1, Tk): the second sequence has no key at all, so all its rows are empty
        lengths = torch.tensor([tk - 5, 0, tk, 1][:b])
        return padding_mask(lengths, tk)
    if kind == "keys":  # (Tk,)
        return torch.rand(tk) < 0.7
    if kind == "full":  # (B, H, Tq, Tk), sparse: some rows empty
        return torch.rand(b, h, tq, tk) < 0.15
    raise ValueError(kind)


def check(b, h, hkv, tq, tk, d, causal, kind, dtype=torch.float32):
    """Output and dq, dk, dv against the float64 reference; empty rows give exact zeros, no NaN anywhere."""
    q, k, v = inputs(b, h, hkv, tq, tk, d, dtype)
    mask = make_mask(kind, b, h, tq, tk)
    out = triton_attention(q, k, v, mask=None if mask is None else mask.to(DEV), causal=causal)
    assert out.shape == q.shape and out.dtype == dtype
    vis = visible(tq, tk, causal, mask)
    want, leaves = reference(q, k, v, vis)
    tol = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    tol = dict(atol=tol, rtol=tol)
    torch.testing.assert_close(out.double(), want, **tol)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    exp = torch.autograd.grad(want, leaves, g.double())
    for name, a, e in zip("qkv", got, exp, strict=True):
        assert torch.isfinite(a).all(), f"d{name} has NaN/inf"
        torch.testing.assert_close(a.double(), e, **tol, msg=lambda m, n=name: f"d{n}: {m}")
    empty = ~vis.to(DEV).expand(b, h, tq, tk).any(-1)  # (B, H, Tq)
    assert (out[empty] == 0).all() and (got[0][empty] == 0).all()


# ---------------------------------------------------------------------------------------------- cases

CASES = {  # (B, H, Hkv, Tq, Tk, D, causal, mask kind); lengths deliberately not multiples of the tiles
    "none": (2, 2, 2, 37, 37, 16, False, None),
    "causal": (1, 2, 2, 45, 45, 32, True, None),
    "top_left_tq<tk": (1, 2, 2, 20, 45, 16, "top_left", None),
    "top_left_tq>tk": (1, 2, 2, 45, 20, 16, "top_left", None),
    "bottom_right_tq<tk": (1, 2, 2, 20, 45, 16, "bottom_right", None),
    "bottom_right_tq>tk": (1, 2, 2, 45, 20, 16, "bottom_right", None),  # first 25 rows see no key
    "pad": (2, 2, 2, 29, 40, 16, False, "pad"),
    "pad_causal": (2, 2, 2, 40, 40, 16, True, "pad"),
    "pad_bottom_right": (2, 2, 2, 29, 40, 16, "bottom_right", "pad"),
    "keys_1d": (1, 2, 2, 17, 33, 16, False, "keys"),
    "full_mask": (2, 2, 2, 29, 40, 16, "bottom_right", "full"),
    "gqa": (1, 4, 2, 37, 37, 16, True, "pad"),
    "mqa": (2, 4, 1, 20, 45, 16, "bottom_right", "pad"),
    "decode_step": (2, 2, 2, 1, 40, 16, False, "pad"),
    "d64": (1, 2, 1, 33, 33, 64, True, None),
    "d128": (1, 1, 1, 33, 33, 128, "bottom_right", "pad"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference(case):
    check(*CASES[case])


@pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
@pytest.mark.parametrize("case", ["causal", "mqa", "d64"])
def test_half_precision_inputs(case, dtype):
    check(*CASES[case], dtype=dtype)


@pytest.mark.skipif(not ta.INTERPRET, reason="on a GPU the tiles are autotuned")
@pytest.mark.parametrize(("bm", "bn"), [(16, 16), (16, 64), (64, 16)])
def test_tile_sizes_do_not_change_the_result(monkeypatch, bm, bn):
    """Every kernel with the same tiles, square or not (the default interpreter tiles are (32, 16) and (16, 32))."""
    for name, kernel in (("fwd", ta._fwd_kernel), ("dq", ta._dq_kernel), ("dkdv", ta._dkdv_kernel)):
        monkeypatch.setitem(ta._KERNELS, name, (kernel, dict(BLOCK_M=bm, BLOCK_N=bn)))
    check(2, 2, 1, 45, 37, 16, "bottom_right", "pad")
    check(1, 1, 1, 37, 45, 16, True, None)


def test_every_diagonal_offset_within_a_key_tile():
    """Bottom-right alignment puts the causal diagonal at key i + Tk - Tq: at each of 16 offsets (the interpreter's
    key tile, a divisor of every GPU tile) the tile it crosses is masked and the tiles past it are skipped."""
    for offset in range(16):
        check(1, 1, 1, 2, 2 + offset, 16, "bottom_right", None)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.integers(1, 2), tq=st.integers(1, 40),
       tk=st.integers(1, 40), d=st.sampled_from([16, 32]),
       causal=st.sampled_from([False, "top_left", "bottom_right"]), kind=st.sampled_from([None, "pad", "full"]),
       seed=st.integers(0, 2**16))
def test_property_small_shapes(b, hkv, group, tq, tk, d, causal, kind, seed):
    torch.manual_seed(seed)
    check(b, hkv * group, hkv, tq, tk, d, causal, kind)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_through_the_custom_op(backend):
    """torch.compile (fullgraph) traces the op with its fake kernels and autograd formula: same values."""
    q, k, v = inputs(2, 4, 2, 21, 21, 16)
    mask = make_mask("pad", 2, 4, 21, 21).to(DEV)

    def f(q, k, v):
        return (triton_attention(q, k, v, mask=mask, causal=True) * 2).sum(-1)

    got = torch.compile(f, backend=backend, fullgraph=True)(q, k, v)
    want = f(q, k, v)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    for a, e in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, e)


def test_opcheck_registration():
    """torch.library.opcheck: schema, fake tensors, autograd registration, AOT dispatch (static and dynamic)."""
    q, k, v = inputs(1, 2, 1, 9, 13, 16)
    mask = make_mask("pad", 1, 2, 9, 13).to(DEV)
    torch.library.opcheck(torch.ops.tinylm.triton_attention_fwd.default, (q, k, v, mask, "bottom_right"))
    out, lse = torch.ops.tinylm.triton_attention_fwd(q, k, v, mask, None)
    assert not lse.requires_grad
    args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, mask, None)
    torch.library.opcheck(torch.ops.tinylm.triton_attention_bwd.default, args)


def test_output_layout_merges_heads_without_a_copy():
    q, k, v = inputs(2, 3, 3, 5, 7, 16)
    out = triton_attention(q, k, v)
    assert out.transpose(1, 2).is_contiguous()  # (B, T, H, D) in memory: .transpose(1, 2).view(B, T, C)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(shape=(1, 2, 4, 24)), ValueError, "head dims"),
        (dict(kv_heads=3, heads=4), ValueError, "H % Hkv"),
        (dict(dtype=torch.float64), TypeError, "float16, bfloat16, float32"),
        (dict(mask=torch.ones(4, 1, 1, 4, dtype=torch.bool)), ValueError, "does not broadcast"),
        (dict(mask=torch.ones(1, 1, 1, 4)), TypeError, "must be bool"),
        (dict(causal="bottom"), ValueError, "causal must be"),
        (dict(shape=(1, 65536, 1, 16)), ValueError, "at most 65535"),
    ],
)
def test_rejects_what_it_does_not_support(kwargs, error, match):
    h = kwargs.get("heads", 2)
    shape = kwargs.get("shape", (1, h, 4, 16))
    dtype = kwargs.get("dtype", torch.float32)
    q = torch.randn(shape, device=DEV, dtype=dtype)
    kv = torch.randn(shape[0], kwargs.get("kv_heads", h), shape[2], shape[3], device=DEV, dtype=dtype)
    with pytest.raises(error, match=match):
        triton_attention(q, kv, kv, mask=kwargs.get("mask"), causal=kwargs.get("causal", False))


@pytest.mark.skipif(not ta.INTERPRET, reason="the compiled kernels need no interpreter")
def test_an_interpreter_too_old_for_the_kernels_says_so(monkeypatch):
    monkeypatch.setattr(ta, "INTERPRETER_RUNS", False)
    with pytest.raises(RuntimeError, match=r"interpreter cannot run these kernels .* pip install 'triton>=3.7'"):
        triton_attention(*inputs(1, 1, 1, 4, 4, 16))


# ---------------------------------------------------------------------------------------------- in the model


def test_gpt_with_triton_attention_matches_sdpa(monkeypatch):
    """attention='triton' in a GPT (GQA + RoPE, left padding): logits and gradients agree with SDPA, and the
    KV-cache decoding path (bottom-right causal, one-query steps) gives the full forward's logits. The kernel
    gets the 2 key/value heads themselves, not copies for each of the 4 query heads."""
    kv_heads = []
    monkeypatch.setattr(ta, "triton_attention", lambda q, k, v, **kw: kv_heads.append(k.size(1)) or
                        triton_attention(q, k, v, **kw))
    cfg = dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    models = {}
    for kernel in ("sdpa", "triton"):
        torch.manual_seed(0)
        models[kernel] = build_model(presets("baichuan", attention=kernel, **cfg)).to(DEV).eval()
    x = torch.randint(1, 50, (2, 11), device=DEV)
    am = torch.tensor([[1] * 11, [0] * 3 + [1] * 8], device=DEV)
    logits = {name: m(x, attention_mask=am) for name, m in models.items()}
    real = am.bool()
    torch.testing.assert_close(logits["triton"][real], logits["sdpa"][real], rtol=1e-4, atol=1e-4)
    for out in logits.values():
        out[real].logsumexp(-1).sum().backward()
    grads = [[p.grad for p in m.parameters()] for m in models.values()]
    for a, e in zip(*grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-4)
    m = models["triton"]
    with torch.no_grad():
        cache = m.new_cache()
        steps = [m(x[:, :6], cache=cache)] + [m(x[:, t:t + 1], cache=cache) for t in range(6, 11)]
        torch.testing.assert_close(torch.cat(steps, 1), m(x), rtol=1e-4, atol=1e-4)
    assert len(kv_heads) == 2 * 8 and set(kv_heads) == {2}  # 2 layers x (2 forwards + 6 cached steps)


@pytest.mark.skipif(not ta.INTERPRET, reason="the GPU runs the autotuned kernels in every test")
def test_autotuned_kernels_tune_per_length_bucket_and_give_fp32_its_one_tile(monkeypatch):
    """The GPU's autotuned launch (CONFIGS, the length-bucket key, the fp32 pruning), run by the interpreter:
    do_bench, which times with CUDA events, is replaced by a call of the config that counts it. Every config is
    tried once per key; a new length in the same power-of-2 bucket (a KV-cache decode step) tries none; results
    equal the fixed-tile kernels'."""
    import triton

    old_autotuner = ta.TRITON < (3, 8)
    tried = []
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: (tried.append(1), fn(), [1.0] * 3)[2])
    fixed = ta._KERNELS
    monkeypatch.setattr(ta, "_KERNELS", ta._tuned_kernels())
    CONFIGS = ta.CONFIGS
    n = {name: len(c) for name, c in CONFIGS.items()}
    for dtype, per_step in ((torch.float16, n["fwd"] + n["dq"] + n["dkdv"]), (torch.float32, 0)):
        # fp32: one config left per kernel, nothing to time (Triton 3.7 times even a lone config: once each)
        q, k, v = inputs(1, 2, 1, 40, 40, 16, dtype)
        g = torch.randn_like(q)
        got = triton_attention(q, k, v, causal="bottom_right")
        grads = torch.autograd.grad(got, (q, k, v), g)
        assert len(tried) == per_step or (dtype == torch.float32 and len(tried) == 3 and old_autotuner), dtype
        if dtype == torch.float32:
            best = {name: kernel.best_config for name, (kernel, _) in ta._KERNELS.items()}
            assert {name: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                    for name, c in best.items()} == ta.FP32_TILE
        tried.clear()
        q2, k2, v2 = (t[:, :, :33].detach().requires_grad_() for t in (q, k, v))  # 33..64: the same bucket
        torch.autograd.grad(triton_attention(q2, k2, v2, causal="bottom_right"), (q2, k2, v2), g[:, :, :33])
        assert not tried
        monkeypatch.setattr(ta, "_KERNELS", fixed)
        want = triton_attention(q, k, v, causal="bottom_right")
        tol = dict(atol=2e-3, rtol=2e-3) if dtype == torch.float16 else {}  # other tiles: other fp16 roundings
        torch.testing.assert_close(got, want, **tol)
        for a, b in zip(grads, torch.autograd.grad(want, (q, k, v), g), strict=True):
            torch.testing.assert_close(a, b, **tol)
        monkeypatch.setattr(ta, "_KERNELS", ta._tuned_kernels())


def test_config_rejects_alibi_with_triton():
    with pytest.raises(ValueError, match="triton kernel does not take"):
        presets("gpt2", position="alibi", attention="triton")


@pytest.mark.slow
def test_kernels_compile_for_an_h100_without_one():
    """Triton's real compiler (not the interpreter) lowers every autotuner config of every kernel to an sm_90
    cubin, at the largest tiles (bf16, D 128, full mask, causal and not), and each kernel has a config that fits
    shared memory (benchmarks/triton_compile.py; the full sweep there)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks/triton_compile.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(script), "--dtypes", "bfloat16", "--dims", "128", "--masks", "full"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "0 failed; kernels with no config that fits: none" in out.stdout
    n = {name: len(c) for name, c in ta.CONFIGS.items()}
    for variant in ("bfloat16 D128 full mask=full", "bfloat16 D128 causal mask=full"):
        for name in ("fwd", "dq", "dkdv"):
            got = re.findall(rf"\| {variant} \| {name} \d+x\d+ w\d s\d \| [\d,]+", out.stdout)
            assert len(got) == n[name], (variant, name, out.stdout)


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "d", "h", "hkv", "tq", "tk", "causal"), [
    (torch.bfloat16, 64, 8, 8, 2048, 2048, True),
    (torch.bfloat16, 128, 8, 8, 2048, 2048, False),
    (torch.bfloat16, 128, 8, 2, 1000, 3000, "bottom_right"),
    (torch.float16, 64, 8, 2, 3000, 1000, "bottom_right"),
    (torch.float16, 128, 8, 8, 2048, 2048, True),
], ids=str)
def test_large_shapes_match_sdpa(dtype, d, h, hkv, tq, tk, causal):
    """Compiled kernels at training sizes (key padding, GQA, Tq != Tk, rows with no key): outputs against SDPA
    in the same dtype, outputs and gradients against the float64 reference."""
    if ta.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1: the large shapes are for the compiled kernels")
    q, k, v = inputs(2, h, hkv, tq, tk, d, dtype)
    mask = padding_mask(torch.tensor([tk, tk - 333], device=DEV), tk)
    out = triton_attention(q, k, v, mask=mask, causal=causal)
    rep = h // hkv
    with torch.no_grad():
        sdpa = sdpa_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), mask=mask, causal=causal)
    torch.testing.assert_close(out, sdpa, atol=2e-2, rtol=2e-2)
    want, leaves = reference(q, k, v, visible(tq, tk, causal, mask))
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    exp = torch.autograd.grad(want, leaves, g.double())
    for name, a, e in zip("qkv", got, exp, strict=True):
        err = (a.double() - e).norm() / e.norm()
        assert err < 2e-2, f"d{name}: relative error {err:.3g}"
