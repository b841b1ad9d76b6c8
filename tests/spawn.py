"""Run a test worker in several processes on a free local port, failing (not hanging) past a deadline."""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker: Callable[..., None], args: tuple[Any, ...], nprocs: int, deadline: float, what: str) -> None:
    """`worker(rank, port, *args)` in `nprocs` processes; fails the test if they are not done within `deadline` s."""
    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=(free_port(), *args), nprocs=nprocs, join=False)
    start = time.monotonic()
    try:
        while not context.join(timeout=max(0.1, deadline - (time.monotonic() - start))):
            if time.monotonic() - start > deadline:
                pytest.fail(f"{what} did not finish within {deadline} s (hang?)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


def leave_world() -> None:
    """End a rank's gloo world cleanly: every rank done, the DDP reducers gone, then the group destroyed.

    A rank that destroys its group while the other still talks, or exits with gloo threads holding
    tensors, aborts in C++ ("terminate called without an active exception", SIGABRT) at shutdown.
    Call it after the objects holding the group (DDP wrappers, trainers) are out of scope.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
