"""`OpenAIModel`: any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama, `verticals llm serve`).

Many requests stay in flight (a bounded thread pool over one `httpx.Client`), 429 and 5xx answers
are retried with exponential backoff (honouring `Retry-After`), and every failure that is the
server's fault becomes one `ServerError` line. Choice probabilities come from the first answer
token's `top_logprobs`: options must differ in their first token, and an option absent from the
top list gets the smallest listed probability (an upper bound on its true value).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from verticals.config import API_KEY_ENV, read_env
from verticals.llm.base import GenerationParams, LanguageModel
from verticals.llm.cache import ResponseCache
from verticals.llm.errors import LLMError, ServerError
from verticals.llm.messages import Message

RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIModel(LanguageModel):
    """A model behind an OpenAI-compatible `/v1` endpoint.

    Args:
        base_url (`str`): e.g. `"http://127.0.0.1:8000/v1"` or `"https://api.openai.com/v1"`.
        model (`str`, *optional*): the model name; defaults to the first one `/models` lists.
        api_key_env (`str`): environment variable holding the API key, defaults to `OPENAI_API_KEY`.
        max_concurrency (`int`): requests in flight at once, defaults to 8.
        timeout (`float`): seconds per request, defaults to 120.
        max_retries (`int`): retries of 429/5xx/time-outs before giving up, defaults to 5.
        top_logprobs (`int`): alternatives asked for when scoring choices (OpenAI allows up to 20).
        cache (`ResponseCache`, *optional*): where deterministic answers are kept.

    Example:
        >>> model = OpenAIModel("http://127.0.0.1:8000/v1")               # doctest: +SKIP
        >>> model.choice_probs(["Is aspirin an NSAID?"], ["Yes", "No"])   # doctest: +SKIP
        array([[0.91, 0.09]])
    """

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str = API_KEY_ENV,
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 5, top_logprobs: int = 20,
                 cache: ResponseCache | None = None, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(cache=cache)
        if not base_url.startswith(("http://", "https://")):
            raise LLMError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or not 1 <= top_logprobs <= 20:
            raise LLMError("need max_concurrency >= 1, max_retries >= 0, timeout > 0 and 1 <= top_logprobs <= 20")
        self.base_url = base_url.rstrip("/")
        self.max_concurrency, self.max_retries, self.top_logprobs = max_concurrency, max_retries, top_logprobs
        key = read_env(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport,
                                    limits=httpx.Limits(max_connections=max_concurrency))
        self.model = model or self._first_model()

    @property
    def fingerprint(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def close(self) -> None:
        self._client.close()

    # -- backend hooks --------------------------------------------------------------------------
    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        answer = self._request("POST", "/chat/completions", self._payload(messages, params))
        try:
            return str(answer["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as err:
            raise ServerError(f"{self.base_url} answered without choices[0].message.content") from err

    def _chat_many(self, conversations: list[list[Message]], params: GenerationParams) -> list[str]:
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(lambda c: self._chat(c, params), conversations))

    def _stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        payload = {**self._payload(messages, params), "stream": True}
        response = self._send("POST", "/chat/completions", payload, stream=True)
        try:  # closing the response (also when the caller stops early) tells the server to stop
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                event = _json(line[5:], self.base_url)
                if "error" in event:  # a failure after the stream began (time limit, shutdown)
                    raise ServerError(f"{self.base_url} stopped the stream: {_error_text(event)}")
                choices = event.get("choices") or [{}]  # the usage chunk has no choices
                delta = choices[0].get("delta") or {}
                if delta.get("content"):
                    yield delta["content"]
        except httpx.HTTPError as err:
            raise ServerError(f"lost {self.base_url} while streaming: {err or type(err).__name__}") from err
        finally:
            response.close()

    def _choice_logprobs(self, prompts: list[list[Message]], choices: tuple[str, ...]) -> np.ndarray:
        params = GenerationParams(max_tokens=1, temperature=0.0)

        def score(messages: list[Message]) -> list[float]:
            payload = {**self._payload(messages, params), "logprobs": True, "top_logprobs": self.top_logprobs}
            return first_token_logprobs(self._request("POST", "/chat/completions", payload), choices, self.base_url)

        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return np.array(list(pool.map(score, prompts)), dtype=np.float64)

    # -- transport ------------------------------------------------------------------------------
    def _payload(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.max_tokens,
                                   "temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    def _first_model(self) -> str:
        listing = self._request("GET", "/models")
        try:
            return str(listing["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as err:
            raise ServerError(f"{self.base_url}/models lists no model; pass the model name explicitly") from err

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request with retries; the answer's JSON object."""
        response = self._send(method, path, payload)
        return _json(response.text, self.base_url + path)

    def _send(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
              stream: bool = False) -> httpx.Response:
        """A 200 response, after retries on 429, 5xx, time-outs and refused connections.

        With `stream`, the body is left unread: the caller reads and closes it.
        """
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._client.send(self._client.build_request(method, url, json=payload), stream=stream)
            except httpx.TransportError as err:
                # a refused connection is rarely transient: give up after two quick retries
                if last or (isinstance(err, httpx.ConnectError) and attempt >= 2):
                    raise ServerError(f"cannot reach {self.base_url}: {err or type(err).__name__}") from err
                time.sleep(_backoff(attempt, None))
                continue
            if response.status_code == 200:
                return response
            response.read()
            response.close()
            if response.status_code in RETRY_STATUS and not last and not _timed_out(response):
                time.sleep(_backoff(attempt, response.headers.get("retry-after")))
                continue
            raise ServerError(f"{url} answered {response.status_code}: {_message(response)}")
        raise AssertionError("unreachable")


def first_token_logprobs(answer: dict[str, Any], choices: tuple[str, ...], where: str) -> list[float]:
    """Log-probability of each choice from the first generated token's `top_logprobs`."""
    try:
        content = answer["choices"][0]["logprobs"]["content"]
        top = content[0]["top_logprobs"] or [{"token": content[0]["token"], "logprob": content[0]["logprob"]}]
    except (KeyError, IndexError, TypeError) as err:
        raise ServerError(f"{where} returned no logprobs, so it cannot score choices; use a server that "
                          "supports logprobs/top_logprobs or a verbalised confidence instead") from err
    stripped = [c.strip() for c in choices]
    mass = [0.0] * len(choices)
    for entry in top:
        token = str(entry["token"]).strip()
        if not token:
            continue
        exact = [i for i, c in enumerate(stripped) if c == token]
        prefix = [i for i, c in enumerate(stripped) if c.startswith(token)]
        owner = exact or (prefix if len(prefix) == 1 else [])
        for i in owner:
            mass[i] += math.exp(float(entry["logprob"]))
    floor = math.exp(min(float(e["logprob"]) for e in top))
    return [math.log(m) if m > 0 else math.log(floor) for m in mass]


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(60.0, float(retry_after))
        except ValueError:
            pass
    return min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())  # jitter: spread out clients that retry together


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ServerError(f"{where} answered something that is not JSON: {text[:80]!r}") from err
    if not isinstance(value, dict):
        raise ServerError(f"{where} answered JSON that is not an object: {text[:80]!r}")
    return value


def _timed_out(response: httpx.Response) -> bool:
    """The server gave up on this request after its own time limit: sending it again would do the same."""
    try:
        error = response.json().get("error")
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "timeout"


def _message(response: httpx.Response) -> str:
    """The error message of a response: OpenAI's shape, FastAPI's `detail`, else the start of the body."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        return response.text[:300] or response.reason_phrase
    return _error_text(body) if isinstance(body, dict) else str(body)[:300]


def _error_text(body: dict[str, Any]) -> str:
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        return message + (f" (parameter {error['param']})" if error.get("param") and error["param"] not in message
                          else "")
    if isinstance(error, list) and error and isinstance(error[0], dict):  # FastAPI: [{"loc", "msg", ...}]
        first = error[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"{where}: {first.get('msg', first)}" if where else str(first.get("msg", first))
    return str(error if error is not None else body)[:300]
