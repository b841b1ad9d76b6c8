"""Run the OpenAI-compatible app on a free loopback port in a background thread (real HTTP)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from verticals.llm.serve import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(model, name: str = "tiny") -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) while the server runs; stop it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: model, name), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
