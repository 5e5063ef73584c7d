"""MultiHeadAttention against torch.nn.MultiheadAttention, GQA, cross-attention, dropout and the KV cache."""

import pytest
import torch

from tinylm.nn.kv_cache import KVCache
from tinylm.nn.mha import MultiHeadAttention
from tinylm.nn.positions import RotaryEmbedding

E, H = 32, 4


def _torch_mha(ours: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(E, H, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.c_proj.weight)
        ref.out_proj.bias.copy_(ours.c_proj.bias)
    return ref


def _randomise_biases(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    return m


def test_self_attention_matches_torch_with_padding_and_causal_masks():
    mha = _randomise_biases(MultiHeadAttention(E, H, fused=False)).eval()
    ref = _torch_mha(mha)
    x = torch.randn(2, 6, E)
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    expected, _ = ref(x, x, x, key_padding_mask=~key_mask.bool(), need_weights=False)
    torch.testing.assert_close(mha(x, key_mask=key_mask), expected, rtol=1e-5, atol=1e-5)

    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = not allowed
    expected, _ = ref(x, x, x, attn_mask=causal, key_padding_mask=~key_mask.bool(), need_weights=False)
    torch.testing.assert_close(mha(x, key_mask=key_mask, causal=True), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mha(x, causal=True), mha(x), atol=1e-4)


def test_cross_attention_matches_torch_with_memory_padding():
    mha = _randomise_biases(MultiHeadAttention(E, H, fused=False, cross=True)).eval()
    ref = _torch_mha(mha)
    x, memory = torch.randn(2, 3, E), torch.randn(2, 5, E)
    mem_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected, _ = ref(x, memory, memory, key_padding_mask=~mem_mask.bool(), need_weights=False)
    out = mha(x, memory=memory, key_mask=mem_mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    memory2 = memory.clone()
    memory2[0, 3:] = torch.randn(2, E)  # padded memory positions are not attended
    torch.testing.assert_close(mha(x, memory=memory2, key_mask=mem_mask), out)
    with pytest.raises(ValueError, match="fused=False"):
        MultiHeadAttention(E, H, cross=True)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_fused_equals_separate(n_kv_head):
    sep = MultiHeadAttention(E, H, n_kv_head, fused=False)
    fused = MultiHeadAttention(E, H, n_kv_head, fused=True)
    with torch.no_grad():
        fused.c_attn.weight.copy_(torch.cat([sep.q_proj.weight, sep.k_proj.weight, sep.v_proj.weight]))
        fused.c_attn.bias.copy_(torch.randn(fused.c_attn.bias.shape))
        sep.q_proj.bias.copy_(fused.c_attn.bias[:E])
        sep.k_proj.bias.copy_(fused.c_attn.bias[E:E + sep.k_proj.out_features])
        sep.v_proj.bias.copy_(fused.c_attn.bias[E + sep.k_proj.out_features:])
        fused.c_proj.load_state_dict(sep.c_proj.state_dict())
    x = torch.randn(2, 5, E)
    torch.testing.assert_close(fused(x, causal=True), sep(x, causal=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_alibi_attention_equals_the_formula_and_zeroes_rows_without_keys(device):
    """attn_bias (ALiBi): softmax(q k^T / sqrt(hs) + bias, visible keys only) v, in float64 on the CPU; a query
    row with no visible key (a left pad's own position) gives attention output 0, i.e. c_proj's bias, not NaN
    (CPU SDPA already returns 0 there; CUDA's kernels give NaN unless the module zeroes the row)."""
    from tinylm.nn.positions import alibi_bias

    mha = _randomise_biases(MultiHeadAttention(E, H, fused=False)).eval().double()
    x, B, T, hs = torch.randn(2, 5, E, dtype=torch.float64), 2, 5, E // H
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    pos = (key_mask.cumsum(-1) - 1).clamp(min=0)
    bias = alibi_bias(H, pos, pos).double()  # (B, H, T, T)
    heads = [p(x).view(B, T, H, hs).transpose(1, 2) for p in (mha.q_proj, mha.k_proj, mha.v_proj)]
    seen = key_mask.bool()[:, None, None, :] & torch.ones(T, T, dtype=torch.bool).tril()  # (B, 1, T, T)
    att = (heads[0] @ heads[1].transpose(-2, -1) / hs**0.5 + bias).masked_fill(~seen, -torch.inf)
    y = att.softmax(-1).nan_to_num(0.0) @ heads[2]  # rows without a key: 0
    want = mha.c_proj(y.transpose(1, 2).reshape(B, T, E))
    mha, dt = mha.to(device), torch.float64 if device == "cpu" else torch.float32
    got = mha.to(dt)(x.to(device, dt), key_mask=key_mask.to(device), causal=True, attn_bias=bias.to(device, dt))
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1, :2].double().cpu(), mha.c_proj.bias.double().cpu().expand(2, E))


def test_fused_projection_backward_joins_q_k_v_gradients_in_one_copy():
    """The backward graph torch.compile gets: dq, dk, dv become c_attn's output gradient by one cat, as in
    nanoGPT, not a stack and a contiguous clone (two copies of 3 (B, T, C) per layer, per step)."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified

    mha = MultiHeadAttention(E, H)
    ops = []

    def backward_ops(gm, _):
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    def backend(gm, example):
        return aot_module_simplified(gm, example, fw_compiler=lambda g, _: make_boxed_func(g.forward),
                                     bw_compiler=backward_ops)

    torch._dynamo.reset()
    torch.compile(mha, backend=backend, fullgraph=True)(torch.randn(2, 5, E), causal=True).sum().backward()
    copies = [op for op in ops if op.split(".")[1:2] in (["cat"], ["stack"], ["clone"], ["_to_copy"])]
    assert copies == ["aten.cat.default"], ops


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_gqa_equals_mha_with_explicitly_repeated_kv_heads(n_kv_head):
    gqa = MultiHeadAttention(E, H, n_kv_head, fused=False)
    full = MultiHeadAttention(E, H, fused=False)
    hd, rep = E // H, H // n_kv_head
    with torch.no_grad():
        full.q_proj.load_state_dict(gqa.q_proj.state_dict())
        full.c_proj.load_state_dict(gqa.c_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(gqa, name), getattr(full, name)
            # query head h uses kv head h // rep
            dst.weight.copy_(src.weight.view(n_kv_head, hd, E).repeat_interleave(rep, dim=0).reshape(E, E))
            dst.bias.copy_(src.bias.view(n_kv_head, hd).repeat_interleave(rep, dim=0).reshape(E))
    x = torch.randn(2, 7, E)
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    torch.testing.assert_close(gqa(x, key_mask=mask, causal=True), full(x, key_mask=mask, causal=True))


def test_invalid_head_counts_and_kernel():
    with pytest.raises(ValueError, match="n_embd % n_head"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="n_head % n_kv_head"):
        MultiHeadAttention(32, 4, 3)
    with pytest.raises(ValueError, match="kernel"):
        MultiHeadAttention(32, 4, kernel="xformers")


@pytest.mark.parametrize("kernel", ["sdpa", "naive"])
def test_dropout_only_in_training(kernel):
    mha = MultiHeadAttention(E, H, dropout=0.5, kernel=kernel)
    plain = MultiHeadAttention(E, H, dropout=0.0, kernel=kernel)
    plain.load_state_dict(mha.state_dict())
    x = torch.randn(2, 6, E)
    mha.eval()
    torch.testing.assert_close(mha(x, causal=True), plain(x, causal=True))
    mha.train()
    assert not torch.allclose(mha(x, causal=True), mha(x, causal=True))


@pytest.mark.parametrize("kernel", ["sdpa", "naive", "flash"])
@pytest.mark.parametrize("chunks", [[1] * 7, [3, 2, 2], [4, 3]])
def test_kv_cache_incremental_equals_full(kernel, chunks):
    mha = MultiHeadAttention(E, H, 2, kernel=kernel).eval()
    rope = RotaryEmbedding(E // H)
    x = torch.randn(2, 7, E)
    full = mha(x, causal=True, rope=rope, positions=torch.arange(7))
    cache, start, outs = KVCache(max_len=16), 0, []
    for n in chunks:
        pos = torch.arange(start, start + n)
        outs.append(mha(x[:, start:start + n], causal=True, rope=rope, positions=pos, cache=cache))
        start += n
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


class PrefixKV:
    """Keys and values as a decoder makes them: a function of the input (group) and the tokens up to the
    position, so rows whose tokens agree on a prefix agree there (the contract of KVCache.reorder)."""

    def __init__(self, seed=0):
        self.g, self.memo = torch.Generator().manual_seed(seed), {}

    def __call__(self, group: int, tokens: list[int]) -> torch.Tensor:  # (2, H_kv=2, len(tokens), D=5)
        cols = [self.memo.setdefault((group, tuple(tokens[:p + 1])), torch.randn(2, 2, 5, generator=self.g))
                for p in range(len(tokens))]
        return torch.stack(cols, 2)


def beam_keys(cache: KVCache, keys: torch.Tensor) -> torch.Tensor:
    """Each logical beam's keys (B K, H, L, D), in positions order, from update's (G, H, P + K j, D)."""
    K, P = cache.group, cache.offset
    out = []
    for row in cache.slots.tolist():
        g, s = divmod(row, K)
        out.append(torch.cat([keys[g, :, :P], keys[g, :, P + s::K]], 1))
    return torch.stack(out)


def test_kv_cache_expand_reorder_equals_gathering_every_row():
    """expand + reorder (reassigned slots, copies from the first differing position) against keys and values
    recomputed from each beam's tokens, over steps with 2 inputs x 3 beams and a 2-token vocabulary (beams
    often share histories, so the copies start at different positions)."""
    g, kv = torch.Generator().manual_seed(1), PrefixKV()
    groups, beams, prompt = 2, 3, 4
    tokens = torch.randint(0, 2, (groups, prompt), generator=g)
    cache = KVCache(max_len=16)
    first = torch.stack([kv(i, tokens[i].tolist()) for i in range(groups)])  # (G, 2, H, P, D)
    cache.update(0, first[:, 0], first[:, 1])
    cache.expand(beams)
    tokens = tokens.repeat_interleave(beams, 0)
    for step in range(8):
        if step:
            index = torch.cat([grp * beams + torch.randint(0, beams, (beams,), generator=g) for grp in range(groups)])
            cache.reorder(index, tokens=tokens)
            tokens = tokens[index]
        tokens = torch.cat([tokens, torch.randint(0, 2, (groups * beams, 1), generator=g)], 1)
        want = torch.stack([kv(row // beams, tokens[row].tolist()) for row in range(groups * beams)])
        k_all, v_all = cache.update(0, want[cache.holders, 0, :, -1:], want[cache.holders, 1, :, -1:])  # buffer order
        assert k_all.shape == (groups, 2, prompt + beams * (step + 1), 5)  # one sequence per input
        assert torch.equal(beam_keys(cache, k_all), want[:, 0]) and torch.equal(beam_keys(cache, v_all), want[:, 1])


def test_kv_cache_reorder_copies_only_what_differs():
    """A child that takes a childless beam's slot gets its parent's keys from where their tokens differ: the
    keys before that position (made unequal here on purpose, to see them) stay."""
    cache = KVCache(max_len=8)
    cache.update(0, torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))  # a prompt of 2
    cache.expand(2)
    cache.update(0, torch.tensor([1.0, 2.0]).view(2, 1, 1, 1), torch.zeros(2, 1, 1, 1))
    k_all, _ = cache.update(0, torch.tensor([3.0, 4.0]).view(2, 1, 1, 1), torch.zeros(2, 1, 1, 1))
    assert k_all[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]  # prompt, then the 2 slots per step
    tokens = torch.tensor([[0, 0, 5, 6], [0, 0, 5, 7]])  # the two beams differ from position 3 on
    cache.reorder(torch.tensor([0, 0]), tokens=tokens)
    assert cache.slots.tolist() == [0, 1] and cache.holders.tolist() == [0, 1]
    assert cache.k[0][0, 0, :6, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 3.0]  # position 2 kept, 3 copied


def test_kv_cache_beam_bias():
    """Slot s of an input sees the prompt keys its rows see and the generated keys of slot s (0, else -inf);
    the bias of generated position j goes to all K keys of step j."""
    cache = KVCache(max_len=8)
    cache.update(0, torch.zeros(2, 1, 2, 1), torch.zeros(2, 1, 2, 1))  # 2 inputs, prompts of 2
    cache.expand(2, prompt_mask=torch.tensor([[0, 1], [1, 1]]))
    seen = cache.beam_bias(None, n_keys=6)
    assert seen.shape == (2, 1, 2, 6)
    assert torch.isfinite(seen[0, 0]).int().tolist() == [[0, 1, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]]
    assert torch.isfinite(seen[1, 0]).int().tolist() == [[1, 1, 1, 0, 1, 0], [1, 1, 0, 1, 0, 1]]
    assert seen[torch.isfinite(seen)].eq(0).all()
    bias = torch.arange(4.0).expand(4, 1, 1, 4)  # (B K, H, 1, L): position j -> j
    biased = cache.beam_bias(bias, n_keys=6)
    assert biased[1, 0, 0].tolist() == [0.0, 1.0, 2.0, float("-inf"), 3.0, float("-inf")]
    assert biased[1, 0, 1].tolist() == [0.0, 1.0, float("-inf"), 2.0, float("-inf"), 3.0]
    assert cache.beam_bias(bias, n_keys=6) is biased  # the other layers of the step reuse it


def test_kv_cache_reorder_needs_expand_and_stays_in_groups():
    cache = KVCache(max_len=8)
    with pytest.raises(ValueError, match="run the prefill first"):
        cache.expand(2)
    cache.update(0, torch.randn(2, 1, 3, 2), torch.randn(2, 1, 3, 2))
    with pytest.raises(ValueError, match="call expand first"):
        cache.reorder(torch.tensor([0, 0]), tokens=torch.zeros(2, 3, dtype=torch.long))
    cache.expand(2)
    with pytest.raises(ValueError, match="already expanded"):
        cache.expand(2)
    assert cache.slots.tolist() == [0, 1, 2, 3] and cache.holders.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="outside its group"):
        cache.reorder(torch.tensor([0, 2, 2, 3]), tokens=torch.zeros(4, 3, dtype=torch.long))


def test_kv_cache_expand_repeats_cross_attention_keys():
    cache, k = KVCache(max_len=8), torch.randn(2, 1, 5, 3)
    cache.update(0, torch.randn(2, 1, 1, 3), torch.randn(2, 1, 1, 3))
    cache.cross[0] = (k, k + 1)
    cache.expand(3)
    assert torch.equal(cache.cross[0][0], k.repeat_interleave(3, 0))
    assert torch.equal(cache.cross[0][1], (k + 1).repeat_interleave(3, 0))


def test_kv_cache_overflow_raises():
    cache = KVCache(max_len=4)
    cache.update(0, torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2))
    with pytest.raises(ValueError, match="max_len=4"):
        cache.update(0, torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2))
    assert cache.length == 3


def test_cross_attention_cache_reuses_memory_keys():
    mha = MultiHeadAttention(E, H, fused=False, cross=True).eval()
    x, memory = torch.randn(2, 3, E), torch.randn(2, 5, E)
    cache = KVCache(max_len=8)
    first = mha(x, memory=memory, cache=cache, layer=1)
    assert 1 in cache.cross
    # later steps reuse the cached memory keys/values even if memory is not passed again
    torch.testing.assert_close(mha(x, memory=None, cache=cache, layer=1), first)
