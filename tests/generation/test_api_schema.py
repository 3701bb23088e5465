"""Property-based: schemathesis generates requests from our OpenAPI schema for every operation;
none may get a 5xx or a response that breaks the schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from sdweb.shared.api_keys import api_key_create

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def bearer(alice, checkpoint):
    # Requests go through the real WSGI handler, which would close the test's database
    # connection after each one; Django's own test client holds it open the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield f"Bearer {api_key_create(user=alice, name='schemathesis')[1]}"
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# One test per operation, by its label (schemathesis' own parametrize gives its tests one shared id,
# which pytest -n would run only once).
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_request_the_schema_allows_gets_a_server_error_or_an_off_schema_answer(operation, bearer, monkeypatch):
    monkeypatch.setattr("rest_framework.throttling.UserRateThrottle.THROTTLE_RATES", {"user": "100000/min"})

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.headers = {**(case.headers or {}), "Authorization": bearer}
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    check()
