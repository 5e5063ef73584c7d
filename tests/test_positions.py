"""RoPE (relative property, transformers' Llama rotary), sinusoidal table, ALiBi slopes and bias."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from tinylm.nn.positions import RotaryEmbedding, SinusoidalPositionEmbedding, alibi_bias, alibi_slopes


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum().item()

    for m, n in [(5, 2), (0, 7), (3, 3)]:
        for shift in (1, 13, 100):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert abs(score(5, 2) - score(2, 5)) > 1e-3  # but it does depend on m - n (and its sign)


@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_rope_matches_transformers_llama(base):
    B, H, T, D = 2, 3, 7, 16
    cfg = LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=base, max_position_embeddings=64)
    hf_rope = LlamaRotaryEmbedding(cfg)
    rope = RotaryEmbedding(D, base=base)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)

    pos_bt = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 3, 4]])  # (B, T), as left padding gives
    cos, sin = hf_rope(q, pos_bt)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rope(q, pos_bt), q_hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rope(k, pos_bt), k_hf, rtol=1e-5, atol=1e-5)

    pos_t = torch.arange(10, 10 + T)  # (T,), shared by the batch
    cos, sin = hf_rope(q, pos_t[None].expand(B, T))
    q_hf, _ = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rope(q, pos_t), q_hf, rtol=1e-5, atol=1e-5)


def test_rope_preserves_norm_and_is_identity_at_zero():
    rope = RotaryEmbedding(32)
    x = torch.randn(2, 4, 9, 32)
    y = rope(x, torch.arange(100, 109))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(y, x)
    torch.testing.assert_close(rope(x, torch.zeros(9, dtype=torch.long)), x)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(15)


@pytest.mark.parametrize("dim", [16, 33])
def test_sinusoidal_table_matches_vaswani_formula(dim):
    pe = SinusoidalPositionEmbedding(50, dim)
    expected = torch.zeros(50, dim, dtype=torch.float64)
    for t in range(50):
        for c in range(dim):
            i = c // 2
            angle = t / 10000 ** (2 * i / dim)
            expected[t, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    torch.testing.assert_close(pe(torch.arange(50)).double(), expected, rtol=0, atol=2e-5)
    assert pe(torch.tensor([[3, 4], [0, 1]])).shape == (2, 2, dim)
    torch.testing.assert_close(pe(torch.tensor([[3, 0]]))[0, 1], pe.pe[0])
    assert "pe" not in pe.state_dict()  # non-persistent buffer


def test_alibi_slopes_paper_values():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    # H = 6: the 4 power-of-two slopes, then every other slope of the 8-head sequence
    expected6 = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(expected6))
    assert alibi_slopes(12).shape == (12,)


def test_alibi_bias_shape_and_values():
    bias = alibi_bias(8, torch.arange(4), torch.arange(4))
    assert bias.shape == (8, 4, 4)
    for h in range(8):
        for i in range(4):
            for j in range(4):
                assert bias[h, i, j].item() == pytest.approx(-(2.0 ** -(h + 1)) * abs(i - j))

    q_pos = torch.tensor([[5, 6], [2, 3]])  # (B, Tq): cached decoding with per-row positions
    k_pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 2, 3]])
    batched = alibi_bias(2, q_pos, k_pos)
    assert batched.shape == (2, 2, 2, 7)
    slopes = [2.0**-4, 2.0**-8]  # H = 2
    for b in range(2):
        for h in range(2):
            expected = -slopes[h] * (q_pos[b][:, None] - k_pos[b][None, :]).abs().float()
            torch.testing.assert_close(batched[b, h], expected)
