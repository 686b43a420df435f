"""AdamW with weight decay on matrices and embeddings only."""

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device):
    """Parameters with 2+ dimensions (linear weights, embedding tables) decay; norm weights do not.
    The fused kernel runs on CUDA, where it is fastest."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")
