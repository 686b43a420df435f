"""The two per-token layers of a LLaMA block: RMSNorm and the SwiGLU feed-forward."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and cast back to x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim] -> [..., dim]"""
        # F.rms_norm computes in float32 and rounds once to x's dtype (one fused kernel on CUDA); the weight is
        # applied after that rounding, as in Meta's code
        return F.rms_norm(x, self.weight.shape, eps=self.eps) * self.weight


def dropout_layer(p: float) -> nn.Module:
    """nn.Dropout(p), or a pass-through when p is 0 so an undropped forward does not dispatch a no-op per layer."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """LLaMA's SwiGLU width: 4*dim, two thirds of it, times the multiplier, rounded up to multiple_of."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.dropout = dropout_layer(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, dim] -> [B, T, dim]"""
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))
