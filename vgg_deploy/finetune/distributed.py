"""torchrun support: one process per device, DistributedDataParallel, rank 0 alone writes.

Under `torchrun --nproc-per-node N -m vgg_deploy finetune ...` the usual environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT) is set; NCCL on GPUs, gloo on CPU. Collectives time out rather than
hang forever, and a rank-0 failure reaches every rank as the same typed error.
"""

from __future__ import annotations

import datetime
import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from vgg_deploy.console import error_console
from vgg_deploy.errors import VggDeployError

T = TypeVar("T")
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
HEARTBEAT_S = 30.0  # well inside COLLECTIVE_TIMEOUT


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

    def on_main(self, fn: Callable[[], T], *, waiting_for: str | None = None,
                heartbeat_s: float = HEARTBEAT_S) -> T:
        """Run `fn` on rank 0 only; every rank gets its result, or raises its VggDeployError.

        With `waiting_for`, fn may take longer than a collective's timeout: rank 0 runs it on a thread and
        tells the others every heartbeat_s that it is still going, and they say what they wait for."""
        result: Any = None
        error: VggDeployError | None = None
        if self.is_main:
            if self.enabled and waiting_for:
                fn = _with_heartbeat(fn, heartbeat_s)
            try:
                result = fn()
            except VggDeployError as err:
                error = err
        elif waiting_for:
            _wait_for_main(waiting_for, announce=self.rank == 1)
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


def _with_heartbeat(fn: Callable[[], T], heartbeat_s: float) -> Callable[[], T]:
    def run() -> T:
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(fn)
            while True:
                try:
                    future.result(timeout=heartbeat_s)
                    finished = True
                except FutureTimeout:
                    finished = False
                except Exception:  # noqa: BLE001 - fn's own error is raised below, once the others know
                    finished = True
                torch.distributed.broadcast(torch.tensor([int(finished)]), src=0)
                if finished:
                    return future.result()

    return run


def _wait_for_main(waiting_for: str, *, announce: bool) -> None:
    started = time.monotonic()
    while True:
        flag = torch.tensor([0])
        torch.distributed.broadcast(flag, src=0)
        if flag.item():
            return
        if announce:  # one rank speaks for all the waiting ones
            error_console.print(f"ranks 1+ waiting for rank 0 ({waiting_for}): {time.monotonic() - started:.0f} s")


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
