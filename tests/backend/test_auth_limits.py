"""Failed authentications are limited per client address (API_AUTH_FAILURE_LIMIT), in one counter across every
/api/v1 endpoint: a client trying random keys, each of which has a per-key bucket of its own, is stopped.
Requests with valid keys never count, and keep their own per-key limit (API_RATE_LIMIT)."""

from __future__ import annotations

import secrets

import pytest

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings


def random_key() -> str:
    """A key of the right shape that no one was given: a different one every call."""
    return f"hwk_{secrets.randbelow(10**9)}_{secrets.token_urlsafe(32)}"


@pytest.fixture
def limited(settings, facilities_mart):
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="1000 per minute",
                                 auth_failure_limit="5 per minute"))
    return app, create_key(settings.database_url, "limits", "analyst")


def get(app, path: str, key: str | None, address: str = "10.0.0.1"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return app.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": address})


def test_random_keys_from_one_address_are_limited_across_endpoints(limited):
    app, valid = limited
    paths = ["/api/v1/facilities", "/api/v1/triage-trends", "/api/v1/drops"]
    statuses = [get(app, paths[n % 3], random_key()).status_code for n in range(5)]
    assert statuses == [401] * 5
    refused = get(app, "/api/v1/facilities", random_key())
    error = refused.get_json()["error"]
    assert (refused.status_code, error["code"]) == (429, "too_many_requests")
    assert "API_AUTH_FAILURE_LIMIT" in error["message"] and int(refused.headers["Retry-After"]) > 0
    assert get(app, "/api/v1/facilities", None).status_code == 429  # no key at all is a failure too
    # Another address is not affected, and its valid key is served.
    assert get(app, "/api/v1/facilities", valid, address="10.0.0.2").status_code == 200
    assert get(app, "/api/v1/facilities", random_key(), address="10.0.0.2").status_code == 401


def test_requests_with_a_valid_key_never_count_as_failures(limited):
    app, valid = limited
    assert [get(app, "/api/v1/facilities", valid).status_code for _ in range(20)] == [200] * 20
    assert [get(app, "/api/v1/facilities", random_key()).status_code for _ in range(5)] == [401] * 5
    assert get(app, "/api/v1/facilities", random_key()).status_code == 429


def test_valid_keys_keep_their_own_limit(settings, facilities_mart):
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="3 per minute",
                                 auth_failure_limit="5 per minute"))
    key, other = (create_key(settings.database_url, name, "analyst") for name in ("one", "two"))
    assert [get(app, "/api/v1/facilities", key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert get(app, "/api/v1/facilities", other).status_code == 200  # the same address, another key


def test_the_failure_limit_can_be_turned_off(settings, facilities_mart):
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="", auth_failure_limit=""))
    assert {get(app, "/api/v1/facilities", random_key()).status_code for _ in range(30)} == {401}
