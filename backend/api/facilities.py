"""GET /api/v1/facilities: facilities with their activity figures, from analytics.facility_performance."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from backend.api.params import decode_cursor, encode_cursor, parse_query
from backend.db import engine

bp = Blueprint("facilities", __name__, url_prefix="/api/v1/facilities")

# The response schema: exactly these columns, so new mart columns never leak unannounced.
COLUMNS = (
    "facility_id", "facility_name", "state", "lga", "facility_type", "patient_count", "medical_record_count",
    "triage_visit_count", "urgent_visit_count", "avg_triage_level", "first_visit_date", "last_visit_date",
    "active_days", "avg_daily_visits", "volume_band",
)


class FacilityQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(None, max_length=100)
    lga: str | None = Field(None, max_length=100)
    facility_type: str | None = Field(None, max_length=100)
    volume_band: Literal["High", "Medium", "Low"] | None = None
    limit: int = Field(100, ge=1)
    cursor: str | None = Field(None, max_length=500)


def _jsonable(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value.__class__.__name__ == "Decimal":
        return float(value)
    return value


@bp.get("")
def list_facilities():
    query: FacilityQuery = parse_query(FacilityQuery)
    where, params = [], {"limit": query.limit + 1}
    # Filters compare case-insensitively; the mart stores normalised names (Lagos, FCT, Ikeja).
    for name in ("state", "lga", "facility_type", "volume_band"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"lower({name}) = lower(:{name})")
            params[name] = value
    if query.cursor:
        params["after_name"], params["after_id"] = decode_cursor(query.cursor, 2)
        where.append("(facility_name, facility_id) > (:after_name, :after_id)")
    sql = text(
        f"select {', '.join(COLUMNS)}, built_at from analytics.facility_performance "  # noqa: S608 - fixed names
        f"{'where ' + ' and '.join(where) if where else ''} order by facility_name, facility_id limit :limit"
    )
    with engine().connect() as conn:
        rows = conn.execute(sql, params).mappings().all()
        as_of = conn.execute(text("select max(built_at) from analytics.facility_performance")).scalar()
    page = rows[: query.limit]
    next_cursor = encode_cursor([page[-1]["facility_name"], page[-1]["facility_id"]]) if len(rows) > query.limit else None
    return jsonify(
        data=[{column: _jsonable(row[column]) for column in COLUMNS} for row in page],
        meta={
            "count": len(page),
            "limit": query.limit,
            "next_cursor": next_cursor,
            "as_of": _jsonable(as_of),
            "source": "analytics.facility_performance",
        },
    )
