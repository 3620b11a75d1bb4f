"""A schemathesis run over /openapi.json: generated requests to every operation, valid and invalid, sent with an
admin key to the API on built marts. No response may be a server error, and every response must match the
status codes, content types and schemas the document declares.

(The operations are driven from here with hypothesis rather than schemathesis's pytest plugin, which does not
run under this pytest.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.api.catalogue import declared_catalogue
from tests.backend.conftest import path_values

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Every list in both modes; /health and /ready take no parameters, so only valid requests exist for them.
RESOURCES = {e.path: e.resource for e in declared_catalogue().endpoints}
CASES = [(path, mode) for path in RESOURCES for mode in GenerationMode] + [
    ("/health", GenerationMode.POSITIVE), ("/ready", GenerationMode.POSITIVE)]


@pytest.mark.parametrize(("path", "mode"), CASES)
def test_no_request_breaks_the_api_or_its_schema(api, keys, wdb, path, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", api)
    operation = schema[path]["GET"]
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        statuses.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

    run()
    # Valid requests are answered (200, or 400 for a cursor no page issued); invalid ones are refused (an
    # empty value counts as no value, and some generated cases break only a header the key replaces).
    assert statuses
    resource = RESOURCES.get(path)
    if resource is not None and resource.single_row and mode is GenerationMode.POSITIVE:
        # Generated path values name no row: 404 is their valid answer. A row's own values name it: 200.
        assert set(statuses) & {200, 404}
        case = operation.Case(path_parameters=path_values(wdb, resource))
        assert case.call_and_validate(headers=headers, checks=CHECKS).status_code == 200
        return
    assert (200 in statuses) if mode is GenerationMode.POSITIVE else (400 in statuses)
