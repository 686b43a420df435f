"""Which device a script runs on, from its --device flag."""

import torch


class DeviceError(ValueError):
    """A --device the machine cannot serve; the message says what to use instead."""


def pick_device(name: str) -> str:
    """ "auto" -> the first of cuda, mps, cpu that is available; otherwise `name`, checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name not in ("cuda", "mps", "cpu"):
        raise DeviceError(f"--device must be cuda, mps, cpu or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda, but no CUDA GPU is visible; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps, but this machine has no Apple GPU; use --device cpu")
    return name
