"""Training in several processes (torchrun + DistributedDataParallel): who does what, and agreeing.

Under torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) every
process trains on its own shard of each epoch's width-bucketed batches and DDP averages the
gradients. Rank 0 alone writes files and reports progress. Whatever one process sees on its
own (a non-finite loss, Ctrl-C, its clock) is combined across ranks before it changes the
control flow, so every rank takes the same branch and none waits forever in a collective.
Outside torchrun a `Context` of one process does nothing at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import CrnnError

T = TypeVar("T")


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: Sequence[T]) -> list[T]:
        """This rank's batches: every world-th one, the same count on every rank (the rest dropped)."""
        if not self.enabled:
            return list(batches)
        usable = len(batches) // self.world * self.world
        if usable == 0:
            raise CrnnError(f"{len(batches)} batches an epoch cannot be shared by {self.world} processes; "
                            "use fewer processes or a smaller --batch-size")
        return list(batches[self.rank:usable:self.world])

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true if it is true on any rank."""
        if not self.enabled:
            return [bool(f) for f in flags]
        values = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def max(self, values: Sequence[float]) -> list[float]:
        """Each value's maximum over the ranks."""
        if not self.enabled:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def sum(self, counts: Sequence[int]) -> list[int]:
        if not self.enabled:
            return list(counts)
        values = torch.tensor(list(counts), dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return [int(round(v)) for v in values.tolist()]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of `obj`, on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's batch-norm statistics everywhere, so every rank evaluates the model rank 0 saves."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def weights_digest(module: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment(device: torch.device) -> tuple[Context, torch.device]:
    """The process group torchrun described in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=device), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as exc:
            raise CrnnError(f"cannot join the {world}-process group ({backend}): {str(exc).splitlines()[0]}") from None
    return Context(rank, world, local_rank, device, backend), device
