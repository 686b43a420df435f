"""RoPE against the RoFormer paper's own definition (Su et al., 2021), not against itself."""

import math

import pytest
import torch

from model.args import ModelArgs
from model.position import RotaryEmbedding, apply_rope, rope_frequencies, rope_tables


def rope_at(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0, **scaling) -> torch.Tensor:
    """Our apply_rope for x [B, T, H, D] placed at the given positions [T]."""
    freqs = rope_frequencies(x.shape[-1], theta, **scaling)
    angles = positions.float()[:, None] * freqs[None, :]
    return apply_rope(x, rope_tables(angles.cos(), angles.sin()))


def roformer_complex(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoFormer eq. (34) in complex form, in float64: pair (x[2i], x[2i+1]) read as the complex
    number x[2i] + j x[2i+1] and multiplied by exp(j * m * theta^(-2i/d))."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64), positions.double()[:, None] * freqs)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(z * rotation[:, None, :]).flatten(-2)


def test_equals_the_complex_number_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 50, 3, 16)
    positions = torch.arange(50) * 7 + 3
    assert torch.allclose(rope_at(x, positions).double(), roformer_complex(x, positions), atol=2e-5)


def test_bf16_input_is_rotated_in_float32_and_rounded_once():
    torch.manual_seed(7)
    x = torch.randn(2, 40, 3, 16).bfloat16()
    positions = torch.arange(40) * 31
    rotated = rope_at(x, positions)
    assert rotated.dtype == torch.bfloat16
    assert torch.equal(rotated, rope_at(x.float(), positions).bfloat16())  # float32 is checked against RoFormer above


def test_preserves_norms():
    torch.manual_seed(1)
    x = torch.randn(1, 64, 4, 32)
    rotated = rope_at(x, torch.arange(64))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)


@pytest.mark.parametrize("shift", [1, 5, 37, 200])
def test_score_depends_only_on_relative_position(shift):
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, 64), torch.randn(1, 1, 1, 64)
    m, n = 11, 4
    score = (rope_at(q, torch.tensor([m])) * rope_at(k, torch.tensor([n]))).sum()
    shifted = (rope_at(q, torch.tensor([m + shift])) * rope_at(k, torch.tensor([n + shift]))).sum()
    assert torch.allclose(score, shifted, atol=1e-4)


def test_first_pair_turns_one_radian_per_position():
    x = torch.zeros(1, 1, 1, 8)
    x[..., 0] = 1.0  # the unit vector along the first pair's real axis
    for p in [0, 1, 2, 3, 100]:
        out = rope_at(x, torch.tensor([p]))[0, 0, 0]
        assert math.isclose(out[0].item(), math.cos(p), abs_tol=1e-6)
        assert math.isclose(out[1].item(), math.sin(p), abs_tol=1e-6)
        assert torch.all(out[2:] == 0)


def test_scaling_factor_one_changes_nothing():
    plain = rope_frequencies(64, 10000.0)
    assert torch.equal(rope_frequencies(64, 10000.0, scaling="linear", factor=1.0), plain)
    assert torch.equal(rope_frequencies(64, 10000.0, scaling="ntk", factor=1.0), plain)


def test_linear_scaling_maps_position_p_to_the_angle_of_p_over_s():
    torch.manual_seed(3)
    x = torch.randn(1, 8, 2, 32)
    positions = torch.arange(8) * 4
    scaled = rope_at(x, positions, scaling="linear", factor=4.0)
    assert torch.allclose(scaled, rope_at(x, positions / 4), atol=1e-6)


def test_ntk_scaling_raises_the_base():
    d, s = 64, 8.0
    expected = 1.0 / (10000.0 * s ** (d / (d - 2))) ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    assert torch.allclose(rope_frequencies(d, 10000.0, scaling="ntk", factor=s).double(), expected, rtol=1e-6)
    # the fastest pair (local order) is untouched; the slowest one slows by the whole factor
    assert rope_frequencies(d, 10000.0, scaling="ntk", factor=s)[0] == 1.0
    ratio = rope_frequencies(d, 10000.0)[-1] / rope_frequencies(d, 10000.0, scaling="ntk", factor=s)[-1]
    assert math.isclose(ratio.item(), s, rel_tol=1e-5)


def test_table_stays_float32_when_the_model_is_cast():
    rope = RotaryEmbedding(ModelArgs(dim=64, n_heads=4, max_seq_len=4096)).to(torch.bfloat16)
    assert rope.cos.dtype == torch.float32
    cos, sin = rope(4000, 1)
    assert math.isclose(cos[0, 0, 0, 0].item(), math.cos(4000), abs_tol=1e-3)
    assert math.isclose(sin[0, 0, 0, 1].item(), math.sin(4000), abs_tol=1e-3)


def test_sinusoidal_table_is_vaswanis_at_the_embeddings_scale():
    from model.position import SinusoidalPositionEmbedding

    table = SinusoidalPositionEmbedding(50, 16).table.double()
    pos, i = torch.arange(50, dtype=torch.float64)[:, None], torch.arange(8, dtype=torch.float64)[None, :]
    angle = pos / 10000 ** (2 * i / 16)  # Attention Is All You Need, section 3.5
    assert torch.allclose(table[:, 0::2], 0.02 * math.sqrt(2) * torch.sin(angle), atol=1e-7)
    assert torch.allclose(table[:, 1::2], 0.02 * math.sqrt(2) * torch.cos(angle), atol=1e-7)
    assert abs(table.pow(2).mean().sqrt().item() - 0.02) < 1e-3  # the RMS of a new token embedding
