"""GET /api/v1/whoami: a key's id and role, which the dashboard uses to show a key only what its role reads."""

from __future__ import annotations

import pytest

from elt.contracts import ROLES


@pytest.mark.parametrize("role", ["analyst", "clinician", "admin"])
def test_a_key_is_told_its_own_role(call, wdb, keys, role):
    body = call("/api/v1/whoami", role).get_json()
    key_id = int(keys[role].split("_")[1])
    assert body == {"key_id": key_id, "role": role, "roles": list(ROLES)}
    assert wdb.execute("select role from ops.api_keys where key_id = %s", (key_id,)).fetchone() == (role,)


def test_without_a_valid_key_it_is_a_401(call):
    assert call("/api/v1/whoami", None).status_code == 401
    refused = call("/api/v1/whoami", None, headers={"Authorization": "Bearer hwk_1_" + "x" * 40})
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"


def test_every_list_says_its_least_role_in_the_openapi_document(api, call):
    from backend.api.catalogue import declared_catalogue

    paths = call("/openapi.json").get_json()["paths"]
    for endpoint in declared_catalogue().endpoints:
        assert paths[endpoint.path]["get"]["x-role"] == endpoint.resource.role
