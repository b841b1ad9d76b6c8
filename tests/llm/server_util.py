"""Run the OpenAI-compatible app on a free loopback port in a background thread (real HTTP)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx

from verticals.llm.serve import ServeLimits, Server, create_app


@contextlib.contextmanager
def running_server(model, name: str = "tiny", *, base_name: str | None = None,  # type: ignore[no-untyped-def]
                   limits: ServeLimits | None = None, send_buffer: int | None = None,
                   read_images: bool = True) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) while the server runs; stop it afterwards.

    `send_buffer` fixes the kernel's send buffer of every connection (no autotuning up to 4 MB), so a
    client that stops reading blocks the server's writes after a few kB.
    """
    sock = socket.socket()
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)  # accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    limits = limits or ServeLimits()
    app = create_app(lambda: model, name, base_name=base_name, limits=limits, read_images=read_images)
    server = Server(app, host="127.0.0.1", port=port, limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
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
        sock.close()


def assert_openai_error(answer: httpx.Response, status: int, *, param: str | None = None,
                        code: str | None = None) -> dict:
    """The answer is OpenAI's error shape with this status (and param / code when given)."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == {429: "requests"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]
