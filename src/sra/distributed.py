"""Everything that knows about ranks: process-group set-up from torchrun's environment, rank-0 printing, seeds.

Launch with `torchrun --nproc_per_node=K -m sra train ...`; a plain `sra train` is world size 1 with no process group.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str | None = None, timeout_s: float = 600.0) -> Context:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; start NCCL on GPUs or gloo on CPUs with a timeout so that a dead
    rank makes the others fail instead of hanging."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    # Under torchrun a process group is started even for one process, so that `--fsdp` shards on one GPU too.
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if use_cuda else None)
    return Context(rank, world, local, dev)


def current() -> Context:
    """The context of an already-initialised process (or world size 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    return Context(dist.get_rank(), dist.get_world_size(), local, dev)


def print0(*args, **kwargs) -> None:
    if current().is_main:
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def gather_strided(rows: np.ndarray) -> np.ndarray | None:
    """Rank 0 gets the rows of all ranks where rank r held items r, r + W, r + 2W, ... of a sequence, put back in
    sequence order; other ranks get None. (Pickled object gather: for evaluation-sized arrays, not per step.)"""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    world = dist.get_world_size()
    parts = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(rows, parts, dst=0)
    if parts is None:
        return None
    out = np.empty((sum(len(p) for p in parts), *rows.shape[1:]), rows.dtype)
    for r, p in enumerate(parts):
        out[r::world] = p
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (a collective: every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    x = torch.tensor([float(flag)], device=current().device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item())


def strided_batches(n: int, batch_size: int) -> list[list[int]]:
    """This rank's items of range(n) (rank, rank + W, rank + 2W, ...) in batches, the same number of batches on every
    rank (a shorter share ends in an empty batch), so that a collective after each batch is called by all ranks."""
    ctx = current()
    mine = list(range(ctx.rank, n, ctx.world_size))
    count = math.ceil(math.ceil(n / ctx.world_size) / batch_size)
    return [mine[b * batch_size:(b + 1) * batch_size] for b in range(count)]


def failed_anywhere(work, *args) -> tuple[object, Exception | None, bool]:
    """work(*args) on every rank, then a collective: (its result or None, the exception it raised here or None, whether
    it raised on any rank). Called where the ranks must stay in step: none waits in a later collective for a rank that
    gave up."""
    result, error = None, None
    try:
        result = work(*args)
    except Exception as e:  # noqa: BLE001 -- returned to the caller, which raises it
        error = e
    return result, error, any_rank(error is not None)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A seed for the draws of one training step (or one image): identical on every rank, independent of world size
    and batch split, and reproducible on resume without saving generator state."""
    return (seed * 1_000_003 + step * 7919 + stream * 104_729) % (2 ** 63 - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
