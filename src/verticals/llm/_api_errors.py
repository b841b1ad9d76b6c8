"""Every error the server sends, in OpenAI's shape and with OpenAI's status codes.

Why: OpenAI clients (the official SDKs, our `OpenAIModel`) read `{"error": {"message", "type",
"param", "code"}}`; FastAPI's own `{"detail": [...]}` with 422 reached users as "answered 422: {}".
Domain errors are raised as `APIError` and mapped once here; validation and routing errors of
FastAPI and Starlette are translated here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from verticals.llm._protocol import ErrorBody, ErrorResponse
from verticals.llm.errors import LLMError

#: the error types OpenAI uses per status
_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
          408: "invalid_request_error", 413: "invalid_request_error", 429: "requests", 503: "server_error"}


class APIError(Exception):
    """An error answered to the client, e.g. `APIError(404, "The model ... does not exist", code="model_not_found")`."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = dict(headers or {})

    @property
    def body(self) -> ErrorResponse:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return ErrorResponse(error=ErrorBody(message=self.message, type=kind, param=self.param, code=self.code))

    def json(self) -> str:
        # ASCII-escaped: a message that repeats the client's text stays encodable (a lone surrogate too)
        return json.dumps(self.body.model_dump(), ensure_ascii=True, separators=(",", ":"))

    def response(self) -> Response:
        return Response(self.json(), status_code=self.status, headers=self.headers, media_type="application/json")


def as_api_error(err: Exception) -> APIError:
    """What the client is told about `err`: our own errors as they are, a model error as a 400, else a 500."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, LLMError):
        return APIError(400, str(err))
    return APIError(500, "The server had an error while processing your request.")


def shutting_down() -> APIError:
    return APIError(503, "The server is shutting down; retry shortly.", code="server_shutting_down")


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, FastAPI's validation errors, Starlette's HTTP errors and bugs to OpenAI's shape."""

    @app.exception_handler(APIError)
    @app.exception_handler(LLMError)
    async def _known(request: Request, err: Exception) -> Response:
        return as_api_error(err).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        return validation_error(err.errors()).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> Response:
        invalid_url = f"Invalid URL ({request.method} {request.url.path})"
        message = invalid_url if err.status_code == 404 else str(err.detail)
        return APIError(err.status_code, message, headers=err.headers).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> Response:
        # a bug of ours: Starlette re-raises it after this answer, so the server logs its traceback
        return as_api_error(err).response()


def validation_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """The first of pydantic's errors as one OpenAI-style 400 naming the parameter."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    kind = str(first.get("type", "invalid"))
    if kind == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                             "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
    ctx = first.get("ctx") or {}
    param = str(ctx["param"]) if isinstance(ctx, Mapping) and "param" in ctx else _param(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if kind in ("unrecognized_parameter", "unsupported_parameter", "invalid_value") or not param:
        return APIError(400, message, param=param or None, code=kind)
    given = first.get("input")
    shown = f" (got {given!r:.60})" if kind not in ("missing", "value_error") and not isinstance(given, (dict, list)) \
        else ""
    return APIError(400, f"Invalid '{param}': {message}{shown}.", param=param, code=kind)


def _param(loc: Sequence[Any]) -> str:
    """`("body", "messages", 0, "role")` -> `"messages.[0].role"`, as OpenAI names nested parameters."""
    parts = [p for p in loc if p != "body"]
    # pydantic adds the name of the union member it tried ("str", "list[...]"): not a parameter
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))]
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts)
