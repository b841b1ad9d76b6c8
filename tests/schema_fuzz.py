"""Requests generated from a server's own OpenAPI document (schemathesis on Hypothesis), valid ones
and invalid ones on purpose, and what every answer must be: no 5xx, a documented status and shape,
errors in our one shape (`{"error": {"message", "type", "param", "code"}}`)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


def schema_of(openapi: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(openapi)


def cases(schema: Any, path: str, method: str) -> st.SearchStrategy[schemathesis.Case]:
    operation = schema[path][method]
    return st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                     operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))


def check(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
