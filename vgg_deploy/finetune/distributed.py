"""torchrun support: one process per device, DistributedDataParallel, rank 0 alone writes.

Under `torchrun --nproc-per-node N -m vgg_deploy finetune ...` the usual environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT) is set; NCCL on GPUs, gloo on CPU. Collectives time out rather than
hang forever, and a rank-0 failure reaches every rank as the same typed error.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from vgg_deploy.errors import VggDeployError

T = TypeVar("T")
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only; every rank gets its result, or raises its VggDeployError."""
        result: Any = None
        error: VggDeployError | None = None
        if self.is_main:
            try:
                result = fn()
            except VggDeployError as err:
                error = err
        if self.enabled:
            box = [(result, error)]
            torch.distributed.broadcast_object_list(box, src=0)
            result, error = box[0]
        if error is not None:
            raise error
        return result

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (ranks may hold different row counts)."""
        if not self.enabled:
            return tensor
        return torch.cat(self.gather(tensor.cpu()))


def from_environment(device: str) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return Distributed(torch.distributed.get_rank(), world_size, local_rank, backend)


def shutdown(dist: Distributed) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
