"""Data-parallel training across processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

Every process reads its contiguous share of each global batch, cut into micro-batches; gradients are
summed over micro-batches and averaged over processes with one all-reduce per step, and BatchNorm running
statistics are combined exactly as if the processes' micro-batches had run one after another in one
process. So a run on N processes equals a run on one process with the same ``data.micro_batch_size``
(up to floating-point summation order). Only process 0 writes the run directory.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints."""
        return self.rank == 0


def init_from_env(device: torch.device | None = None) -> Shard:
    """Join the process group that ``torchrun`` describes in the environment (a no-op without it).

    The backend is NCCL for CUDA devices and gloo otherwise; each process uses GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        log.info("process %d of %d joined the %s group", dist.get_rank(), world, backend)
    return current()


def current() -> Shard:
    """The shard of this process (rank 0 of 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def barrier() -> None:
    """Wait for every process (a no-op on one)."""
    if current().world > 1:
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Elementwise sums of ``values`` over processes."""
    if current().world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_array(part: np.ndarray) -> np.ndarray:
    """The concatenation, in rank order, of every process's ``part`` (sizes may differ)."""
    if current().world == 1:
        return part
    parts: list[np.ndarray | None] = [None] * current().world
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def average_gradients(model: nn.Module) -> None:
    """Average parameter gradients over processes, one flat all-reduce per dtype and device."""
    shard = current()
    if shard.world == 1:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in model.parameters():
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= shard.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def batchnorm_snapshot(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Running mean, variance and update count of every BatchNorm before a step (see :func:`sync_batchnorm`)."""
    if current().world == 1:
        return []
    return [(bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)) for bn in _batchnorms(model)]


def sync_batchnorm(model: nn.Module, before: list[tuple[torch.Tensor, torch.Tensor, int]]) -> None:
    """Make every process's BatchNorm running statistics what one process would have after running all
    processes' micro-batches in rank order.

    With momentum m, n updates on each process turn r0 into (1−m)ⁿ·r0 + c_k on process k, so running them in
    sequence gives (1−m)^(N·n)·r0 + Σ_k (1−m)^((N−1−k)·n)·c_k: one all-reduce of the weighted c_k.
    Layers with cumulative averaging (momentum None) get the plain mean over processes.
    """
    shard = current()
    if shard.world == 1 or not before:
        return
    layers, pieces, starts = _batchnorms(model), [], []
    for bn, (mean0, var0, count0) in zip(layers, before):
        n = int(bn.num_batches_tracked) - count0
        decay = 1.0 if bn.momentum is None else (1 - bn.momentum) ** n
        weight = 1.0 / shard.world if bn.momentum is None else decay ** (shard.world - 1 - shard.rank)
        start = 0.0 if bn.momentum is None else decay
        starts.append(start ** shard.world if bn.momentum is not None else 0.0)
        pieces += [(bn.running_mean - start * mean0) * weight, (bn.running_var - start * var0) * weight]
    flat = torch.cat([p.reshape(-1) for p in pieces])
    dist.all_reduce(flat)
    offset = 0
    for bn, (mean0, var0, count0), start in zip(layers, before, starts):
        for buf, r0 in ((bn.running_mean, mean0), (bn.running_var, var0)):
            buf.copy_(start * r0 + flat[offset:offset + buf.numel()].view_as(buf))
            offset += buf.numel()
        bn.num_batches_tracked.fill_(count0 + shard.world * (int(bn.num_batches_tracked) - count0))
