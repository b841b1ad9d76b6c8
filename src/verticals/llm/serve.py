"""An OpenAI-compatible server in front of a `LocalModel`: how a model fine-tuned here is served.

`/v1/models` and `/v1/chat/completions` (with `logprobs`, `top_logprobs`, `stop`, `seed` and SSE
streaming), so any OpenAI client, and our own `OpenAIModel`, can use it. The model loads once, in
the lifespan handler, and belongs to one worker thread (`_scheduler.py`); every request is
checked before any work (size, fields, model name, context length), waits in a bounded queue,
and is bounded in time. Every error has OpenAI's shape and status code (`_api_errors.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from verticals.llm._api_errors import APIError, install_error_handlers
from verticals.llm._protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from verticals.llm._request_limits import RequestLimits
from verticals.llm._scheduler import ClientGone, Job, Scheduler
from verticals.llm.base import GenerationParams
from verticals.llm.errors import LLMError
from verticals.llm.image_text import images_as_text
from verticals.llm.local import GeneratedToken, LocalModel
from verticals.llm.local import TokenLogprob as Token
from verticals.llm.messages import Message, as_messages

DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost the server; checked before any work.

    Args:
        max_queue (`int`): requests that may wait while one generates; one more gets a 429.
        timeout (`float`): seconds a request may take, waiting in the queue included; then a 503.
        max_body_bytes (`int`): largest request body; larger gets a 413.
        body_timeout (`float`): seconds a client has to send its request body; then a 408.
        shutdown_grace (`float`): on SIGTERM, seconds the running generation may take to finish.
    """

    max_queue: int = 32
    timeout: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout: float = 30.0
    shutdown_grace: float = 5.0

    @property
    def max_open(self) -> int:
        """Requests with a body open at once: the queue, the running one, and some being checked or answered."""
        return self.max_queue + 17

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise LLMError(f"max_queue must be 0 or more, got {self.max_queue}")
        for name in ("timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise LLMError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.shutdown_grace < 0:
            raise LLMError(f"shutdown_grace must be 0 or more seconds, got {self.shutdown_grace}")
        if self.max_body_bytes < 1024:
            raise LLMError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")


class _Served:
    """What the app holds: the model, the names it answers to, and the scheduler in front of it."""

    def __init__(self, model: LocalModel, name: str, base_name: str | None, limits: ServeLimits,
                 read_images: bool) -> None:
        self.model, self.name, self.limits, self.read_images = model, name, limits, read_images
        # public name -> whether the LoRA adapter is on; a model with an adapter also serves its base
        self.names = {name: True}
        if model.adapter is not None and base_name and base_name != name:
            self.names[base_name] = False
        self.created = int(time.time())
        self.scheduler = Scheduler(limits.max_queue)

    def adapter_for(self, requested: str | None) -> bool:
        if requested is None:
            return True
        if requested not in self.names:
            raise APIError(404, f"The model `{requested}` does not exist. This server serves: "
                                f"{', '.join(self.names)}.", param="model", code="model_not_found")
        return self.names[requested]

    def prepare(self, body: ChatRequest) -> _Prepared:
        """Everything checked and tokenised before the request may queue (runs in a worker thread).

        With images for a text model (OCR on), reading them, tokenising and the context check run in
        the job instead: OCR takes a while, and there it is bounded by the queue, the time limit and
        the client's disconnect like generation. Its errors still come before the first token, as
        an HTTP status.
        """
        use_adapter = self.adapter_for(body.model)
        messages = as_messages([{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                                for m in body.messages])
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        top = (body.top_logprobs or 0) if body.logprobs else 0
        has_images = any(isinstance(m["content"], list) and any(p["type"] == "image_url" for p in m["content"])
                         for m in messages)
        prepared = _Prepared(body.model or self.name)

        def plan(shown: list[Message]) -> tuple[list[int], GenerationParams]:
            prompt = self.model.prompt_ids(shown)  # refuses images that are not read
            max_tokens = _completion_budget(len(prompt), body.max_completion_tokens or body.max_tokens,
                                            self.model.context_length)
            prepared.prompt_tokens = len(prompt)
            return prompt, GenerationParams(max_tokens, 1.0 if body.temperature is None else body.temperature,
                                            1.0 if body.top_p is None else body.top_p, stop, body.seed)

        if has_images and self.read_images:
            prepared.model += "+ocr"  # the reply says the images were read, not seen

            def work() -> Generator[GeneratedToken, None, None]:
                from verticals.encoders import EncoderError, read_text

                try:
                    shown = images_as_text(messages, read_text)[0]
                except EncoderError as err:
                    raise LLMError(str(err)) from err
                prompt, params = plan(shown)
                yield from self.model.generate(shown, params, top, prompt_ids=prompt, use_adapter=use_adapter)
        else:
            prompt, params = plan(messages)

            def work() -> Generator[GeneratedToken, None, None]:
                yield from self.model.generate(messages, params, top, prompt_ids=prompt, use_adapter=use_adapter)

        prepared.work = work
        return prepared


@dataclass
class _Prepared:
    """What a request will do, and what its answer reports (`prompt_tokens` is known once tokenised)."""

    model: str
    work: Callable[[], Generator[GeneratedToken, None, None]] | None = None  # set once the plan is made
    prompt_tokens: int = 0


def _completion_budget(prompt: int, asked: int | None, context: int | None) -> int:
    """max_tokens for the reply; a 400 `context_length_exceeded` with the numbers when it cannot fit."""
    if context is None:
        return asked or DEFAULT_MAX_TOKENS
    if asked is None:
        if prompt < context:
            return min(DEFAULT_MAX_TOKENS, context - prompt)
        message = (f"This model's maximum context length is {context} tokens. However, your messages resulted in "
                   f"{prompt} tokens. Please reduce the length of the messages.")
    elif prompt + asked <= context:
        return asked
    else:
        message = (f"This model's maximum context length is {context} tokens. However, you requested "
                   f"{prompt + asked} tokens ({prompt} in the messages, {asked} in the completion). Please reduce "
                   "the length of the messages or completion.")
    raise APIError(400, message, param="messages", code="context_length_exceeded")


def create_app(load: Callable[[], LocalModel], name: str, *, base_name: str | None = None,
               limits: ServeLimits | None = None, read_images: bool = True) -> FastAPI:
    """Build the app; `load` runs once at start-up (tests pass an already loaded model).

    Args:
        load: returns the model to serve.
        name: the name clients use (for a model with a LoRA adapter: the adapted model).
        base_name: with an adapter, the name under which the base model (adapter off) is served too.
        limits: what one request may cost; see `ServeLimits`.
        read_images: give a text model the text OCR reads in each image part (the reply's model name
            ends in `+ocr`); False refuses images with a 400.
    """
    limits = limits or ServeLimits()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if read_images:  # a missing OCR is a start-up error, not a 400 on every image
            from verticals.encoders import ocr_engine

            ocr_engine()
        served = _Served(load(), name, base_name, limits, read_images)
        app.state.served = served
        yield
        await asyncio.to_thread(served.scheduler.close, limits.shutdown_grace)
        del app.state.served

    app = FastAPI(title="verticals LLM server", lifespan=lifespan,
                  description="An OpenAI-compatible server in front of a local model.")
    install_error_handlers(app)
    app.include_router(_router)
    app.openapi = _without_422(app.openapi)  # type: ignore[method-assign]
    app.get("/health", include_in_schema=False)(health)
    app.add_middleware(RequestLimits, max_open=limits.max_open, max_bytes=limits.max_body_bytes,
                       timeout=limits.body_timeout)
    return app


def _without_422(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document without FastAPI's automatic 422: validation errors are OpenAI's 400 here."""

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI builds it once and caches it
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    return openapi


async def get_served(request: Request) -> _Served:
    return request.app.state.served


ServedDep = Annotated[_Served, Depends(get_served)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [(400, "invalid request"), (404, "unknown model"), (408, "body too slow"),
                       (413, "body too large"), (429, "queue full"), (503, "time limit or shutting down")]
}
_router = APIRouter(prefix="/v1", responses=_ERRORS)


async def health(served: ServedDep) -> dict[str, Any]:
    return {"status": "ok", "busy": served.scheduler.busy, "queued": served.scheduler.queued}


@_router.get("/models")
async def list_models(served: ServedDep) -> ModelList:
    return ModelList(data=[ModelCard(id=n, created=served.created) for n in served.names])


@_router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, served: ServedDep) -> ModelCard:
    served.adapter_for(model_id)
    return ModelCard(id=model_id, created=served.created)


@_router.post("/chat/completions", response_model=None, responses={
    200: {"model": ChatCompletion, "content": {"text/event-stream": {}},
          "description": "a completion, or with `stream` a stream of `chat.completion.chunk` events"}})
async def chat_completions(body: ChatRequest, request: Request, served: ServedDep) -> Response:
    served.scheduler.check_room()  # a full queue answers 429 before the prompt is even tokenised
    prepared = await run_in_threadpool(served.prepare, body)
    job: Job[GeneratedToken] = Job(prepared.work, served.limits.timeout)  # type: ignore[arg-type]
    served.scheduler.submit(job)
    request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    try:
        async with _cancel_on_disconnect(request, job):
            first = await job.next_item()
            if not body.stream:
                tokens = []
                while first is not None:
                    tokens.append(first)
                    first = await job.next_item()
                completion = _completion(request_id, prepared, tokens, bool(body.logprobs))
                return JSONResponse(completion.model_dump(mode="json"))
    except ClientGone:
        return Response(status_code=499)  # nobody reads this: the client has gone
    except BaseException:
        job.cancel()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = _events(job, first, request_id, prepared, bool(body.logprobs), include_usage)
    return _Stream(job, events)


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(request: Request, job: Job) -> AsyncIterator[None]:
    """Cancel `job` as soon as the client disconnects (its body is read: the next message is the disconnect)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


class _Stream(StreamingResponse):
    """The SSE response of `job`, cut off at the job's deadline even if the client stops reading.

    Its background task stops the job even if the stream never starts (the client left in between).
    """

    def __init__(self, job: Job, events: AsyncIterator[str]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                         background=BackgroundTask(_cancel, job))
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with asyncio.timeout(max(self.job.deadline - time.monotonic(), 0) + 1.0):
                await super().__call__(scope, receive, send)
        except TimeoutError:  # a client that stopped reading: the connection is closed unfinished
            self.job.cancel()


async def _cancel(job: Job) -> None:
    job.cancel()


def _completion(request_id: str, prepared: _Prepared, tokens: list[GeneratedToken], logprobs: bool
                ) -> ChatCompletion:
    content = ChoiceLogprobs(content=[_token_logprob(t) for t in tokens]) if logprobs else None
    finish = (tokens[-1].finish_reason if tokens else None) or "stop"
    return ChatCompletion(
        id=request_id, created=int(time.time()), model=prepared.model,
        choices=[Choice(message=AssistantMessage(content="".join(t.text for t in tokens)), logprobs=content,
                        finish_reason=finish)],
        usage=_usage(prepared, len(tokens)),
    )


async def _events(job: Job[GeneratedToken], first: GeneratedToken | None, request_id: str, prepared: _Prepared,
                  with_logprobs: bool, include_usage: bool) -> AsyncIterator[str]:
    """The SSE stream; when the client goes, Starlette cancels it here and `finally` stops the job."""
    created = int(time.time())

    def chunk(delta: Delta, token: GeneratedToken | None = None, finish: str | None = None) -> str:
        logprobs = ChoiceLogprobs(content=[_token_logprob(token)]) if (with_logprobs and token) else None
        event = ChatCompletionChunk(id=request_id, created=created, model=prepared.model,
                                    choices=[ChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish)])
        return f"data: {event.model_dump_json()}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        count, finish, token = 0, "stop", first
        while token is not None:
            count += 1
            finish = token.finish_reason or finish
            yield chunk(Delta(content=token.text), token)
            token = await job.next_item()
        yield chunk(Delta(), finish=finish)
        if include_usage:
            usage = ChatCompletionChunk(id=request_id, created=created, model=prepared.model, choices=[],
                                        usage=_usage(prepared, count))
            yield f"data: {usage.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"
    except APIError as err:  # the status line is sent: the error goes in the stream, as OpenAI does
        yield f"data: {err.json()}\n\n"
    except ClientGone:
        return
    finally:
        job.cancel()


def _usage(prepared: _Prepared, completion: int) -> Usage:
    return Usage(prompt_tokens=prepared.prompt_tokens, completion_tokens=completion,
                 total_tokens=prepared.prompt_tokens + completion)


def _token_logprob(token: GeneratedToken) -> TokenLogprob:
    return TokenLogprob(**_plain(token), top_logprobs=[TopLogprob(**_plain(t)) for t in token.top])


def _plain(token: Token) -> dict[str, Any]:
    raw = None if token.bytes is None else list(token.bytes)
    return {"token": token.token, "logprob": max(token.logprob, -9999.0), "bytes": raw}


class Server(uvicorn.Server):
    """uvicorn's server, draining the queue first on SIGTERM / Ctrl-C.

    On shutdown, waiting requests get a 503 at once and the running generation has
    `shutdown_grace` seconds; uvicorn's own deadline a little later is the backstop.
    """

    def __init__(self, app: FastAPI, *, host: str, port: int, limits: ServeLimits) -> None:
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        timeout_graceful_shutdown=math.ceil(limits.shutdown_grace) + 3))
        self._app, self._grace = app, limits.shutdown_grace

    async def shutdown(self, sockets: Any = None) -> None:
        served = getattr(self._app.state, "served", None)
        if served is not None:
            served.scheduler.drain(self._grace)
        await super().shutdown(sockets)
