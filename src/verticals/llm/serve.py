"""An OpenAI-compatible server in front of a `LocalModel`: how a model fine-tuned here is served.

`/v1/models` and `/v1/chat/completions` (with `logprobs`, `top_logprobs` and SSE streaming), so
any OpenAI client, and our own `OpenAIModel`, can use it. The model loads once, in the lifespan
handler; generation runs in plain `def` endpoints (FastAPI's thread pool) behind one lock, since
one CPU model answers one request at a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from verticals.llm._protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from verticals.llm.base import GenerationParams
from verticals.llm.errors import LLMError
from verticals.llm.local import GeneratedToken, LocalModel
from verticals.llm.messages import as_messages

DEFAULT_MAX_TOKENS = 512


class _Served:
    """What the app holds: the model, its public name, and the lock that serialises generation."""

    def __init__(self, model: LocalModel, name: str) -> None:
        self.model, self.name, self.lock, self.created = model, name, threading.Lock(), int(time.time())


def create_app(load: Callable[[], LocalModel], name: str) -> FastAPI:
    """Build the app; `load` runs once at start-up (tests pass an already loaded model)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.served = _Served(load(), name)
        yield
        del app.state.served

    app = FastAPI(title="verticals LLM server", lifespan=lifespan)

    @app.exception_handler(LLMError)
    def _bad_request(request: Request, err: LLMError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": {"message": str(err), "type": "invalid_request_error"}})

    app.get("/v1/models", response_model=ModelList)(list_models)
    app.post("/v1/chat/completions", response_model=None)(chat_completions)
    return app


def get_served(request: Request) -> _Served:
    return request.app.state.served  # type: ignore[no-any-return]


ServedDep = Annotated[_Served, Depends(get_served)]


def list_models(served: ServedDep) -> ModelList:
    return ModelList(data=[ModelCard(id=served.name, created=served.created)])


def chat_completions(body: ChatRequest, served: ServedDep) -> ChatCompletion | StreamingResponse:
    messages = as_messages([m.model_dump() for m in body.messages])
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    params = GenerationParams(body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
                              body.temperature, body.top_p, stop, body.seed)
    prompt_tokens = len(served.model.prompt_ids(messages))  # also rejects images before any work
    top = (body.top_logprobs or 0) if body.logprobs else 0
    request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if body.stream:
        chunks = _stream(served, messages, params, top, body.logprobs, request_id)
        return StreamingResponse(chunks, media_type="text/event-stream")
    with served.lock:
        tokens = list(served.model.generate(messages, params, top_logprobs=top))
    logprobs = ChoiceLogprobs(content=[_token_logprob(t) for t in tokens]) if body.logprobs else None
    finish = tokens[-1].finish_reason if tokens else "length"
    return ChatCompletion(
        id=request_id, created=int(time.time()), model=served.name,
        choices=[Choice(message=AssistantMessage(content="".join(t.text for t in tokens)), logprobs=logprobs,
                        finish_reason=finish or "stop")],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(tokens),
                    total_tokens=prompt_tokens + len(tokens)),
    )


def _stream(served: _Served, messages: list, params: GenerationParams, top: int, with_logprobs: bool,
            request_id: str) -> Iterator[str]:
    created = int(time.time())

    def event(delta: Delta, token: GeneratedToken | None = None, finish: str | None = None) -> str:
        logprobs = ChoiceLogprobs(content=[_token_logprob(token)]) if (with_logprobs and token) else None
        chunk = ChatCompletionChunk(id=request_id, created=created, model=served.name,
                                    choices=[ChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish)])
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    with served.lock:
        yield event(Delta(role="assistant", content=""))
        for token in served.model.generate(messages, params, top_logprobs=top):
            yield event(Delta(content=token.text), token, token.finish_reason)
    yield "data: [DONE]\n\n"


def _token_logprob(token: GeneratedToken) -> TokenLogprob:
    return TokenLogprob(token=token.token, logprob=token.logprob, bytes=list(token.token.encode("utf-8")),
                        top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(t.encode("utf-8")))
                                      for t, lp in token.top])
