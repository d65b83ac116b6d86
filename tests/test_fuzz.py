"""Property-based fuzzing of the live API from its own OpenAPI description (schemathesis):
no 5xx, and every response, valid input or not, matches the documented schema."""
import pytest
from hypothesis import HealthCheck, given, settings

from qa.openapi import openapi_document

OPERATIONS = [(path, method) for path, item in openapi_document()["paths"].items() for method in item]


@pytest.mark.parametrize("path,method", OPERATIONS)
def test_api_conforms_to_its_openapi(api_schema, path, method):
    operation = api_schema[path][method.upper()]

    # Hypothesis drives schemathesis' strategy directly: its pytest plugin does not load under pytest 9.
    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.call_and_validate()

    check()
