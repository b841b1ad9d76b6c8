"""The server under hostile or unlucky clients: disconnects, overload, slow and huge bodies, time
limits, many clients at once, and SIGTERM. Nothing may lock it, stall it or give a 500."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.llm.server_util import assert_openai_error, running_server
from tests.spawn import free_port
from verticals.llm.local import LocalModel
from verticals.llm.openai_api import OpenAIModel
from verticals.llm.serve import ServeLimits

LONG = [{"role": "user", "content": "Write a long story"}]
SHORT = [{"role": "user", "content": "Hello, how are you today?"}]
STEP = 0.02  # seconds per forward pass of the paced model


class PacedModel:
    """The tiny model slowed to `STEP` s per forward pass, never ending a reply early, counting passes:
    a long generation a test can interrupt, and a counter that shows when generation stopped."""

    def __init__(self, folder: Path) -> None:
        self.model = LocalModel(folder)
        self.model.eos_ids = set()  # replies run to max_tokens
        self.calls = 0
        self.model.model.register_forward_pre_hook(self._pace)

    def _pace(self, module: object, args: object) -> None:
        self.calls += 1
        time.sleep(STEP)

    def settled(self, timeout: float = 5.0) -> int:
        """Forward passes so far, once none came for 15 steps (fails if they go on past `timeout`)."""
        deadline = time.monotonic() + timeout
        last, quiet = -1, 0
        while time.monotonic() < deadline:
            quiet = quiet + 1 if self.calls == last else 0
            if quiet == 3:
                return last
            last = self.calls
            time.sleep(5 * STEP)
        pytest.fail(f"generation still running {timeout} s after the client left")


@pytest.fixture(scope="module")
def paced(tiny_model_dir: Path) -> PacedModel:
    return PacedModel(tiny_model_dir)


@pytest.fixture
def paced_url(paced: PacedModel) -> Iterator[str]:
    with running_server(paced.model, limits=ServeLimits(max_queue=4)) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)


def answered_at_once(url: str) -> None:
    """A short request is answered without waiting behind anything (2 tokens: 0.06 s of work)."""
    client = sdk(url)
    start = time.monotonic()
    reply = client.chat.completions.create(model="tiny", messages=SHORT, max_tokens=2)
    assert reply.choices[0].message.content is not None
    assert time.monotonic() - start < 3, "the next request waited"


def health(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/health").json()  # type: ignore[no-any-return]


def idle(url: str, timeout: float = 5.0) -> bool:
    """The server is neither generating nor holding a waiting request (polled: the worker lets go just after
    it answers)."""
    deadline = time.monotonic() + timeout
    while health(url) != {"status": "ok", "busy": False, "queued": 0}:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def queued(url: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while health(url)["queued"] < count:
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.02)


# -- clients that leave ---------------------------------------------------------------------------
def test_a_client_that_stops_reading_a_stream_frees_the_server(paced: PacedModel, paced_url: str) -> None:
    stream = sdk(paced_url).chat.completions.create(model="tiny", messages=LONG, max_tokens=400, stream=True)
    for _, _chunk in zip(range(4), stream):
        pass
    at_close = paced.calls
    stream.close()  # what `break` plus closing the SDK's stream does
    stopped = paced.settled()
    assert stopped - at_close <= 10, "generation went on after the client left"  # 400 tokens were asked for
    assert idle(paced_url)
    answered_at_once(paced_url)


def test_a_client_that_gives_up_on_a_plain_request_stops_it(paced: PacedModel, paced_url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(paced_url + "/chat/completions", json={"messages": LONG, "max_tokens": 400}, timeout=0.5)
    at_leave = paced.calls
    stopped = paced.settled()
    assert stopped - at_leave <= 10, "generation went on after the client left"  # 400 tokens were asked for
    assert idle(paced_url)
    answered_at_once(paced_url)


def test_ctrl_c_in_llm_chat_frees_the_server(paced: PacedModel, paced_url: str) -> None:
    # a shell that starts the test run in the background (`cmd &`) hands it SIGINT ignored, and a child
    # inherits that: give the chat the default handler, as a terminal's Ctrl-C finds it
    chat = subprocess.Popen([sys.executable, "-m", "verticals", "llm", "chat", "-m", paced_url, "--max-tokens", "400",
                             "Write a long story"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert chat.stdout is not None and chat.stdout.read(1)  # the first words arrived
        chat.send_signal(signal.SIGINT)
        out, err = chat.communicate(timeout=30)
    finally:
        chat.kill()
    assert chat.returncode == 130 and b"Traceback" not in err, (chat.returncode, len(out), out[-200:], err[-300:])
    paced.settled()
    assert idle(paced_url)
    answered_at_once(paced_url)


# -- overload and time limits ---------------------------------------------------------------------
def test_a_full_queue_answers_429_with_retry_after(paced: PacedModel, tiny_model_dir: Path) -> None:
    with running_server(paced.model, limits=ServeLimits(max_queue=1)) as url:
        running = sdk(url).chat.completions.create(model="tiny", messages=LONG, max_tokens=400, stream=True)
        next(iter(running))  # generating now
        waiting = threading.Thread(target=lambda: httpx.post(url + "/chat/completions", timeout=30,
                                                             json={"messages": SHORT, "max_tokens": 2}))
        waiting.start()
        queued(url, 1)
        answer = httpx.post(url + "/chat/completions", json={"messages": SHORT, "max_tokens": 2})
        assert_openai_error(answer, 429, code="rate_limit_exceeded")
        assert int(answer.headers["retry-after"]) >= 1
        with pytest.raises(openai.RateLimitError):
            sdk(url).chat.completions.create(model="tiny", messages=SHORT, max_tokens=2)
        running.close()
        waiting.join(timeout=10)
        assert not waiting.is_alive()
        assert idle(url)
        answered_at_once(url)


def test_our_client_waits_out_a_busy_server(paced: PacedModel) -> None:
    with running_server(paced.model, limits=ServeLimits(max_queue=0)) as url:
        busy = sdk(url).chat.completions.create(model="tiny", messages=LONG, max_tokens=60, stream=True)
        next(iter(busy))  # about 1.2 s of generation ahead
        remote = OpenAIModel(url, max_retries=5)
        assert remote.chat(SHORT, max_tokens=2) == LocalModel.chat(paced.model, SHORT, max_tokens=2)
        busy.close()


def test_a_request_past_the_time_limit_is_503(paced: PacedModel) -> None:
    with running_server(paced.model, limits=ServeLimits(timeout=0.5)) as url:
        start = time.monotonic()
        answer = httpx.post(url + "/chat/completions", json={"messages": LONG, "max_tokens": 400}, timeout=30)
        assert "time limit of 0.5 s" in assert_openai_error(answer, 503, code="timeout")["message"]
        assert time.monotonic() - start < 3
        # streamed: the status line went out with the first token, so the error comes as a stream event
        stream = sdk(url).chat.completions.create(model="tiny", messages=LONG, max_tokens=400, stream=True)
        with pytest.raises(openai.APIError, match="time limit"):
            for _chunk in stream:
                pass
        with pytest.raises(Exception, match="time limit"):
            "".join(OpenAIModel(url, max_retries=0).stream(LONG, max_tokens=400))
        paced.settled()
        assert idle(url)
        answered_at_once(url)


def test_twenty_concurrent_clients_all_get_their_own_answer(tiny_model) -> None:  # type: ignore[no-untyped-def]
    prompts = [[{"role": "user", "content": f"Question {i}: is fever a symptom of the flu?"}] for i in range(20)]
    expected = [tiny_model.chat(p, max_tokens=16) for p in prompts]
    with running_server(tiny_model, limits=ServeLimits(max_queue=32)) as url:
        client = sdk(url)

        def ask(i: int) -> str:
            reply = client.chat.completions.create(model="tiny", messages=prompts[i], max_tokens=16, temperature=0,
                                                   stream=i % 2 == 1)
            if i % 2 == 1:
                return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)  # type: ignore[union-attr]
            return reply.choices[0].message.content  # type: ignore[union-attr,return-value]

        start = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
        assert answers == expected
        assert time.monotonic() - start < 60
        assert idle(url)


def test_a_client_that_stays_connected_but_stops_reading_cannot_hold_the_server(tiny_model_dir: Path) -> None:
    endless = LocalModel(tiny_model_dir)
    endless.eos_ids = set()  # 400 tokens with 20 alternatives each: far more than the socket buffers hold
    with running_server(endless, limits=ServeLimits(timeout=3), send_buffer=4096) as url:
        host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
        body = json.dumps({"messages": LONG, "max_tokens": 400, "stream": True, "logprobs": True,
                           "top_logprobs": 20, "temperature": 1, "seed": 0}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills up fast
        sock.connect((host, int(port)))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with sock:
            assert idle(url)  # the generation ran to its end for the slow reader and let go of the model
            answered_at_once(url)
            time.sleep(5)  # past the time limit: the server gives up on the reader
            received = b""
            sock.settimeout(10)
            while piece := sock.recv(65536):
                received += piece
        assert received.startswith(b"HTTP/1.1 200")
        assert b"data: [DONE]" not in received  # cut off, not finished


# -- bodies: too big, too slow ----------------------------------------------------------------------
@pytest.fixture
def small_body_url(tiny_model) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with running_server(tiny_model, limits=ServeLimits(max_body_bytes=4096, body_timeout=0.5)) as url:
        yield url


def test_a_body_over_the_limit_is_413(small_body_url: str) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
    answer = httpx.post(small_body_url + "/chat/completions", json=big)
    assert "at most 4,096" in assert_openai_error(answer, 413, code="request_too_large")["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    answer = httpx.post(small_body_url + "/chat/completions", content=chunks(),
                        headers={"content-type": "application/json"})
    assert_openai_error(answer, 413, code="request_too_large")
    small = httpx.post(small_body_url + "/chat/completions", json={"messages": SHORT, "max_tokens": 2})
    assert small.status_code == 200


def test_a_body_that_trickles_in_is_cut_off_with_408(small_body_url: str) -> None:
    host, port = small_body_url.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"messages\"")
        start = time.monotonic()
        reply = b""
        while piece := sock.recv(4096):  # the server answers, then closes the connection
            reply += piece
    assert reply.startswith(b"HTTP/1.1 408")
    assert b'"code":"request_timeout"' in reply
    assert time.monotonic() - start < 5


# -- shutdown ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_cancels_the_running_stream_and_exits_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([sys.executable, "-m", "verticals", "llm", "serve", "--port", str(port),
                               "--shutdown-grace", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url + "/models")
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        client = sdk(url)
        stream = client.chat.completions.create(model="smollm2-135m-instruct", messages=[
            {"role": "user", "content": "Write a long story about a dragon."}], max_tokens=3000, stream=True)
        chunks = iter(stream)
        next(chunks)
        waited: dict[str, Exception] = {}

        def wait_in_queue() -> None:
            try:
                client.chat.completions.create(model="smollm2-135m-instruct", messages=SHORT, max_tokens=5)
            except openai.APIError as err:
                waited["error"] = err

        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        queued(url, 1)
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        with pytest.raises(openai.APIError, match="shutting down"):
            for _chunk in chunks:
                pass
        waiter.join(timeout=10)
        error = waited.get("error")
        assert isinstance(error, openai.InternalServerError)
        assert error.status_code == 503 and "shutting down" in str(error)
        server.wait(timeout=15)
        assert time.monotonic() - start < 10
        assert server.returncode in (0, -signal.SIGTERM)
        assert server.stderr is not None and b"Traceback" not in server.stderr.read()
    finally:
        server.kill()
