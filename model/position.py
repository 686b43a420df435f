"""Where a token is: rotary embeddings (RoPE) and the absolute embeddings they are compared with.

RoPE follows Meta's convention: the head dimension is read as consecutive pairs
(x[2i], x[2i+1]), and pair i at position p is rotated by the angle p * theta^(-2i/d).
"""

import math

import torch
from torch import nn

from .args import ModelArgs


def rope_frequencies(head_dim: int, theta: float, scaling: str | None = None, factor: float = 1.0) -> torch.Tensor:
    """The rotation speed of each pair, in radians per position: [head_dim // 2], float32.

    scaling="linear" (position interpolation) divides every angle by `factor`, so position p
    turns like p / factor; scaling="ntk" raises the base instead, which keeps the fastest pairs
    (local order) intact and slows the slowest ones by the full factor.
    """
    if scaling == "ntk":
        theta = theta * factor ** (head_dim / (head_dim - 2))
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if scaling == "linear":
        freqs = freqs / factor
    return freqs.float()


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The angles' cos, sin [T, D // 2] laid out for apply_rope: (cos, cos) and (-sin, sin) per pair,
    [T, 1, D // 2, 2] each, so that they broadcast over batch and heads."""
    return torch.stack((cos, cos), dim=-1)[:, None], torch.stack((-sin, sin), dim=-1)[:, None]


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate each pair (x[2i], x[2i+1]) of x by its angle: (a, b) -> (a cos - b sin, a sin + b cos).

    x: [B, T, H, D]; rope: the two tables of rope_tables, [T, 1, D // 2, 2] (float32). Returns x's
    shape and dtype; the rotation itself is computed in float32. Written as
    (a, b) * (cos, cos) + (b, a) * (-sin, sin) it is four element-wise kernels; pulling the pairs
    apart, rotating them and stacking them again is seven, and eager decoding launches it twice per layer.
    """
    cos, sin = rope
    pairs = x.unflatten(-1, (-1, 2))  # multiplied by the float32 tables, a bf16 x is widened inside the kernel
    # (b, a) by stacking, not pairs.flip(-1): inductor's C++ code for a flip made a compiled CPU decode step 10% slower
    swapped = torch.stack(pairs.unbind(-1)[::-1], dim=-1)
    return (pairs * cos + swapped * sin).flatten(-2).type_as(x)


class Float32Table(nn.Module):
    """A module whose buffers are a function of its arguments, kept in float32 on any device.

    `model.to(torch.bfloat16)` would otherwise round position tables (a position near 2000
    loses two decimal digits of angle in bf16). Rebuilding after every move also makes a model
    built on the meta device get correct tables when it is materialised with `to_empty`.
    """

    def build(self, device: torch.device | None) -> None:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.build(next(self.buffers()).device)
        return self


class RotaryEmbedding(Float32Table):
    """apply_rope's tables for positions 0..max_seq_len-1: buffers cos, sin of shape
    [max_seq_len, 1, head_dim // 2, 2], laid out by rope_tables."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.build(None)

    def build(self, device):
        args = self.args
        freqs = rope_frequencies(args.head_dim, args.rope_theta, args.rope_scaling, args.rope_scaling_factor)
        angles = torch.outer(torch.arange(args.max_seq_len, dtype=torch.float32), freqs).to(device)
        cos, sin = rope_tables(angles.cos(), angles.sin())
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables for positions start..start+length-1: two [length, 1, head_dim // 2, 2] tensors."""
        return self.cos[start : start + length], self.sin[start : start + length]


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s encoding: [num_positions, dim] with sin in even and cos in odd columns."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return table.float()


class SinusoidalPositionEmbedding(Float32Table):
    """Fixed absolute embeddings added to the token embeddings: buffer table [max_seq_len, dim].

    The table is scaled so each component has the RMS of a freshly initialised token embedding
    (0.02). Raw sines (RMS 0.71) would drown the token identities at the start of training;
    Vaswani et al. strike the same balance the other way, multiplying embeddings by sqrt(dim).
    """

    SCALE = 0.02 * math.sqrt(2)

    def __init__(self, max_seq_len: int, dim: int):
        super().__init__()
        self.max_seq_len, self.dim = max_seq_len, dim
        self.build(None)

    def build(self, device):
        table = self.SCALE * sinusoidal_table(self.max_seq_len, self.dim)
        self.register_buffer("table", table.to(device), persistent=False)

    def forward(self, start: int, length: int) -> torch.Tensor:
        """[length, dim] for positions start..start+length-1."""
        return self.table[start : start + length]


class LearnedPositionEmbedding(nn.Module):
    """A trained table of absolute embeddings, one row per position: weight [max_seq_len, dim]."""

    def __init__(self, max_seq_len: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_seq_len, dim))

    def forward(self, start: int, length: int) -> torch.Tensor:
        """[length, dim] for positions start..start+length-1."""
        return self.weight[start : start + length]
