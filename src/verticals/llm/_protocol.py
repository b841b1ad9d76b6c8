"""Typed request and response bodies of the OpenAI chat-completions protocol (the subset we serve)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from verticals.llm.base import MAX_STOP, MAX_TEMPERATURE, SEED_MAX, SEED_MIN

#: accepted and ignored: they change nothing in a locally generated answer
IGNORED_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
#: known OpenAI features this server does not have: refused unless left at their "off" value
UNSUPPORTED_FIELDS = frozenset({
    "tools", "tool_choice", "functions", "function_call", "logit_bias", "response_format", "presence_penalty",
    "frequency_penalty", "audio", "modalities", "prediction", "reasoning_effort", "web_search_options",
})


def _is_off(value: Any) -> bool:
    """The value that leaves an OpenAI feature off (no tools, no penalty, plain-text output)."""
    return value is None or value in (0, "none", "auto") or value in ([], {}, {"type": "text"})


def _first_unencodable(value: Any, where: str) -> str | None:
    """Where the first string (key or value) that cannot be UTF-8 encoded sits, e.g. `messages.[0].content`."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{where}.[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and _first_unencodable(key, where) is not None:
            return where or "body"
        if (found := _first_unencodable(item, here)) is not None:
            return found
    return None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class ChatRequest(BaseModel):
    """A chat-completions request; unknown fields are refused as OpenAI refuses them.

    Strict types, as OpenAI's: `"logprobs": 0` or `"max_tokens": "5"` is an error, not a guess.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE, description="defaults to 1")
    top_p: float | None = Field(None, gt=0, le=1, description="defaults to 1")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the reply")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int | None = Field(None, json_schema_extra={"minimum": 1, "maximum": 1},
                          description="only one choice per request is served")

    @model_validator(mode="before")
    @classmethod
    def _utf8_only(cls, data: Any) -> Any:
        if (where := _first_unencodable(data, "")) is not None:
            raise PydanticCustomError("invalid_value", "'{param}' holds text that is not valid Unicode (a lone "
                                      "surrogate such as \\ud800)", {"param": where or "body"})
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError(f"this server returns one choice per request, got n={n}; send separate requests")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return stop

    @model_validator(mode="after")
    def _known_fields(self) -> ChatRequest:
        for key, value in (self.model_extra or {}).items():
            if key in IGNORED_FIELDS:
                continue
            if key in UNSUPPORTED_FIELDS:
                if _is_off(value):
                    continue
                raise PydanticCustomError("unsupported_parameter", "'{param}' is not supported by this server",
                                          {"param": key})
            raise PydanticCustomError("unrecognized_parameter", "Unrecognized request argument supplied: {param}",
                                      {"param": key})
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("invalid_value", "'{param}' needs logprobs=true", {"param": "top_logprobs"})
        return self


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorBody


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None  # None for a special token (end of turn, padding): it adds no text


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    # as OpenAI streams it: the role in the first chunk, content after it, nothing in the last
    role: Literal["assistant"] | None = Field(default=None, exclude_if=lambda v: v is None)
    content: str | None = Field(default=None, exclude_if=lambda v: v is None)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda v: v is None)  # only in the include_usage chunk


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "verticals"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
