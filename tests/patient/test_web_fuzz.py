"""Hundreds of requests generated from the patient app's own OpenAPI document (schemathesis on
Hypothesis), valid and invalid on purpose, over real HTTP: none may get a 5xx, hang, or answer
outside the documented statuses and shapes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.patient.test_web import Writer
from tests.patient.web_util import running_app
from verticals.patient.web import WebSettings, create_app

pytestmark = pytest.mark.slow

SCHEMA = schemathesis.openapi.from_dict(create_app(lambda: None).openapi())  # type: ignore[arg-type,return-value]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_app(lambda: Writer(), WebSettings(model_wait=1.0)) as url:
        yield url


def cases(path: str, method: str) -> st.SearchStrategy[schemathesis.Case]:
    operation = SCHEMA[path][method]
    return st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                     operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))


def check(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases("/api/answer", "POST"))
def test_generated_questions_never_get_a_5xx(base_url: str, case: schemathesis.Case) -> None:
    check(case, base_url)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases("/api/report", "POST"), cases("/api/upload", "POST")))
def test_generated_reports_and_uploads_never_get_a_5xx(base_url: str, case: schemathesis.Case) -> None:
    check(case, base_url)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases("/api/examples", "GET"), cases("/api/examples/{example_id}", "GET"),
                      cases("/api/themes", "GET")))
def test_generated_reads_never_get_a_5xx(base_url: str, case: schemathesis.Case) -> None:
    check(case, base_url)


def _raw(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(head)
    return conn


def _answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (it does after a refusal)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_a_client_cannot_stall_the_app_with_slow_or_many_bodies() -> None:
    head = (b"POST /api/report HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{")
    with running_app(lambda: None, WebSettings(body_timeout=1.0, max_open=2)) as url:
        started = time.monotonic()
        held = [_raw(url, head), _raw(url, head)]  # two bodies that never finish: the open limit
        time.sleep(0.2)
        with _raw(url, b'POST /api/answer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}') as third:
            refused = _answer(third)
        assert refused.split(b"\r\n")[0].endswith(b"429 Too Many Requests") and b'"error"' in refused
        for conn in held:
            with conn:
                cut = _answer(conn)
            assert cut.split(b"\r\n")[0].endswith(b"408 Request Timeout") and b"did not arrive" in cut
        assert time.monotonic() - started < 5
        with httpx.Client(base_url=url) as client:  # and the app serves the next person
            assert client.post("/api/report", json={"text": "FINDINGS: No effusion."}).status_code == 200
