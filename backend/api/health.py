"""GET /health (liveness: the process answers) and GET /ready (can it serve: the database answers, every
mart has been built, and how old each build is against the freshness threshold). Both open, no key.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backend.db import engine

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    """200 when the database answers and every nightly mart exists (`status` says `stale` when a build is older
    than API_FRESHNESS_HOURS); 503 when the database does not answer or a nightly mart has never been built.
    Each mart says whether it is `built` (the table exists) and `has_rows`: a mart built from files that held
    none of its rows (a KH03 workbook with only the trust sheet leaves the specialty mart empty) is built, and
    empty; its `built_at` (the newest row's build time) is then null. Marts rebuilt when their drop arrives (the
    quarterly bed marts) are listed with `refreshed: on_arrival` and never make the API unready."""
    settings = current_app.config["API_SETTINGS"]
    body: dict = {"status": "ready", "database": {"ok": False}, "freshness_hours": settings.freshness_hours,
                  "marts": {}}
    try:
        with engine().connect() as conn:
            conn.execute(text("select 1"))
            body["database"]["ok"] = True
            catalogue = current_app.extensions["catalogue"]  # backend/api/catalogue.py
            for table in catalogue.served_marts():
                body["marts"][table] = _mart_state(conn, table, timedelta(hours=settings.freshness_hours))
            for table in catalogue.on_arrival_marts() & set(body["marts"]):
                body["marts"][table]["refreshed"] = "on_arrival"
            files = conn.execute(text("select max(finished_at) from ops.file_ledger where status = 'loaded'")).scalar()
            body["last_file_loaded_at"] = files and files.isoformat()
    except SQLAlchemyError:
        log.warning("ready check: database unreachable or not readable", exc_info=True)
        body["status"] = "unavailable"
        return jsonify(body), 503
    nightly = [mart for mart in body["marts"].values() if mart.get("refreshed") != "on_arrival"]
    if not all(mart["built"] for mart in nightly):
        body["status"] = "not_built"
        return jsonify(body), 503
    if not all(mart["fresh"] or not mart["has_rows"] for mart in nightly):
        body["status"] = "stale"
    return jsonify(body), 200


def _mart_state(conn, table: str, threshold: timedelta) -> dict:
    """built (the table exists), has_rows, built_at (its newest row's build), age and freshness of one mart."""
    if not conn.execute(text("select to_regclass(:t) is not null"), {"t": table}).scalar():
        return {"built": False, "has_rows": False, "built_at": None, "fresh": False}
    built_at = conn.execute(text(f"select max(built_at) from {table}")).scalar()  # noqa: S608 - declared names
    age = (datetime.now(UTC) - built_at) if built_at else None
    return {"built": True, "has_rows": built_at is not None, "built_at": built_at and built_at.isoformat(),
            "age_hours": age and round(age.total_seconds() / 3600, 2),
            "fresh": bool(age is not None and age <= threshold)}
