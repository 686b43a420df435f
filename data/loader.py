"""Batches from token shards: memory-mapped, deterministic and resumable, split across DDP ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .prepare import SPLITS, read_meta


def open_shards(data_dir: str | Path, tokenizer_sha256: str | None = None, vocab_size: int | None = None) -> dict:
    """{'train': memmap, 'val': memmap} of a prepared data dir, after checking them against
    meta.json and, when given, the tokenizer and vocabulary the model uses."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if meta is None:
        raise DataError(
            f"no meta.json in {data_dir}; prepare the data first: python -m data.prepare --data.dir {data_dir}"
        )
    if tokenizer_sha256 is not None and meta["tokenizer_sha256"] != tokenizer_sha256:
        raise DataError(
            f"the shards in {data_dir} were made with another tokenizer (sha256 {meta['tokenizer_sha256'][:12]}…, "
            f"not {tokenizer_sha256[:12]}…); prepare them again or point --data.dir elsewhere"
        )
    if vocab_size is not None and meta["vocab_size"] > vocab_size:
        raise DataError(
            f"the shards in {data_dir} hold ids up to {meta['vocab_size'] - 1} "
            f"but the model's vocab_size is {vocab_size}; set --model.vocab_size {meta['vocab_size']}"
        )
    dtype = np.dtype(meta["dtype"])
    shards = {}
    for split in SPLITS:
        path = data_dir / f"{split}.bin"
        if not path.is_file():
            raise DataError(f"{path} is missing; prepare the data again: python -m data.prepare --data.dir {data_dir}")
        size = path.stat().st_size
        if size % dtype.itemsize or size // dtype.itemsize != meta[f"{split}_tokens"]:
            raise DataError(
                f"{path} holds {size} bytes, not the {meta[f'{split}_tokens']} {dtype.name} tokens meta.json records "
                "(truncated?); prepare the data again"
            )
        shards[split] = np.memmap(path, dtype=dtype, mode="r")
    return shards


def _check_length(tokens: np.ndarray, seq_len: int, what: str) -> None:
    if len(tokens) < seq_len + 1:
        raise DataError(
            f"the {what} shard holds {len(tokens)} tokens, fewer than one sequence of max_seq_len + 1 = {seq_len + 1}; "
            "lower --model.max_seq_len or add text"
        )


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of the windows beginning at `starts`: two [len(starts), seq_len] int64."""
    windows = torch.from_numpy(np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


class TrainBatches:
    """Random windows of seq_len + 1 tokens, a pure function of (seed, step, micro-step, rank).

    Each optimizer step draws accum_steps x world_size x batch_size window starts from a
    generator seeded with (seed, step); rank r's micro-step m takes row [m, r]. So resuming at a
    step needs nothing but the step, and world_size ranks with batch B see exactly the windows
    that one process with batch world_size * B would.
    """

    def __init__(self, tokens, batch_size, seq_len, seed=0, rank=0, world_size=1, accum_steps=1):
        _check_length(tokens, seq_len, "train")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps

    def get(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [batch_size, seq_len] int64, on the CPU."""
        rng = np.random.default_rng([self.seed, step])
        highest = len(self.tokens) - self.seq_len - 1
        starts = rng.integers(0, highest + 1, size=(self.accum_steps, self.world_size, self.batch_size))
        return _windows(self.tokens, starts[micro, self.rank], self.seq_len)


def val_batches(tokens, batch_size: int, seq_len: int, max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed set of validation batches, the same for every run and seed, so evaluations compare.

    Up to max_batches x batch_size non-overlapping windows spread evenly over the shard.
    """
    _check_length(tokens, seq_len, "val")
    fits = (len(tokens) - 1) // seq_len
    count = min(max_batches * batch_size, fits)
    starts = np.linspace(0, len(tokens) - seq_len - 1, count).astype(np.int64) if count > 1 else np.zeros(1, np.int64)
    return [_windows(tokens, starts[i : i + batch_size], seq_len) for i in range(0, count, batch_size)]
