"""GET /api/v1/whoami: the caller's key id and role, so that a client (the dashboard, backend/dashboard) shows a key
only what its role may read, without trying endpoints to find out. Any valid key; the answer holds nothing the key's
holder does not already have.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from backend.auth import require
from elt.contracts import ROLES

bp = Blueprint("whoami", __name__, url_prefix="/api/v1")


@bp.get("/whoami")
def whoami():
    caller = require(ROLES[0])
    return jsonify(key_id=caller.key_id, role=caller.role, roles=list(ROLES))


def openapi_operations(_settings) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(paths -> method -> operation, component schemas) of /api/v1/whoami, for /openapi.json."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"/api/v1/whoami": {"get": {
        "operationId": "whoami", "tags": ["service"], "summary": "The caller's key id and role.",
        "description": "Any key. `roles` lists every role, least first: each role reads what the ones before it read.",
        "security": [{"bearerKey": []}, {"headerKey": []}],
        "responses": {
            "200": {"description": "The key's id and role.", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Whoami"}}}},
            "401": {"description": "No API key, or not a valid one", **error},
            "429": {"description": "Too many requests from this key, or failed authentications from this address",
                    **error}}}}}, {
        "Whoami": {"type": "object", "required": ["key_id", "role", "roles"], "additionalProperties": False,
                   "properties": {"key_id": {"type": "integer"},
                                  "role": {"type": "string", "enum": list(ROLES)},
                                  "roles": {"type": "array", "items": {"type": "string", "enum": list(ROLES)}}}}}
