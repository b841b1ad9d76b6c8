"""Hundreds of requests generated from the patient app's own OpenAPI document (schemathesis on
Hypothesis), valid and invalid on purpose, over real HTTP: none may get a 5xx, hang, or answer
outside the documented statuses and shapes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.patient.test_web import Writer
from tests.patient.web_util import running_app
from tests.schema_fuzz import cases, check, schema_of
from verticals.patient.web import WebSettings, create_app

pytestmark = pytest.mark.slow

SCHEMA = schema_of(create_app(lambda: None).openapi())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_app(lambda: Writer(), WebSettings(model_wait=1.0)) as url:
        yield url


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(SCHEMA, "/api/answer", "POST"))
def test_generated_questions_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases(SCHEMA, "/api/report", "POST"), cases(SCHEMA, "/api/upload", "POST")))
def test_generated_reports_and_uploads_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases(SCHEMA, "/api/examples", "GET"), cases(SCHEMA, "/api/examples/{example_id}", "GET"),
                      cases(SCHEMA, "/api/themes", "GET")))
def test_generated_reads_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases(SCHEMA, "/api/image/info", "POST"), cases(SCHEMA, "/api/image/render", "POST")))
def test_generated_image_requests_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)


@pytest.fixture(scope="module")
def slice_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.patient.dicom_util import ct_series

    return (ct_series(tmp_path_factory.mktemp("cd")) / "IM0000").read_bytes()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_dicom_slice_damaged_anywhere_gets_an_answer_or_a_400(base_url: str, slice_bytes: bytes,
                                                                  data: st.DataObject) -> None:
    damaged = bytearray(slice_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    route = data.draw(st.sampled_from(["/api/image/info", "/api/image/render?window=lung"]))
    response = httpx.post(base_url + route, content=bytes(damaged[:cut]), timeout=30)
    assert response.status_code in (200, 400), (response.status_code, response.text[:200])
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "invalid_image"


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
