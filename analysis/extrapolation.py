"""Validation loss at other context lengths than the training one, and along the positions of a window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.errors import DataError
from data.loader import open_shards
from data.tokenizer import Tokenizer
from model import checkpoint as ckpt
from model.sampling import generate

from . import CompareError
from .runs import Run

FACTORS = (0.5, 1.0, 2.0, 4.0)


@dataclass
class LengthResult:
    method: str  # "plain", "linear" (position interpolation) or "ntk", the latter two for RoPE only
    factor: float
    length: int
    loss: float | None  # None when the model cannot be evaluated at that length
    by_position: np.ndarray | None  # [length] mean loss at each position
    note: str = ""


def validation_tokens(run: Run) -> tuple[np.ndarray, Tokenizer]:
    tokenizer = Tokenizer(run.checkpoint / ckpt.TOKENIZER)
    data_dir = Path(run.config["data"]["dir"])
    try:
        return open_shards(data_dir, tokenizer.sha256)["val"], tokenizer
    except DataError as e:
        raise CompareError(f"{run.name}: its validation data is not usable ({e})") from None


def bytes_per_token(tokens: np.ndarray, tokenizer: Tokenizer) -> float:
    """UTF-8 bytes of text per token over the shard ('▁' counts as one space, byte pieces as one byte,
    bos and eos as none), so a loss per token converts to bits per byte, comparable across tokenizers."""
    sp = tokenizer.sp
    lengths = np.array(
        [
            0 if sp.is_control(i) else 1 if sp.is_byte(i) else len(sp.id_to_piece(i).replace("▁", " ").encode())
            for i in range(sp.vocab_size())
        ]
    )
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=len(lengths))
    return float((counts * lengths).sum() / len(tokens))


def bits_per_byte(loss: float, bytes_per_tok: float) -> float:
    return loss / math.log(2) / bytes_per_tok


@torch.no_grad()
def position_losses(model, tokens: np.ndarray, length: int, windows: int, batch_size: int = 8) -> np.ndarray:
    """Mean next-token loss at each position 0..length-1 over `windows` windows spread evenly over the shard."""
    starts = np.linspace(0, len(tokens) - length - 1, windows).astype(np.int64)
    total = torch.zeros(length, dtype=torch.float64)
    for i in range(0, windows, batch_size):
        chunk = np.stack([tokens[s : s + length + 1] for s in starts[i : i + batch_size]]).astype(np.int64)
        x, y = torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])
        losses = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")  # [B, length]
        total += losses.double().sum(0)
    return (total / windows).numpy()


def evaluate_lengths(run: Run, tokens: np.ndarray, windows: int = 32, factors=FACTORS) -> list[LengthResult]:
    """Loss at each factor x the training context; for RoPE also with linear and NTK-aware scaling by that factor."""
    results = []
    methods = ["plain"] + (["linear", "ntk"] if run.variant == "rope" else [])
    for method in methods:
        for factor in factors:
            length = int(run.context * factor)
            if method != "plain" and factor <= 1:
                continue  # scaling only matters past the training length
            if run.variant == "learned" and length > run.context:
                note = f"a learned table has rows for {run.context} positions only"
                results.append(LengthResult(method, factor, length, None, None, note))
                continue
            if length + 1 > len(tokens):
                results.append(LengthResult(method, factor, length, None, None, "validation shard too short"))
                continue
            scaling = {} if method == "plain" else {"rope_scaling": method, "rope_scaling_factor": factor}
            model, _ = ckpt.load_model(run.checkpoint, max_seq_len=max(length, run.context), **scaling)
            by_position = position_losses(model, tokens, length, windows)
            results.append(LengthResult(method, factor, length, float(by_position.mean()), by_position))
    return results


def sample(run: Run, prompt: str, seed: int, max_new_tokens: int = 120) -> str:
    model, _ = ckpt.load_model(run.checkpoint, max_batch_size=1)
    tokenizer = Tokenizer(run.checkpoint / ckpt.TOKENIZER)
    [completion] = generate(model, tokenizer, [prompt], max_new_tokens, temperature=0.8, top_k=40, seed=seed)
    return prompt + completion.text
