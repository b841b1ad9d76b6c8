"""Run a test worker in several processes on a free local port, failing (not hanging) past a deadline."""

from __future__ import annotations

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
