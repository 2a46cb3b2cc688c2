"""torch.distributed set-up from torchrun's environment; device and backend choice.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT); without them this is a
single process. Backends: gloo on CPU, nccl on CUDA, hccl on Ascend NPU (torch_npu).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from classzoo.engine.devices import configure, set_device
from classzoo.errors import UserError


@dataclass(frozen=True)
class DistEnv:
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _npu_available():
            name = "npu"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "npu":
        if not _npu_available():
            raise UserError("device 'npu' requested but torch_npu is not installed or sees no NPU")
        return torch.device("npu", local_rank)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device 'mps' requested but MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown device '{name}' (allowed: auto, cpu, cuda, npu, mps)")


def _npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401  (imported only when an NPU is asked for or probed)
    except ImportError:
        return False
    return bool(torch.npu.is_available())


def backend_for(device: torch.device) -> str:
    return {"cuda": "nccl", "npu": "hccl"}.get(device.type, "gloo")


def local_device(device_name: str) -> torch.device:
    """This process's device (under torchrun, the accelerator of its LOCAL_RANK), set as the
    current one and configured, without joining any process group (predict and export need
    no collective: a group left to the exit-time destructors can abort the process)."""
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    set_device(device)  # before NCCL/HCCL start
    configure(device)
    return device


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group torchrun prepared (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = local_device(device_name)
    if world > 1 and not dist.is_initialized():
        store = _attempt_store(rank, world)
        if store is None:
            dist.init_process_group(backend=backend_for(device))
        else:
            dist.init_process_group(
                backend=backend_for(device), store=store, rank=rank, world_size=world
            )
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


def _attempt_store(rank: int, world: int):
    """The rendezvous store, prefixed by torchrun's restart count.

    After a worker dies, torchrun (``--max-restarts``) starts a new group on the same agent
    store; gloo then sometimes read the dead rank's address left by the previous attempt
    ("Gloo connectFullMesh failed ... Connection refused", seen here 1 run in 3). A prefix
    per attempt keeps each attempt's keys apart.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if attempt is None or addr is None or port is None:
        return None
    from torch.distributed.rendezvous import _create_c10d_store

    store = _create_c10d_store(addr, int(port), rank, world, timedelta(minutes=30))
    return dist.PrefixStore(f"classzoo/attempt_{attempt}", store)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(values: list, env: DistEnv) -> None:
    """Rank 0's ``values`` (a list, replaced in place) on every rank."""
    if env.distributed:
        dist.broadcast_object_list(values, src=0)


def gather_objects(value, env: DistEnv) -> list:
    """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
    if not env.distributed:
        return [value]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, value)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
