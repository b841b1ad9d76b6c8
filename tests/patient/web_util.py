"""Run the patient web app on a free loopback port in a background thread (real HTTP)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from verticals.patient.web import WebSettings, create_app


@contextlib.contextmanager
def running_app(load: Callable[[], Any] = lambda: None, settings: WebSettings | None = None) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT`) while the app runs; stop it afterwards."""
    with running_asgi(create_app(load, settings)) as url:
        yield url


@contextlib.contextmanager
def running_asgi(app: Any) -> Iterator[str]:
    """Any ASGI app on a free loopback port in a background thread: its base URL while it runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the patient app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
