"""The OpenAI-compatible server, exercised with the official `openai` client over real HTTP."""

from __future__ import annotations

import math

import httpx
import numpy as np
import openai
import pytest

from tests.llm.server_util import running_server
from verticals.llm.base import GenerationParams, normalise
from verticals.llm.openai_api import OpenAIModel, first_token_logprobs

QUESTION = [{"role": "user", "content": "Is fever a symptom of the flu?"}]


@pytest.fixture(scope="module")
def tiny_url(tiny_model):  # type: ignore[no-untyped-def]
    with running_server(tiny_model) as url:
        yield url


@pytest.fixture(scope="module")
def client(tiny_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0)


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_greedy_completion_matches_local_chat(client: openai.OpenAI, tiny_model) -> None:  # type: ignore[no-untyped-def]
    reply = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0)
    assert reply.choices[0].message.content == tiny_model.chat(QUESTION, max_tokens=12)
    assert reply.usage.prompt_tokens == len(tiny_model.prompt_ids(QUESTION))
    assert reply.usage.completion_tokens <= 12
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_logprobs_are_the_models_distribution(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=3, temperature=0,
                                           logprobs=True, top_logprobs=5)
    tokens = reply.choices[0].logprobs.content
    assert 1 <= len(tokens) <= 3
    for token in tokens:
        top = token.top_logprobs
        assert len(top) == 5
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        # greedy: the chosen token is the most likely one
        assert math.isclose(token.logprob, top[0].logprob, abs_tol=1e-6)
        assert sum(math.exp(t.logprob) for t in top) <= 1 + 1e-5


def test_streaming_pieces_join_to_the_full_reply(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0,
                                            stream=True, logprobs=True, top_logprobs=2)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].logprobs is not None for c in chunks[1:])


def test_bad_requests_are_400_or_422(tiny_url: str) -> None:
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    answer = httpx.post(tiny_url + "/chat/completions", json={"messages": [image]})
    assert answer.status_code == 400 and "text only" in answer.json()["error"]["message"]
    assert httpx.post(tiny_url + "/chat/completions", json={"messages": []}).status_code == 422
    too_many = {"messages": QUESTION, "logprobs": True, "top_logprobs": 50}
    assert httpx.post(tiny_url + "/chat/completions", json=too_many).status_code == 422


def test_openai_model_against_the_server(tiny_url: str, tiny_model) -> None:  # type: ignore[no-untyped-def]
    remote = OpenAIModel(tiny_url)  # the model name comes from /v1/models
    assert remote.model == "tiny"
    assert remote.chat(QUESTION, max_tokens=8) == tiny_model.chat(QUESTION, max_tokens=8)
    assert "".join(remote.stream(QUESTION, max_tokens=8)) == tiny_model.chat(QUESTION, max_tokens=8)
    prompts = ["Is fever a symptom of the flu?", "Hello, how are you today?", "What is the weather like?"]
    choices = _likely_first_tokens(tiny_model, prompts[0])
    served = remote.choice_probs(prompts, choices)
    assert served.shape == (3, 2)
    # the server's top_logprobs and the local tree scoring read the same first-token distribution
    assert served[0] == pytest.approx(tiny_model.choice_probs(prompts[:1], choices)[0], abs=1e-4)
    assert remote.chat_batch([QUESTION] * 3, max_tokens=5) == [tiny_model.chat(QUESTION, max_tokens=5)] * 3


def _likely_first_tokens(model, prompt: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Two single-token answers the tiny model ranks high (random weights know no Yes/No)."""
    step = next(model.generate([{"role": "user", "content": prompt}], GenerationParams(max_tokens=1), top_logprobs=20))
    words = [t for t, _ in step.top if t.strip() == t and t.isalpha()]
    return words[:2]


@pytest.mark.slow
def test_bundled_model_served_end_to_end(bundled_model) -> None:  # type: ignore[no-untyped-def]
    with running_server(bundled_model, "smollm2") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20, temperature=0)
        assert "Paris" in reply.choices[0].message.content
        remote = OpenAIModel(url)
        prompts = ["Is the sky blue on a clear day? Answer Yes or No.", "Is ice hotter than steam? Answer Yes or No."]
        served = remote.choice_probs(prompts, ["Yes", "No"])
        for prompt, row in zip(prompts, served):
            step = next(bundled_model.generate([{"role": "user", "content": prompt}], GenerationParams(max_tokens=1),
                                               top_logprobs=20))
            answer = {"choices": [{"logprobs": {"content": [{"token": "", "logprob": 0.0, "top_logprobs": [
                {"token": t, "logprob": lp} for t, lp in step.top]}]}}]}
            expected = normalise(np.array([first_token_logprobs(answer, ("Yes", "No"), "here")]))[0]
            assert row == pytest.approx(expected, abs=1e-4)
        # the server also counts variants such as " Yes", so it is close to, not equal to, exact-token scoring
        assert served == pytest.approx(bundled_model.choice_probs(prompts, ["Yes", "No"]), abs=0.05)
