"""Hundreds of requests generated from the patient app's own OpenAPI document (schemathesis on
Hypothesis), valid and invalid on purpose, over real HTTP: none may get a 5xx, hang, or answer
outside the documented statuses and shapes."""

from __future__ import annotations

from collections.abc import Iterator

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
