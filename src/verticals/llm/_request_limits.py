"""ASGI middleware that bounds how many requests are open at once, and each body in size and time.

Why: FastAPI reads whatever a client sends, as slowly as it sends it, for as many clients as
connect. Here a request beyond `max_open` is refused before its body is read (429), and the body
is read first, under both limits, then handed on whole: a body over the size limit is refused
from its `Content-Length` before a byte of it is read (413), and a client that trickles its body
is cut off (408), all in OpenAI's error shape.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.llm._api_errors import APIError


class RequestLimits:
    """Wrap `app`: at most `max_open` requests at once, bodies of at most `max_bytes` arriving within `timeout` s."""

    def __init__(self, app: ASGIApp, *, max_open: int, max_bytes: int, timeout: float,
                 too_large_hint: str = "start it with a larger --max-body-mb") -> None:
        self.app, self.max_open, self.max_bytes, self.timeout = app, max_open, max_bytes, timeout
        self.too_large_hint = too_large_hint
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # no body, no model: cheap
            return
        if self.open >= self.max_open:
            error = APIError(429, f"This server has {self.open} requests open, its limit; retry shortly.",
                             code="rate_limit_exceeded", headers={"Retry-After": "1"})
            await self._refuse(scope, receive, send, error)
            return
        self.open += 1
        try:
            await self._bounded(scope, receive, send)
        finally:
            self.open -= 1

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, self._too_large(declared))
            return
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left before its request was complete
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._refuse(scope, receive, send, self._too_large(size))
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if timer.cancelled_caught:
            error = APIError(408, f"The request body did not arrive within {self.timeout:g} s.", code="request_timeout")
            await self._refuse(scope, receive, send, error)
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _too_large(self, size: int) -> APIError:
        return APIError(413, f"The request body is {size:,} bytes; this server accepts at most "
                             f"{self.max_bytes:,} ({self.too_large_hint}).",
                        code="request_too_large")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: APIError) -> None:
        # close the connection: the unread rest of the body must not be taken for a next request
        response = error.response()
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP layer refuses these before us; count the bytes instead
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the whole body once, then what the client does next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
