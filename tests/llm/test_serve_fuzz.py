"""Hundreds of requests generated from the server's own OpenAPI document (schemathesis on
Hypothesis): valid ones, and invalid ones on purpose. None may get a 5xx, hang, or answer
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

from tests.llm.server_util import running_server
from verticals.llm.serve import ServeLimits, create_app

pytestmark = pytest.mark.slow

# the document does not need a model: build it from an app that never starts
SCHEMA = schemathesis.openapi.from_dict(create_app(lambda: None, "tiny").openapi())  # type: ignore[arg-type,return-value]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def base_url(tiny_model) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with running_server(tiny_model, limits=ServeLimits(timeout=30)) as url:
        yield url.removesuffix("/v1")


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


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases("/v1/chat/completions", "POST"))
def test_generated_chat_requests_never_get_a_5xx(base_url: str, case: schemathesis.Case) -> None:
    check(case, base_url)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases("/v1/models", "GET"), cases("/v1/models/{model_id}", "GET")))
def test_generated_model_requests_never_get_a_5xx(base_url: str, case: schemathesis.Case) -> None:
    check(case, base_url)
