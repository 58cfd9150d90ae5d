"""Multi-process training through torchrun (DDP): which rank am I, set up and tear down the process group.

Any run that torchrun started joins a process group and trains through DDP, even with one process
(``torchrun --nproc_per_node=1``): the same code path as on many GPUs, so one GPU can check NCCL. A plain
``python train.py`` is one process without a group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    group: bool = False  # in a process group (started by torchrun): DDP, collectives

    @property
    def enabled(self) -> bool:
        return self.group

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, logs and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float, device: torch.device) -> float:
        """Average a Python float over all ranks (identity for one process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.item() / self.world_size


def launched_by_torchrun() -> bool:
    """torchrun sets TORCHELASTIC_RUN_ID (and RANK, WORLD_SIZE, MASTER_ADDR ...) in every process it starts."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (
        "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ
    )


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK; a plain run gets one rank.
    NCCL on CUDA, gloo elsewhere (that is how CI tests DDP on CPU)."""
    if not launched_by_torchrun():
        return Dist()
    d = Dist(
        int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]), True
    )
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend=backend)
    return d


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
