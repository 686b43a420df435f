"""The training objective."""

import torch
import torch.nn.functional as F


def next_token_loss(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's next-token predictions: inputs, targets [B, T] -> scalar.

    Compiled together with the model (train.py compiles this function, not the model alone), so
    inductor fuses the softmax into the output layer's epilogue instead of writing float32 logits
    of [B*T, vocab] to memory and reading them back.
    """
    return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
