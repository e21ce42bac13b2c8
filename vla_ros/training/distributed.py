"""Process group from the environment torchrun (or `accelerate launch`) sets; one process when there is none."""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from vla_ros.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto", single_process_group: bool = False) -> DistContext:
        """Reads RANK / WORLD_SIZE / LOCAL_RANK; joins the process group when WORLD_SIZE > 1 (or, with
        single_process_group, a group of one process: FSDP2 needs one even on a single GPU)."""
        world_size, rank, local_rank = (_env_int(name, default) for name, default in
                                        (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
        if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank < world_size:
            raise ConfigError(f"WORLD_SIZE={world_size}, RANK={rank}, LOCAL_RANK={local_rank}: need WORLD_SIZE >= 1 "
                              "and 0 <= RANK, LOCAL_RANK < WORLD_SIZE (start several processes with torchrun)")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda': CUDA is not available on this machine")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank}, but this node has {torch.cuda.device_count()} CUDA "
                              "device(s): start at most that many processes per node")
        resolved = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(resolved)
        backend = "nccl" if use_cuda else "gloo"
        timeout = datetime.timedelta(minutes=30)
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
        elif single_process_group and not dist.is_initialized():
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return cls(rank, world_size, local_rank, resolved)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of `value` over processes (itself with one process)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: must be an integer (torchrun sets it)") from None
