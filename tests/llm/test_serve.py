"""The OpenAI-compatible server, exercised with the official `openai` client over real HTTP:
answers, streaming, logprobs, model names, and every error in OpenAI's shape."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.llm.server_util import assert_openai_error, running_server
from verticals.llm.base import GenerationParams, normalise
from verticals.llm.errors import LLMError, ServerError
from verticals.llm.local import LocalModel
from verticals.llm.openai_api import OpenAIModel, first_token_logprobs

QUESTION = [{"role": "user", "content": "Is fever a symptom of the flu?"}]


@pytest.fixture(scope="module")
def tiny_url(tiny_model):  # type: ignore[no-untyped-def]
    with running_server(tiny_model) as url:
        yield url


@pytest.fixture(scope="module")
def client(tiny_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0)


def post(url: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


# -- answers ------------------------------------------------------------------------------------
def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


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


@pytest.mark.parametrize("seed", range(6))
def test_logprob_tokens_spell_the_message_without_the_end_of_turn(client: openai.OpenAI, tiny_model,  # type: ignore[no-untyped-def]
                                                                   seed: int) -> None:
    # sampled at temperature 2, the random model emits stray bytes, end-of-turn tokens and everything between
    reply = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=40, temperature=2,
                                           seed=seed, logprobs=True)
    choice = reply.choices[0]
    tokens = choice.logprobs.content
    assert all(t.token != "<|im_end|>" for t in tokens)
    assert reply.usage.completion_tokens == len(tokens)
    raw = b"".join(bytes(t.bytes or []) for t in tokens)
    # the message is the tokens' own bytes (an unfinished last character is held back from the text)
    assert raw.decode("utf-8", errors="replace").rstrip("\ufffd") == choice.message.content
    for token in tokens:
        if token.bytes is None:  # a special token (padding): in the list, not in the text
            assert token.token in ("<|pad|>", "<|im_start|>")
        else:
            assert token.token == bytes(token.bytes).decode("utf-8", errors="backslashreplace")


def test_streaming_pieces_join_to_the_full_reply(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0,
                                            stream=True, logprobs=True, top_logprobs=2,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    # then one chunk per token, the finish reason, and the usage chunk OpenAI sends with include_usage
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    token_chunks = chunks[1:-2]
    assert len(token_chunks) == full.usage.completion_tokens
    assert all(len(c.choices[0].logprobs.content[0].top_logprobs) == 2 for c in token_chunks)


def test_a_tiny_temperature_samples_like_greedy(client: openai.OpenAI) -> None:
    greedy = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0)
    tiny = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=1e-45, seed=1)
    assert tiny.choices[0].message.content == greedy.choices[0].message.content


def test_the_64_bit_seed_range_is_served_and_reproducible(client: openai.OpenAI) -> None:
    for seed in (2**63 - 1, -(2**63)):
        replies = {client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, temperature=1,
                                                  seed=seed).choices[0].message.content for _ in range(2)}
        assert len(replies) == 1


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
    words = [t.token for t in step.top if t.token.strip() == t.token and t.token.isalpha()]
    return words[:2]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_an_adapter_is_served_beside_its_base(tiny_model, tiny_model_dir, lora_dir) -> None:  # type: ignore[no-untyped-def]
    adapted = LocalModel(tiny_model_dir, adapter=lora_dir)
    with running_server(adapted, "tiny-lora", base_name="tiny") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-lora", "tiny"]

        def reply(name: str) -> str:
            answer = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=12, temperature=0)
            return answer.choices[0].message.content  # type: ignore[return-value]

        assert reply("tiny-lora") == adapted.chat(QUESTION, max_tokens=12)
        assert reply("tiny") == tiny_model.chat(QUESTION, max_tokens=12)
        assert reply("tiny") != reply("tiny-lora")
        assert reply("tiny-lora") == adapted.chat(QUESTION, max_tokens=12)  # the adapter is back on


# -- errors: OpenAI's shape and status codes ------------------------------------------------------
@pytest.mark.parametrize(("body", "param", "code"), [
    ({"messages": QUESTION, "temperature": 5}, "temperature", "less_than_equal"),
    ({"messages": QUESTION, "top_p": 0}, "top_p", "greater_than"),
    ({"messages": QUESTION, "seed": 2**64}, "seed", "less_than_equal"),
    ({"messages": QUESTION, "n": 2}, "n", "value_error"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens", "greater_than_equal"),
    ({"messages": QUESTION, "logprobs": True, "top_logprobs": 50}, "top_logprobs", "less_than_equal"),
    ({"messages": QUESTION, "top_logprobs": 3}, "top_logprobs", "invalid_value"),
    ({"messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, "stop", "value_error"),
    ({"messages": QUESTION, "stop": ""}, "stop", "value_error"),
    ({"messages": []}, "messages", "too_short"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.[0].role", "literal_error"),
    ({"messages": [{"role": "user"}]}, "messages.[0].content", "missing"),
    ({}, "messages", "missing"),
    ({"messages": QUESTION, "frobnicate": 1}, "frobnicate", "unrecognized_parameter"),
    ({"messages": QUESTION, "tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
    ({"messages": QUESTION, "presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter"),
    ({"messages": QUESTION, "response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
])
def test_invalid_requests_are_400_naming_the_parameter(tiny_url: str, body: dict, param: str, code: str) -> None:
    assert_openai_error(post(tiny_url, body), 400, param=param, code=code)


def test_harmless_openai_fields_are_accepted(tiny_url: str) -> None:
    body = {"messages": QUESTION, "max_tokens": 2, "user": "u1", "tools": [], "presence_penalty": 0,
            "response_format": {"type": "text"}, "temperature": None, "n": 1}
    assert post(tiny_url, body).status_code == 200


@pytest.mark.parametrize("raw", [b'{"messages": ', b"[" * 200_000 + b"]" * 200_000, b"\xff\xfe", b"null", b"[]"])
def test_bodies_that_are_not_a_request_are_400(tiny_url: str, raw: bytes) -> None:
    answer = httpx.post(tiny_url + "/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(answer, 400)


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"messages": [{"role": "user", "content": "fever \\udfff"}]}', "messages.[0].content"),
    (b'{"\\ud800": 1, "messages": [{"role": "user", "content": "hi"}]}', "body"),
])
def test_text_that_is_not_unicode_is_400(tiny_url: str, raw: bytes, param: str) -> None:
    # JSON may spell a lone surrogate; Python reads it, but it cannot be tokenised or sent back as UTF-8
    answer = httpx.post(tiny_url + "/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert "not valid Unicode" in assert_openai_error(answer, 400, param=param)["message"]


def test_a_model_name_that_is_not_unicode_is_404(tiny_url: str) -> None:
    assert_openai_error(httpx.get(tiny_url + "/models/%ED%A0%80"), 404)


def test_content_the_model_cannot_read_is_400(tiny_url: str, tiny_model) -> None:  # type: ignore[no-untyped-def]
    not_an_image = {"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:image/png;base64,AA=="}}]}
    assert "cannot read the image" in assert_openai_error(post(tiny_url, {"messages": [not_an_image]}), 400)["message"]
    remote = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}]}
    assert "not fetched" in assert_openai_error(post(tiny_url, {"messages": [remote]}), 400)["message"]
    odd_part = {"role": "user", "content": [{"type": "audio", "data": "x"}]}
    assert "malformed content part" in assert_openai_error(post(tiny_url, {"messages": [odd_part]}), 400)["message"]
    with running_server(tiny_model, read_images=False) as url:  # verticals llm serve --no-ocr
        image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": _caption_png("HI")}}]}
        assert "text only" in assert_openai_error(post(url, {"messages": [image]}), 400)["message"]


def _caption_png(text: str) -> str:
    """A data URL of a white PNG with `text` in large black letters."""
    import base64
    import io

    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), 40)
    image = Image.new("RGB", (640, 120), "white")
    ImageDraw.Draw(image).text((20, 35), text, font=font, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_text_model_gets_the_text_read_in_an_image(client: openai.OpenAI, tiny_model) -> None:  # type: ignore[no-untyped-def]
    question = {"type": "text", "text": "What does the sign say?"}
    image = {"type": "image_url", "image_url": {"url": _caption_png("FEVER AND COUGH")}}
    reply = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0,
                                           messages=[{"role": "user", "content": [question, image]}])
    assert reply.model == "tiny+ocr"  # the reply says the image was read, not seen
    said = {"type": "text", "text": '[an image with the text "FEVER AND COUGH"]'}
    read = [{"role": "user", "content": [question, said]}]
    assert reply.usage.prompt_tokens == len(tiny_model.prompt_ids(read))
    assert reply.choices[0].message.content == tiny_model.chat(read, max_tokens=4)


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI, tiny_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)
    assert caught.value.code == "model_not_found" and "tiny" in caught.value.message
    assert_openai_error(post(tiny_url, {"model": "gpt-4o", "messages": QUESTION}), 404, param="model",
                        code="model_not_found")


def test_unknown_routes_and_methods_answer_in_openai_shape(tiny_url: str) -> None:
    assert "Invalid URL" in assert_openai_error(httpx.post(tiny_url + "/completions", json={}), 404)["message"]
    assert_openai_error(httpx.get(tiny_url + "/chat/completions"), 405)


def test_context_length_is_checked_before_any_work(tiny_url: str, tiny_model) -> None:  # type: ignore[no-untyped-def]
    context = tiny_model.context_length
    assert context == 512
    long = [{"role": "user", "content": "fine " * 40_000}]
    error = assert_openai_error(post(tiny_url, {"messages": long}), 400, param="messages",
                                code="context_length_exceeded")
    assert f"maximum context length is {context} tokens" in error["message"]
    assert f"resulted in {len(tiny_model.prompt_ids(long))} tokens" in error["message"]
    prompt = len(tiny_model.prompt_ids(QUESTION))
    error = assert_openai_error(post(tiny_url, {"messages": QUESTION, "max_tokens": context}), 400,
                                code="context_length_exceeded")
    assert f"requested {prompt + context} tokens ({prompt} in the messages, {context} in the completion)" \
        in error["message"]
    assert post(tiny_url, {"messages": QUESTION, "max_tokens": context - prompt, "temperature": 0}).status_code == 200


def test_without_max_tokens_the_reply_fits_the_context(tiny_url: str, tiny_model) -> None:  # type: ignore[no-untyped-def]
    near_full = [{"role": "user", "content": "fine " * 235}]
    room = tiny_model.context_length - len(tiny_model.prompt_ids(near_full))
    assert 0 < room < 100
    answer = post(tiny_url, {"messages": near_full, "temperature": 0})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= room


def test_openai_sdk_raises_the_servers_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=QUESTION, temperature=3)
    assert caught.value.param == "temperature" and "less than or equal to 2" in caught.value.message


def test_our_client_shows_the_real_message(tiny_url: str) -> None:
    remote = OpenAIModel(tiny_url, max_retries=0)
    with pytest.raises(ServerError, match="maximum context length is 512 tokens"):
        remote.chat("fine " * 2000)
    with pytest.raises(ServerError, match="maximum context length"):
        "".join(remote.stream("fine " * 2000))
    # client and server agree on ranges: what the server would refuse fails before any request
    with pytest.raises(LLMError, match=r"temperature must be in \[0, 2"):
        remote.chat("hi", temperature=2.5)
    with pytest.raises(LLMError, match="64-bit"):
        remote.chat("hi", seed=2**64)


@pytest.mark.slow
def test_bundled_model_served_end_to_end(bundled_model) -> None:  # type: ignore[no-untyped-def]
    with running_server(bundled_model, "smollm2") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20, temperature=0)
        assert "Paris" in reply.choices[0].message.content
        # an emoji comes in several tokens: each carries its own bytes, and together they spell the reply
        emoji = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Send me three happy emojis."}], max_tokens=12,
            temperature=0, logprobs=True)
        content, tokens = emoji.choices[0].message.content, emoji.choices[0].logprobs.content
        assert any(ord(c) > 0xFFFF for c in content)
        assert b"".join(bytes(t.bytes) for t in tokens).decode("utf-8", errors="replace").rstrip("\ufffd") == content
        assert all("\ufffd" not in t.token for t in tokens)
        # 40,000 tokens against a context of 8,192: refused before any work
        with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "word " * 40_000}])
        remote = OpenAIModel(url)
        prompts = ["Is the sky blue on a clear day? Answer Yes or No.", "Is ice hotter than steam? Answer Yes or No."]
        served = remote.choice_probs(prompts, ["Yes", "No"])
        for prompt, row in zip(prompts, served):
            step = next(bundled_model.generate([{"role": "user", "content": prompt}], GenerationParams(max_tokens=1),
                                               top_logprobs=20))
            answer = {"choices": [{"logprobs": {"content": [{"token": "", "logprob": 0.0, "top_logprobs": [
                {"token": t.token, "logprob": t.logprob} for t in step.top]}]}}]}
            expected = normalise(np.array([first_token_logprobs(answer, ("Yes", "No"), "here")]))[0]
            assert row == pytest.approx(expected, abs=1e-4)
        # the server also counts variants such as " Yes", so it is close to, not equal to, exact-token scoring
        assert served == pytest.approx(bundled_model.choice_probs(prompts, ["Yes", "No"]), abs=0.05)
