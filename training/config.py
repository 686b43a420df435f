"""The `[train]` and `[log]` sections, and the whole run config that train.py reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import configs
from data.config import DataConfig
from model.args import ModelArgs

DEFAULT_CONFIG = configs.CONFIG_DIR / "stories15M.toml"


@dataclass
class TrainConfig:
    batch_size: int = 32  # sequences per device per micro-step
    tokens_per_step: int = 0  # tokens per optimizer step, reached by gradient accumulation; 0: one micro-step
    max_steps: int = 1000
    lr: float = 5e-4
    min_lr: float = 5e-5  # the cosine decay ends here, at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices and embeddings only, not on norm weights
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0: no clipping
    eval_interval: int = 100
    eval_batches: int = 20
    sample_tokens: int = 64  # length of the story sampled at each evaluation; 0: none
    sample_prompt: str = "Once upon a time"
    ckpt_interval: int = 500
    keep_checkpoints: int = 2
    seed: int = 1337
    init_from: str = ""  # a checkpoint to start from (weights only, fresh optimizer)
    dtype: str = "auto"  # "auto" (bfloat16 autocast on CUDA, float32 elsewhere) | "float32" | "bfloat16"
    compile: bool | None = None  # torch.compile; None: on CUDA only
    parallel: str = "ddp"  # under torchrun: "ddp", or "fsdp" to shard parameters and optimizer state

    def __post_init__(self):
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"train.dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"train.parallel must be ddp or fsdp, got {self.parallel!r}")
        for name in ("batch_size", "max_steps", "eval_interval", "eval_batches", "ckpt_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr must be between 0 and train.lr ({self.lr}), got {self.min_lr}")


@dataclass
class LogConfig:
    wandb: bool = False
    wandb_project: str = "tinyllama"
    wandb_run_name: str = ""  # empty: the run folder's name
    log_interval: int = 10  # steps between rows of metrics.jsonl and bar updates


SECTIONS = {"model": ModelArgs, "data": DataConfig, "train": TrainConfig, "log": LogConfig}


def load_run_config(base: str | Path | dict | None, overrides: list[str]) -> dict:
    """{'model': ModelArgs, 'data': DataConfig, 'train': TrainConfig, 'log': LogConfig}."""
    return configs.load(SECTIONS, base, overrides)
