"""Data-parallel training across processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

Every process reads its contiguous share of each global batch, cut into micro-batches. The training
forward passes run through :class:`~torch.nn.parallel.DistributedDataParallel`, which sums gradients over
micro-batches locally (``no_sync``) and averages them over processes in buckets that overlap with the last
micro-batch's backward pass; attacks craft their inputs on the plain module (:func:`unwrap`), since their
input-gradient passes must not enter that synchronisation. BatchNorm running statistics are combined
exactly as if the processes' micro-batches had run one after another in one process. So a run on N
processes equals a run on one process with the same ``data.micro_batch_size`` (up to floating-point
summation order). Only process 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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
    dist.all_gather_object(parts, part)  # fills every slot
    return np.concatenate(cast(list[np.ndarray], parts))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` under torchrun (``model`` itself on one process).

    Buffers are not broadcast: :class:`RunningStats` combines the BatchNorm statistics of every process.
    Every trainable parameter must take part in each forward pass (true of every timm classifier with its
    head); gradients of the others would never be averaged.
    """
    if current().world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False, gradient_as_bucket_view=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a :class:`DistributedDataParallel` wrapper (``model`` itself otherwise): attacks run
    their forward and input-gradient passes on it, outside the gradient synchronisation."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def sync_gradients(model: nn.Module, now: bool) -> contextlib.AbstractContextManager:
    """Around a micro-batch's forward and backward pass: average gradients over processes in its backward
    pass if ``now`` (the step's last micro-batch), else only accumulate them locally."""
    if now or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def _statistics(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The running mean, running variance and update count buffers of a layer :func:`_batchnorms` returned."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    if mean is None or var is None or count is None:
        raise ValueError(f"{type(bn).__name__} does not track running statistics")
    return mean, var, count


class RunningStats:
    """BatchNorm running statistics over one optimiser step split into micro-batches and processes.

    Every micro-batch starts from the statistics the step started with (so its attack, which runs in eval
    mode, sees the same model on 1 or N processes), and at the end of the step the statistics are what
    running all micro-batches of all processes one after another, in rank order, gives: with momentum m and
    n updates per micro-batch, r ← (1−m)ⁿ·r + c_j for each micro-batch j in turn, c_j its own contribution.
    Processes combine theirs with one all-reduce. Layers with cumulative averaging (momentum None) get the
    plain mean. With one micro-batch on one process it does nothing.
    """

    def __init__(self, model: nn.Module, chunks: int):
        self.chunks = chunks
        self.layers = _batchnorms(model) if chunks > 1 or current().world > 1 else []
        self.start = [(mean.clone(), var.clone(), int(count)) for mean, var, count in map(_statistics, self.layers)]
        # per layer: (mean, var) after this process's micro-batches so far, and the product of their decays
        self.local = [(m.clone(), v.clone(), 1.0) if bn.momentum is not None else (0 * m, 0 * v, 1.0)
                      for bn, (m, v, _) in zip(self.layers, self.start)]
        self.updates = [0] * len(self.layers)

    def begin_chunk(self) -> None:
        """Put the step's starting statistics back before a micro-batch."""
        for bn, (mean0, var0, count0) in zip(self.layers, self.start):
            running_mean, running_var, count = _statistics(bn)
            running_mean.copy_(mean0)
            running_var.copy_(var0)
            count.fill_(count0)

    def end_chunk(self) -> None:
        """Fold the micro-batch's updates into this process's sequence."""
        for i, (bn, (mean0, var0, count0)) in enumerate(zip(self.layers, self.start)):
            running_mean, running_var, count = _statistics(bn)
            n = int(count) - count0
            self.updates[i] += n
            mean, var, decay = self.local[i]
            if bn.momentum is None:  # cumulative averages: summed here, averaged in finish()
                self.local[i] = (mean + running_mean, var + running_var, 1.0)
                continue
            d = (1 - bn.momentum) ** n  # r_j = d·r0 + c_j, and the sequence continues as r ← d·r + c_j
            self.local[i] = (d * mean + running_mean - d * mean0, d * var + running_var - d * var0, decay * d)

    def finish(self) -> None:
        """Write the combined statistics of every micro-batch of every process into the model."""
        if not self.layers:
            return
        shard, pieces, starts = current(), [], []
        for bn, (mean0, var0, _), (mean, var, decay) in zip(self.layers, self.start, self.local):
            if bn.momentum is None:
                weight, start, mean0, var0, decay = 1.0 / (self.chunks * shard.world), 0.0, 0 * mean0, 0 * var0, 0.0
            else:
                weight, start = decay ** (shard.world - 1 - shard.rank), decay ** shard.world
            starts.append(start)
            pieces += [(mean - decay * mean0) * weight, (var - decay * var0) * weight]
        flat = torch.cat([p.reshape(-1) for p in pieces])
        if shard.world > 1:
            dist.all_reduce(flat)
        offset = 0
        for i, (bn, (mean0, var0, count0), start) in enumerate(zip(self.layers, self.start, starts)):
            running_mean, running_var, count = _statistics(bn)
            for buf, r0 in ((running_mean, mean0), (running_var, var0)):
                buf.copy_(start * r0 + flat[offset:offset + buf.numel()].view_as(buf))
                offset += buf.numel()
            count.fill_(count0 + shard.world * self.updates[i])
