"""Hundreds of requests generated from the server's own OpenAPI document (schemathesis on
Hypothesis): valid ones, and invalid ones on purpose. None may get a 5xx, hang, or answer
outside the documented statuses and shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.llm.server_util import running_server
from tests.schema_fuzz import cases, check, schema_of
from verticals.llm.serve import ServeLimits, create_app

pytestmark = pytest.mark.slow

# the document does not need a model: build it from an app that never starts
SCHEMA = schema_of(create_app(lambda: None, "tiny").openapi())


@pytest.fixture(scope="module")
def base_url(tiny_model) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with running_server(tiny_model, limits=ServeLimits(timeout=30)) as url:
        yield url.removesuffix("/v1")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(SCHEMA, "/v1/chat/completions", "POST"))
def test_generated_chat_requests_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(cases(SCHEMA, "/v1/models", "GET"), cases(SCHEMA, "/v1/models/{model_id}", "GET")))
def test_generated_model_requests_never_get_a_5xx(base_url: str, case: Any) -> None:
    check(case, base_url)
