"""`OpenAIModel` against scripted servers (httpx.MockTransport): retries, errors, concurrency, cache."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import pytest

from tests.spawn import free_port
from verticals.llm import openai_api
from verticals.llm.cache import ResponseCache
from verticals.llm.errors import LLMError, ServerError
from verticals.llm.openai_api import OpenAIModel, first_token_logprobs

URL = "http://server.test/v1"


def completion(content: str = "ok", top: dict[str, float] | None = None) -> dict:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if top is not None:
        first = max(top, key=top.get)  # type: ignore[arg-type]
        choice["logprobs"] = {"content": [{"token": first, "logprob": top[first], "top_logprobs": [
            {"token": t, "logprob": lp} for t, lp in top.items()]}]}
    return {"choices": [choice]}


def model_with(handler, **kwargs) -> OpenAIModel:  # type: ignore[no-untyped-def]
    return OpenAIModel(URL, "m", transport=httpx.MockTransport(handler), **kwargs)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_api, "_backoff", lambda attempt, retry_after: 0.0)


def test_chat_sends_the_request_and_reads_the_reply() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, json=completion("Paris."))

    assert model_with(handler).chat("Capital of France?", max_tokens=7, stop=["\n"], seed=1) == "Paris."
    assert seen["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert (seen["max_tokens"], seen["stop"], seen["seed"], seen["model"]) == (7, ["\n"], 1, "m")


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test")
    seen = []
    model = model_with(lambda r: seen.append(r.headers.get("authorization")) or httpx.Response(200, json=completion()),
                       api_key_env="MY_KEY")
    model.chat("hi")
    assert seen == ["Bearer sk-test"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_transient_failures_then_succeeds(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"error": {"message": "busy"}}) if len(calls) < 3 else httpx.Response(
            200, json=completion("done"))

    assert model_with(handler).chat("hi") == "done"
    assert len(calls) == 3


def test_gives_up_after_max_retries_with_one_clear_error() -> None:
    calls = []
    model = model_with(lambda r: calls.append(1) or httpx.Response(503, json={"error": {"message": "overloaded"}}),
                       max_retries=2)
    with pytest.raises(ServerError, match="503: overloaded"):
        model.chat("hi")
    assert len(calls) == 3


def test_client_errors_are_not_retried() -> None:
    calls = []
    model = model_with(lambda r: calls.append(1) or httpx.Response(400, json={"error": {"message": "bad model"}}))
    with pytest.raises(ServerError, match="400: bad model"):
        model.chat("hi")
    assert len(calls) == 1


def test_non_json_answer_is_a_server_error() -> None:
    with pytest.raises(ServerError, match="not JSON"):
        model_with(lambda r: httpx.Response(200, text="<html>proxy error</html>")).chat("hi")


def test_missing_logprobs_is_a_server_error() -> None:
    model = model_with(lambda r: httpx.Response(200, json=completion("Yes")))
    with pytest.raises(ServerError, match="no logprobs"):
        model.choice_probs(["Is it?"], ["Yes", "No"])


def test_unreachable_server_is_one_error_line() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ServerError, match="cannot reach"):
        OpenAIModel(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, timeout=2).chat("hi")
    with pytest.raises(ServerError, match="cannot reach"):
        list(OpenAIModel(f"http://127.0.0.1:{port}/v1", "m", max_retries=0, timeout=2).stream("hi"))


def test_bad_url_and_settings_are_refused() -> None:
    with pytest.raises(LLMError, match="http"):
        OpenAIModel("127.0.0.1:8000", "m")
    with pytest.raises(LLMError):
        OpenAIModel(URL, "m", top_logprobs=50)


def test_model_name_defaults_to_the_first_listed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json={"data": [{"id": "served-model"}, {"id": "other"}]})

    assert OpenAIModel(URL, transport=httpx.MockTransport(handler)).model == "served-model"


def test_first_token_logprobs_merges_variants_and_floors_absent_choices() -> None:
    top = {"Yes": math.log(0.5), " Yes": math.log(0.2), "Maybe": math.log(0.1), "No": math.log(0.05)}
    yes, no, unsure = first_token_logprobs(completion(top=top), ("Yes", "No", "Unsure"), "here")
    assert math.exp(yes) == pytest.approx(0.7)
    assert math.exp(no) == pytest.approx(0.05)
    assert math.exp(unsure) == pytest.approx(0.05)  # absent: the smallest listed probability


def test_first_token_prefix_counts_only_when_unambiguous() -> None:
    top = {"Def": math.log(0.4), "No": math.log(0.3)}
    definitely, no = first_token_logprobs(completion(top=top), ("Definitely", "No"), "here")
    assert math.exp(definitely) == pytest.approx(0.4)
    top = {"De": math.log(0.4), "No": math.log(0.3)}
    first, second, _ = first_token_logprobs(completion(top=top), ("Definitely", "Delayed", "No"), "here")
    assert first == second == pytest.approx(math.log(0.3))  # "De" could be either: counted for neither


def test_requests_run_concurrently_within_the_bound() -> None:
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json=completion(top={"Yes": -0.1, "No": -2.4}))

    probs = model_with(handler, max_concurrency=3).choice_probs([f"q{i}" for i in range(12)], ["Yes", "No"])
    assert probs.shape == (12, 2)
    assert 1 < state["peak"] <= 3


def test_cache_serves_repeats_without_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json=completion("same", top={"Yes": -0.2, "No": -1.7}))

    cache = ResponseCache(tmp_path / "c.sqlite")
    first = model_with(handler, cache=cache)
    first.chat("hi")
    first.choice_probs(["a", "b"], ["Yes", "No"])
    assert len(calls) == 3
    again = model_with(handler, cache=ResponseCache(tmp_path / "c.sqlite"))
    assert again.chat("hi") == "same"
    assert again.choice_probs(["b", "a", "c"], ["Yes", "No"]).shape == (3, 2)
    assert len(calls) == 4  # only "c" was new
    again.chat("hi", temperature=0.7)  # sampled answers are never cached
    again.chat("hi", temperature=0.7)
    assert len(calls) == 6


def test_stream_reads_server_sent_events() -> None:
    events = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"delta": {"content": "Hel"}}]}, {"choices": [{"delta": {"content": "lo"}}]}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    model = model_with(lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))
    assert list(model.stream("hi")) == ["Hel", "lo"]


def test_a_failure_mid_run_keeps_finished_chunks_in_the_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) > 4:
            return httpx.Response(400, json={"error": {"message": "quota exceeded"}})
        return httpx.Response(200, json=completion(top={"Yes": -0.3, "No": -1.4}))

    prompts = [f"question {i}" for i in range(10)]
    cache = ResponseCache(tmp_path / "c.sqlite")
    model = model_with(flaky, cache=cache, max_concurrency=1)
    model.scoring_chunk_size = 2
    with pytest.raises(ServerError, match="quota exceeded"):
        model.choice_probs(prompts, ["Yes", "No"])
    assert len(cache) == 4  # two finished chunks were committed before the failure
    calls.clear()
    healthy = model_with(lambda r: calls.append(1) or httpx.Response(200, json=completion(top={"Yes": -0.3})),
                         cache=ResponseCache(tmp_path / "c.sqlite"))
    assert healthy.choice_probs(prompts, ["Yes", "No"]).shape == (10, 2)
    assert len(calls) == 6  # only the unfinished rows were sent again


def test_images_travel_as_data_url_parts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from verticals.llm.messages import image_part

    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, json=completion("a cat"))

    picture = tmp_path / "meme.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    message = {"role": "user", "content": [{"type": "text", "text": "What is shown?"}, image_part(picture)]}
    assert model_with(handler).chat([message]) == "a cat"
    part = seen["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_errors_in_fastapis_shape_show_their_message() -> None:
    detail = {"detail": [{"loc": ["body", "temperature"], "msg": "Input should be less than or equal to 2",
                          "type": "less_than_equal"}]}
    with pytest.raises(ServerError, match=r"422: temperature: Input should be less than or equal to 2"):
        model_with(lambda r: httpx.Response(422, json=detail)).chat("hi")
    openai_shape = {"error": {"message": "Invalid 'top_p'", "type": "invalid_request_error", "param": "top_p",
                              "code": None}}
    with pytest.raises(ServerError, match=r"400: Invalid 'top_p'"):
        model_with(lambda r: httpx.Response(400, json=openai_shape)).chat("hi")
    with pytest.raises(ServerError, match="answered 502: Bad Gateway"):
        model_with(lambda r: httpx.Response(502, text=""), max_retries=0).chat("hi")


def test_an_error_event_in_a_stream_is_a_server_error() -> None:
    body = ('data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
            'data: {"error": {"message": "The request ran past the time limit", "type": "server_error"}}\n\n')
    model = model_with(lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))
    pieces = model.stream("hi")
    assert next(pieces) == "Hel"
    with pytest.raises(ServerError, match="stopped the stream: The request ran past the time limit"):
        next(pieces)


def test_a_stream_is_retried_while_the_server_is_busy() -> None:
    answers = [httpx.Response(429, json={"error": {"message": "busy"}}, headers={"retry-after": "1"}),
               httpx.Response(200, text='data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: [DONE]\n\n')]
    model = model_with(lambda r: answers.pop(0))
    assert list(model.stream("hi")) == ["ok"] and not answers


def test_settings_the_server_would_refuse_fail_before_any_request() -> None:
    calls = []
    model = model_with(lambda r: calls.append(1) or httpx.Response(200, json=completion()))
    for kwargs in ({"temperature": 2.5}, {"top_p": 0.0}, {"seed": 2**64}, {"seed": -(2**63) - 1},
                   {"stop": ["a", "b", "c", "d", "e"]}):
        with pytest.raises(LLMError):
            model.chat("hi", **kwargs)  # type: ignore[arg-type]
    assert calls == []


def test_a_request_the_server_timed_out_is_not_sent_again() -> None:
    calls = []
    timeout = {"error": {"message": "ran past the time limit", "type": "server_error", "code": "timeout"}}
    model = model_with(lambda r: calls.append(1) or httpx.Response(503, json=timeout), max_retries=3)
    with pytest.raises(ServerError, match="503: ran past the time limit"):
        model.chat("hi")
    assert len(calls) == 1
