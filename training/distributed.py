"""Running under torchrun: process group, model wrapping (DDP or FSDP2), full state dicts.

Outside torchrun (no WORLD_SIZE in the environment) every function here is a no-op for a
single process, so train.py has one code path.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if there is one; returns it and this process's device.

    device: "cuda", "cpu", "mps". Under torchrun each process takes cuda:LOCAL_RANK.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(), torch.device(device)
    d = Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device == "cuda":
        torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", d.local_rank))
        return d, torch.device("cuda", d.local_rank)
    dist.init_process_group("gloo")
    return d, torch.device(device)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.barrier()  # gloo can abort in destroy_process_group while a peer is still sending
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def wrap(model: nn.Module, d: Dist, parallel: str, device: torch.device) -> nn.Module:
    """DDP, or FSDP2's fully_shard on every block and the whole model; the model itself when alone."""
    if not d.enabled:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def no_sync(model: nn.Module, sync: bool):
    """Skip the gradient all-reduce on accumulation micro-steps (DDP) or the reduce-scatter (FSDP2)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext() if sync else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(sync)
    return nullcontext()


def step_summary(loss: torch.Tensor, stop: bool, d: Dist) -> tuple[float, bool]:
    """The loss averaged over processes, and whether any process was asked to stop: one all-reduce."""
    if not d.enabled:
        return loss.item(), stop
    both = torch.stack([loss.detach().float().reshape(()), torch.tensor(float(stop), device=loss.device)])
    dist.all_reduce(both)  # a sum: gloo has no average
    total_loss, stops = both.tolist()
    return total_loss / d.world_size, stops > 0


FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict:
    """Unsharded weights on the CPU (on rank 0; other ranks of an FSDP run get an empty dict)."""
    return get_model_state_dict(model, options=FULL)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict, optim_state=None):
    """Load unsharded states that every process read from disk (the inverse of the two above)."""
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)
