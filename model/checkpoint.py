"""Checkpoint folders: weights in safetensors, config in JSON, never a pickle we did not write.

A checkpoint folder holds
    model.safetensors   the weights (a tied output layer is stored once, as tok_embeddings)
    config.json         {"model": ModelArgs fields, ...the rest of the run's config}
    tokenizer.model     the sentencepiece model the weights were trained with
    optimizer.pt        (resumable checkpoints) the optimizer state, read with weights_only=True
    state.json          (resumable checkpoints) step, tokens seen, data position, RNG states
A run folder keeps its checkpoints as checkpoints/step_NNNNNNN/; `resolve` turns a run folder
into its latest complete checkpoint, so every script accepts either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .args import ModelArgs
from .transformer import Transformer

WEIGHTS, CONFIG, TOKENIZER, OPTIMIZER, STATE = (
    "model.safetensors",
    "config.json",
    "tokenizer.model",
    "optimizer.pt",
    "state.json",
)
CHECKPOINTS = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or corrupt; the message says which and what to do."""


def step_folder(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary folders of interrupted writes are skipped)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("step_") and (p / WEIGHTS).is_file())


def resolve(path: str | Path) -> Path:
    """The checkpoint folder that `path` names: itself, or a run folder's latest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run folder (runs/NAME) or a checkpoint folder")
    if (path / WEIGHTS).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint in {path} (no {WEIGHTS} and no {CHECKPOINTS}/step_*); train one first")
    return found[-1]


def save(
    folder: str | Path,
    model_state: dict[str, torch.Tensor],
    config: dict,
    tokenizer_file: str | Path | None = None,
    optimizer_state: dict | None = None,
    train_state: dict | None = None,
) -> Path:
    """Write a checkpoint folder atomically: everything goes into a temporary sibling folder that
    is renamed into place once complete, so a crash leaves the previous checkpoint as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
        if config["model"].get("tie_embeddings"):
            state.pop("output.weight", None)
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER)
        if train_state is not None:
            (tmp / STATE).write_text(json.dumps(train_state) + "\n")
        if folder.exists():  # replacing: move the old one aside first, delete it only once the new one is in place
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_config(folder: str | Path) -> dict:
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        ModelArgs.from_dict(config["model"])
    except FileNotFoundError:
        raise CheckpointError(f"{folder / CONFIG} is missing; the checkpoint is incomplete") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG} is not a valid checkpoint config ({e})") from None
    return config


def load_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e}); use another checkpoint") from None


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **overrides
) -> tuple[Transformer, dict]:
    """Build the model of a checkpoint (or a run's latest one) and load its weights.

    `overrides` replace ModelArgs fields that do not change the weights' shapes, e.g.
    max_batch_size, max_seq_len (for RoPE or sinusoidal), rope_scaling. Returns (model in eval
    mode, the checkpoint's config).
    """
    folder = resolve(path)
    config = load_config(folder)
    try:
        args = ModelArgs.from_dict({**config["model"], **overrides})
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    state = load_weights(folder)
    if args.tie_embeddings and "tok_embeddings.weight" in state:
        state["output.weight"] = state["tok_embeddings.weight"]
    model = Transformer(args)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(f"{folder / WEIGHTS} does not fit its config.json: {detail}") from None
    model = model.to(device=device, dtype=dtype)
    return model.eval(), config


def load_optimizer_state(folder: str | Path) -> dict:
    path = Path(folder) / OPTIMIZER
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; this checkpoint cannot be resumed (weights only)") from None
    except Exception as e:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}); resume from an earlier checkpoint") from None


def load_train_state(folder: str | Path) -> dict:
    path = Path(folder) / STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; this checkpoint cannot be resumed (weights only)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is corrupt ({e}); resume from an earlier checkpoint") from None


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints of a run."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
