"""Run the OpenAI-compatible app on a free loopback port in a background thread (real HTTP)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from tests.spawn import free_port
from verticals.llm.serve import ServeLimits, Server, create_app


@contextlib.contextmanager
def running_server(model, name: str = "tiny", *, base_name: str | None = None,  # type: ignore[no-untyped-def]
                   limits: ServeLimits | None = None) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) while the server runs; stop it afterwards."""
    port = free_port()
    limits = limits or ServeLimits()
    server = Server(create_app(lambda: model, name, base_name=base_name, limits=limits), host="127.0.0.1",
                    port=port, limits=limits)
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
        thread.join(timeout=limits.shutdown_grace + 10)
