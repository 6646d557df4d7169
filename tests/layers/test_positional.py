"""Positional encodings against their papers' formulas and Hugging Face's implementations."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from attnlab.errors import AttnlabError, ConfigError
from attnlab.layers import (
    ALiBiPositional,
    LearnedPositional,
    RotaryPositional,
    SinusoidalPositional,
    build_positional,
)
from attnlab.layers.positional import sinusoid_table

# ---------------------------------------------------------------------------------------------
# Sinusoidal


def paper_sinusoids(positions, d):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), in float64."""
    table = torch.empty(len(positions), d, dtype=torch.float64)
    for row, p in enumerate(positions):
        for col in range(d):
            i = col // 2
            angle = p / 10000 ** (2 * i / d)
            table[row, col] = math.sin(angle) if col % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("d", [8, 7, 16, 1])
def test_sinusoid_table_matches_paper_formula(d):
    positions = list(range(40))
    ours = sinusoid_table(torch.arange(40), d)
    assert ours.shape == (40, d)
    torch.testing.assert_close(ours.double(), paper_sinusoids(positions, d), atol=2e-5, rtol=0)


@pytest.mark.parametrize("d", [12, 9])
def test_sinusoidal_embed_adds_table_at_offset(d):
    pe = SinusoidalPositional(d)
    x = torch.randn(2, 5, d)
    for start in (0, 3, 17):
        expected = x.double() + paper_sinusoids(range(start, start + 5), d)
        torch.testing.assert_close(pe.embed(x, start).double(), expected, atol=2e-5, rtol=0)
    # embedding a suffix at its offset equals the same rows of the full sequence
    full = pe.embed(x)
    torch.testing.assert_close(pe.embed(x[:, 2:], start=2), full[:, 2:])


# ---------------------------------------------------------------------------------------------
# Learned


def test_learned_embed_adds_weight_rows_from_start():
    pe = LearnedPositional(6, max_len=10)
    with torch.no_grad():
        pe.weight.copy_(torch.randn(10, 6))
    x = torch.randn(3, 4, 6)
    for start in (0, 1, 6):
        torch.testing.assert_close(pe.embed(x, start), x + pe.weight[start:start + 4])


def test_learned_and_sinusoidal_embed_per_row_positions():
    positions = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 1], [5, 6, 7, 8]])
    x = torch.randn(3, 4, 6)
    learned = LearnedPositional(6, max_len=10)
    torch.testing.assert_close(learned.embed(x, positions=positions), x + learned.weight[positions])
    sinusoidal = SinusoidalPositional(6)
    for b in range(3):
        expected = x[b].double() + paper_sinusoids(positions[b].tolist(), 6)
        torch.testing.assert_close(sinusoidal.embed(x, positions=positions)[b].double(), expected,
                                   atol=2e-5, rtol=0)
    with pytest.raises(AttnlabError, match="max_len"):
        learned.embed(x, positions=positions + 2)


def test_learned_embed_exactly_to_max_len_is_allowed():
    pe = LearnedPositional(4, max_len=8)
    x = torch.zeros(1, 3, 4)
    torch.testing.assert_close(pe.embed(x, 5), pe.weight[5:8].unsqueeze(0))


@pytest.mark.parametrize(("T", "start"), [(9, 0), (3, 6), (1, 8)])
def test_learned_beyond_max_len_is_one_line_attnlab_error(T, start):
    pe = LearnedPositional(4, max_len=8)
    with pytest.raises(AttnlabError) as info:
        pe.embed(torch.zeros(1, T, 4), start)
    message = str(info.value)
    assert "\n" not in message
    assert "max_len" in message and "8" in message


# ---------------------------------------------------------------------------------------------
# Rotary


def hf_rotary(q, k, start, theta, position_ids=None):
    """Rotate q, k (B, H, T, Dh) with Hugging Face LLaMA's rotary embedding at positions
    start .. start + T - 1 (or at `position_ids` (B, T))."""
    B, H, T, Dh = q.shape
    cfg = LlamaConfig(hidden_size=H * Dh, num_attention_heads=H, num_key_value_heads=H,
                      rope_parameters={"rope_type": "default", "rope_theta": theta},
                      max_position_embeddings=4096)
    rotary = LlamaRotaryEmbedding(cfg)
    if position_ids is None:
        position_ids = torch.arange(start, start + T).expand(B, T)
    cos, sin = rotary(q, position_ids)
    return apply_rotary_pos_emb(q, k, cos, sin)


@pytest.mark.parametrize(("head_dim", "theta"), [(16, 10000.0), (8, 500000.0), (2, 100.0)])
@pytest.mark.parametrize("start", [0, 5, 300])
def test_rope_equals_hf_llama_rotary(head_dim, theta, start):
    q, k = torch.randn(2, 3, 7, head_dim), torch.randn(2, 3, 7, head_dim)
    rope = RotaryPositional(head_dim, theta)
    q_ref, k_ref = hf_rotary(q, k, start, theta)
    torch.testing.assert_close(rope.rotate(q, start), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope.rotate(k, start), k_ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rope.rotate(q, start), rope.rotate(q, start + 1))


def test_rope_per_row_positions_equal_hf_llama_rotary():
    q, k = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2], [40, 41, 42, 43, 44]])
    rope = RotaryPositional(8, 1000.0)
    q_ref, k_ref = hf_rotary(q, k, 0, 1000.0, position_ids=positions)
    torch.testing.assert_close(rope.rotate(q, positions=positions), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope.rotate(k, positions=positions), k_ref, atol=1e-5, rtol=1e-5)


def test_rope_table_growth_keeps_earlier_positions():
    """Asking for a far position first, then near ones (and the other way round) agrees."""
    q = torch.randn(1, 2, 4, 8)
    fresh = RotaryPositional(8)
    near = fresh.rotate(q, 3)
    far = fresh.rotate(q, 1000)  # grows the cached table
    torch.testing.assert_close(fresh.rotate(q, 3), near)
    other = RotaryPositional(8)
    other.rotate(q, 2000)
    torch.testing.assert_close(other.rotate(q, 1000), far)


def test_rope_score_depends_only_on_offset():
    Dh = 16
    rope = RotaryPositional(Dh)
    q, k = torch.randn(Dh, dtype=torch.float64), torch.randn(Dh, dtype=torch.float64)

    def score(m, n):  # query at position m, key at position n
        qm = rope.rotate(q.view(1, 1, 1, Dh).float(), m).double()
        kn = rope.rotate(k.view(1, 1, 1, Dh).float(), n).double()
        return (qm * kn).sum()

    for m, n in [(3, 1), (7, 7), (2, 9)]:
        base = score(m, n)
        for shift in (1, 11, 50):
            torch.testing.assert_close(score(m + shift, n + shift), base, atol=1e-4, rtol=1e-4)
    # and it does change with the offset
    assert not torch.isclose(score(5, 1), score(5, 3), atol=1e-3)


def test_rope_norm_preserving_and_identity_at_zero():
    rope = RotaryPositional(8)
    x = torch.randn(2, 3, 6, 8)
    y = rope.rotate(x, 4)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope.rotate(x[:, :, :1], 0), x[:, :, :1])


@pytest.mark.parametrize("head_dim", [1, 7, 15])
def test_rope_odd_head_dim_is_config_error(head_dim):
    with pytest.raises(ConfigError, match="even"):
        RotaryPositional(head_dim)


def test_rope_nonpositive_theta_is_config_error():
    with pytest.raises(ConfigError, match="rope_theta"):
        RotaryPositional(8, theta=0.0)


# ---------------------------------------------------------------------------------------------
# ALiBi


def bloom_slopes(n_heads):
    """Slopes used by Hugging Face's BLOOM: alibi[h, 0, j] = slope_h * j for an all-ones mask."""
    alibi = build_alibi_tensor(torch.ones(1, 2, dtype=torch.long), n_heads, torch.float32)
    return alibi[:, 0, 1]


def test_alibi_slopes_for_eight_heads_are_papers():
    expected = torch.tensor([2.0 ** -(i + 1) for i in range(8)])  # 1/2, 1/4, ..., 1/256
    torch.testing.assert_close(ALiBiPositional(8).slopes, expected, atol=0, rtol=0)


@pytest.mark.parametrize("n_heads", [1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 24])
def test_alibi_slopes_equal_bloom(n_heads):
    torch.testing.assert_close(ALiBiPositional(n_heads).slopes, bloom_slopes(n_heads))


def test_alibi_bias_is_negative_slope_times_distance():
    H, Tq, Tk = 6, 4, 7
    alibi = ALiBiPositional(H)
    q_idx, k_idx = torch.arange(Tk - Tq, Tk), torch.arange(Tk)
    bias = alibi.attention_bias(q_idx, k_idx)
    assert bias.shape == (H, Tq, Tk)
    slopes = bloom_slopes(H)
    for h in range(H):
        for i in range(Tq):
            for j in range(Tk):
                expected = -slopes[h] * abs(int(q_idx[i]) - int(k_idx[j]))
                torch.testing.assert_close(bias[h, i, j], expected)


def test_alibi_bias_batched_leading_dims():
    H = 4
    alibi = ALiBiPositional(H)
    q_idx = torch.randint(0, 50, (2, 3, 5))  # (..., Tq) with leading dims (2, 3)
    k_idx = torch.randint(0, 50, (2, 3, 9))
    bias = alibi.attention_bias(q_idx, k_idx)
    assert bias.shape == (H, 2, 3, 5, 9)
    dist = (q_idx[..., :, None] - k_idx[..., None, :]).abs().float()
    for h in range(H):
        torch.testing.assert_close(bias[h], -alibi.slopes[h] * dist)


# ---------------------------------------------------------------------------------------------
# build_positional


def test_build_positional_returns_each_kind():
    kw = {"d_model": 32, "n_heads": 4, "max_len": 16, "rope_theta": 1234.0}
    assert isinstance(build_positional("sinusoidal", **kw), SinusoidalPositional)
    learned = build_positional("learned", **kw)
    assert isinstance(learned, LearnedPositional) and learned.weight.shape == (16, 32)
    rope = build_positional("rope", **kw)
    assert isinstance(rope, RotaryPositional)
    assert rope.head_dim == 8 and rope.theta == 1234.0
    alibi = build_positional("alibi", **kw)
    assert isinstance(alibi, ALiBiPositional) and alibi.slopes.shape == (4,)
    x = torch.randn(1, 3, 32)
    torch.testing.assert_close(build_positional("none", **kw).embed(x), x)


@pytest.mark.parametrize(("name", "nearest"),
                         [("rop", "rope"), ("learnt", "learned"), ("alibl", "alibi"),
                          ("sinusoid", "sinusoidal")])
def test_build_positional_unknown_suggests_nearest(name, nearest):
    with pytest.raises(ConfigError) as info:
        build_positional(name, d_model=8, n_heads=2, max_len=4)
    message = str(info.value)
    assert f"did you mean '{nearest}'" in message
    assert name in message and "\n" not in message


def test_negative_positions_are_an_error_not_a_wraparound():
    from attnlab.errors import AttnlabError
    from attnlab.layers.positional import LearnedPositional, RotaryPositional

    with pytest.raises(AttnlabError, match="positions must be >= 0"):
        LearnedPositional(4, 8).embed(torch.zeros(1, 2, 4), positions=torch.tensor([[-1, 0]]))
    with pytest.raises(AttnlabError, match="positions must be >= 0"):
        RotaryPositional(4).rotate(torch.zeros(1, 1, 1, 4), positions=torch.tensor([[-1]]))


def test_float64_models_get_float64_angles_far_from_the_start():
    """At position 20,000 float32 angles are off by ~1e-4; a float64 model gets exact ones."""
    start, T, dim = 20_000, 5, 16
    pos = torch.arange(start, start + T, dtype=torch.float64)
    x = torch.randn(1, 2, T, dim, dtype=torch.float64)
    inv = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.cat([pos[:, None] * inv, pos[:, None] * inv], dim=-1)  # rotate-half layout
    half = torch.cat([-x[..., dim // 2:], x[..., :dim // 2]], dim=-1)
    expected = x * angles.cos() + half * angles.sin()
    assert torch.allclose(RotaryPositional(dim).rotate(x, start), expected, atol=1e-12)
    table = torch.stack([(pos[:, None] * inv).sin(), (pos[:, None] * inv).cos()], -1).flatten(1)
    zeros = torch.zeros(1, T, dim, dtype=torch.float64)
    assert torch.allclose(SinusoidalPositional(dim).embed(zeros, start)[0], table, atol=1e-12)
    # float32 models keep float32 angles (pretrained models' outputs stay equal to HF's)
    assert RotaryPositional(dim).rotate(x.float(), start).dtype == torch.float32
