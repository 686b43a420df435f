"""RoFormer's long-term decay (Su et al. 2021, section 3.4.3): how large the RoPE attention score
between two tokens can get as their distance grows, for a given head dim and theta."""

import numpy as np


def relative_upper_bound(head_dim: int, theta: float, max_distance: int) -> np.ndarray:
    """(1 / (d/2)) * sum_{j=1}^{d/2} |S_j| with S_j = sum_{k<j} exp(i m theta_k), for m = 0..max_distance."""
    freqs = theta ** (-np.arange(0, head_dim, 2) / head_dim)  # theta_k, k = 0 .. d/2 - 1
    m = np.arange(max_distance + 1)[:, None]
    partial_sums = np.cumsum(np.exp(1j * m * freqs[None, :]), axis=1)  # S_1 .. S_{d/2}
    return np.abs(partial_sums).mean(axis=1)
