"""Multi-process training through ``torch.distributed`` (launched by ``torchrun``).

Every rank holds the whole model; each step a rank takes its shard of the global batch,
gradients are averaged with one all-reduce (gloo on the CPU, nccl on CUDA), BatchNorm buffers
are broadcast from rank 0 before evaluation. This handles what DDP's wrapper does not: NetAug's
two forward passes through differently sliced sub-networks per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch[self.rank :: self.world_size] if self.active else batch


def average_gradients(params, info: DistInfo) -> None:
    if not info.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    if info.active:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    if info.active:
        for b in module.buffers():
            dist.broadcast(b.data, 0)


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def params_in_sync(module: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same parameters (max spread of a checksum below 1e-6)."""
    if not info.active:
        return True
    total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
    lo, hi = total.clone(), total.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool((hi - lo).abs().item() <= 1e-6 * max(1.0, abs(total.item())))


def shutdown() -> None:
    """Wait for every rank, then tear the process group down (exiting without it can abort gloo)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
