"""Finished runs as compare.py sees them: config, metrics curve, checkpoint, grouped by variant."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from model import checkpoint as ckpt

from . import CompareError


@dataclass
class Run:
    path: Path
    checkpoint: Path
    config: dict
    metrics: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def variant(self) -> str:
        """What is being compared: the position embedding."""
        return self.config["model"]["pos_embedding"]

    @property
    def context(self) -> int:
        return self.config["model"]["max_seq_len"]

    def val_curve(self) -> tuple[list[int], list[float]]:
        rows = [r for r in self.metrics if "val_loss" in r]
        return [r["tokens"] for r in rows], [r["val_loss"] for r in rows]

    @property
    def final_val_loss(self) -> float:
        return self.val_curve()[1][-1]

    @property
    def tokens_per_s(self) -> float:
        """Training speed, leaving out the first logged window (compilation, warm-up)."""
        speeds = [r["tokens_per_s"] for r in self.metrics if "tokens_per_s" in r]
        return statistics.mean(speeds[1:] or speeds)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    metrics_file = path / "metrics.jsonl"
    if not metrics_file.is_file():
        raise CompareError(f"{path} has no metrics.jsonl; give run folders that train.py wrote")
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not any("val_loss" in r for r in metrics):
        raise CompareError(f"{path} has no evaluation yet; train it past train.eval_interval")
    folder = ckpt.resolve(path)
    return Run(path, folder, ckpt.load_config(folder), metrics)


def mean_and_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    if len(values) == 1:
        return values[0], None
    return statistics.mean(values), statistics.stdev(values)


def by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    order = ["rope", "learned", "sinusoidal", "none"]
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (order.index(r.variant) if r.variant in order else 9, r.name)):
        groups.setdefault(run.variant, []).append(run)
    return groups


def perplexity(loss: float) -> float:
    return math.exp(loss)
