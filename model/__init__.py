"""A LLaMA-style decoder in plain PyTorch: `from model import ModelArgs, Transformer`."""

from .args import ModelArgs
from .transformer import Transformer

__all__ = ["ModelArgs", "Transformer"]
