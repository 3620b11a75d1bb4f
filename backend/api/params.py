"""Query-string parsing shared by list endpoints: allow-listed filters, a capped page size, keyset cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from backend.errors import ApiError


def parse_query(model: type[BaseModel]) -> BaseModel:
    """Validate request.args against a pydantic model; unknown parameters are a 400 naming the allowed ones."""
    allowed = sorted(model.model_fields)
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}", allowed=allowed)
    settings = current_app.config["API_SETTINGS"]
    values: dict[str, Any] = {k: v for k, v in request.args.items() if v != ""}
    values.setdefault("limit", settings.default_page_size)
    try:
        query = model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "query"
        raise ApiError(400, "invalid_parameter", f"{field}: {first['msg']}", allowed=allowed) from None
    if getattr(query, "limit", 0) > settings.max_page_size:
        raise ApiError(400, "invalid_parameter", f"limit must be at most {settings.max_page_size}", allowed=allowed)
    return query


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API issued; start again without it")
    return values
