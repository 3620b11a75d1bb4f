"""GET /health: is the database reachable, have the marts been built, and how fresh is the data."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backend.db import engine

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    body: dict = {"status": "ok", "database": {"ok": False}, "data": {}}
    try:
        with engine().connect() as conn:
            conn.execute(text("select 1"))
            body["database"]["ok"] = True
            mart = conn.execute(text("select to_regclass('analytics.facility_performance') is not null")).scalar()
            if mart:
                rows, built_at = conn.execute(
                    text("select count(*), max(built_at) from analytics.facility_performance")
                ).one()
                body["data"]["facility_performance"] = {"rows": rows, "built_at": built_at and built_at.isoformat()}
            else:
                body["data"]["facility_performance"] = {"rows": 0, "built_at": None}
            if conn.execute(text("select to_regclass('ops.file_ledger') is not null")).scalar():
                files = conn.execute(
                    text("select status, count(*), max(finished_at) from ops.file_ledger group by status")
                ).all()
                body["data"]["files"] = {status: count for status, count, _ in files}
                loaded = [at for status, _, at in files if status == "loaded" and at]
                body["data"]["last_file_loaded_at"] = max(loaded).isoformat() if loaded else None
    except SQLAlchemyError:
        log.warning("health check: database unreachable", exc_info=True)
        body["status"] = "unavailable"
        return jsonify(body), 503
    if not body["data"].get("facility_performance", {}).get("rows"):
        body["status"] = "no_data"
    return jsonify(body), 200
