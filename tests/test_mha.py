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
    torch.testing.assert_close(mha(x, causal=True), mha(x, causal=True))
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


def test_kv_cache_reorder_picks_rows():
    cache = KVCache(max_len=8)
    k, v = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    cache.update(0, k, v)
    cache.cross[0] = (k.clone(), v.clone())
    index = torch.tensor([2, 0, 2])
    cache.reorder(index)
    k_all, v_all = cache.update(0, torch.zeros(3, 2, 1, 5), torch.ones(3, 2, 1, 5))
    torch.testing.assert_close(k_all[:, :, :4], k[index])
    torch.testing.assert_close(v_all[:, :, :4], v[index])
    assert (k_all[:, :, 4] == 0).all() and (v_all[:, :, 4] == 1).all()
    torch.testing.assert_close(cache.cross_kv(0)[0], k[index])
    torch.testing.assert_close(cache.cross_kv(0)[1], v[index])


def test_kv_cache_reorders_within_groups_like_eager_gathers():
    """Lazy gathers into reused buffers, skipping the shared prefix, equal gathering everything each step."""
    g = torch.Generator().manual_seed(0)
    groups, per, prefix = 2, 3, 4
    cache, rows = KVCache(max_len=12), groups * per
    k = torch.randn(groups, 2, prefix, 5, generator=g).repeat_interleave(per, 0)  # each group shares a prefix
    v = torch.randn(groups, 2, prefix, 5, generator=g).repeat_interleave(per, 0)
    cross = (torch.randn(groups, 2, 7, 5, generator=g).repeat_interleave(per, 0),) * 2
    cache.update(0, k, v)
    cache.cross[0] = cross
    ref_k, ref_v = k, v
    for step in range(6):
        index = torch.cat([grp * per + torch.randint(0, per, (per,), generator=g) for grp in range(groups)])
        cache.reorder(index, shared=prefix)
        if step % 2:  # two reorders between reads compose
            index2 = torch.cat([grp * per + torch.randint(0, per, (per,), generator=g) for grp in range(groups)])
            cache.reorder(index2, shared=prefix)
            index = index[index2]
        new_k, new_v = torch.randn(rows, 2, 1, 5, generator=g), torch.randn(rows, 2, 1, 5, generator=g)
        ref_k, ref_v = torch.cat([ref_k[index], new_k], 2), torch.cat([ref_v[index], new_v], 2)
        k_all, v_all = cache.update(0, new_k, new_v)
        assert torch.equal(k_all, ref_k) and torch.equal(v_all, ref_v)
        assert torch.equal(cache.cross_kv(0)[0], cross[0])


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
