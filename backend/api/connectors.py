"""GET /api/v1/connectors and /api/v1/connectors/<name>/runs: the declared connectors (CONNECTORS_DIR, elt/connectors)
and the record of each run (`ops.connector_runs`), for the people who run the warehouse. The admin role only.

The declarations are read on each request (a few small files), like the contracts, so a new connector shows without a
restart; a file that does not load is listed under `problems` with the reason (`elt connectors check` says the same).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from backend.auth import require
from backend.db import run
from backend.errors import ApiError
from elt.config import Settings, get_settings

bp = Blueprint("connectors", __name__, url_prefix="/api/v1")

NAME = re.compile(r"[a-z][a-z0-9_]{1,60}")
MAX_LIMIT = 500
RUN_COLUMNS = ("run_id", "connector", "direction", "run_key", "trigger", "status", "started_at", "finished_at", "rows",
               "bytes", "sha256", "location", "as_of", "source_files", "cursor_before", "cursor_after", "dry_run",
               "full_reload", "error", "detail")


def _warehouse() -> Settings:
    return current_app.config.get("ELT_SETTINGS") or get_settings()


def _declared() -> tuple[dict[str, Any], list[str]]:
    """The connectors that load, by name, and what is wrong with those that do not."""
    from elt.connectors.spec import load_declared

    return load_declared(_warehouse().connectors_dir)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


@bp.get("/connectors")
def list_connectors():
    require("admin")
    connectors, problems = _declared()
    last = {row[0]: _jsonable(dict(zip(("run_id", "status", "started_at", "finished_at", "rows"), row[1:],
                                       strict=True)))
            for row in run(lambda conn: conn.execute(
                "select distinct on (connector) connector, run_id, status, started_at, finished_at, rows "
                "from ops.connector_runs where connector = any(%s) order by connector, run_id desc",
                (list(connectors),)).fetchall())} if connectors else {}
    data = [{"name": c.name, "description": c.description, "direction": c.direction, "kind": c.kind.name,
             "moves": c.what(), "schedule": c.schedule, "personal_data": c.personal_data, "dag_id": c.dag_id,
             "last_run": last.get(c.name)} for c in connectors.values()]
    return jsonify({"data": data, "problems": problems})


@bp.get("/connectors/<name>/runs")
def connector_runs(name: str):
    require("admin")  # who may ask comes before what was asked
    limit, before = _paging()
    if not NAME.fullmatch(name) or name not in _declared()[0]:
        raise ApiError(404, "not_found", "no such connector is declared (GET /api/v1/connectors lists them)")
    rows = run(lambda conn: conn.execute(
        f"select {', '.join(RUN_COLUMNS)} from ops.connector_runs where connector = %s "  # noqa: S608 - fixed columns
        "and (%s::bigint is null or run_id < %s) order by run_id desc limit %s",
        (name, before, before, limit)).fetchall())
    data = [_jsonable(dict(zip(RUN_COLUMNS, row, strict=True))) for row in rows]
    following = data[-1]["run_id"] if len(data) == limit else None
    return jsonify({"data": data, "meta": {"connector": name, "limit": limit, "next_before": following}})


def _paging() -> tuple[int, int | None]:
    unknown = set(request.args) - {"limit", "before"}
    if unknown:
        raise ApiError(400, "invalid_parameter", "unknown parameter(s); allowed: limit, before",
                       allowed=["limit", "before"])
    try:
        limit = int(request.args.get("limit", 50))
        before = int(request.args["before"]) if "before" in request.args else None
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit and before are whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit: from 1 to {MAX_LIMIT}")
    return limit, before


def _nullable(json_type: str, description: str = "", **more: Any) -> dict[str, Any]:
    return {"type": [json_type, "null"], **({"description": description} if description else {}), **more}


RUN_SCHEMA = {"type": "object", "additionalProperties": False, "required": list(RUN_COLUMNS), "properties": {
    "run_id": {"type": "integer"}, "connector": {"type": "string"},
    "direction": {"type": "string", "enum": ["deliver", "pull"]},
    "run_key": {"type": "string", "description": "The same for every attempt at one delivery: `<connector>-<as_of>`."},
    "trigger": {"type": "string", "enum": ["schedule", "manual", "cli"]},
    "status": {"type": "string", "enum": ["running", "succeeded", "failed", "skipped"],
               "description": "skipped: the same run_key was delivered before, nothing was sent."},
    "started_at": {"type": "string", "format": "date-time"},
    "finished_at": _nullable("string", format="date-time"),
    "rows": _nullable("integer"), "bytes": _nullable("integer"),
    "sha256": _nullable("string", "SHA-256 of the bytes delivered."),
    "location": _nullable("string", "Where it went: s3://..., a table, a path."),
    "as_of": _nullable("string", "The delivered mart's build time.", format="date-time"),
    "source_files": {"type": "array", "items": {"type": "integer"},
                     "description": "Ledger ids of the files the mart was built from (as a mart's meta.sources)."},
    "cursor_before": _nullable("string"), "cursor_after": _nullable("string"),
    "dry_run": {"type": "boolean"}, "full_reload": {"type": "boolean"},
    "error": _nullable("string", "The step and the cause, without row values."),
    "detail": {"type": "object", "description": "What the kind adds (parts, batches, files landed)."},
}}
CONNECTOR_SCHEMA = {"type": "object", "additionalProperties": False, "required": [
    "name", "description", "direction", "kind", "moves", "schedule", "personal_data", "dag_id", "last_run"],
    "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "direction": {"type": "string", "enum": ["deliver", "pull"]}, "kind": {"type": "string"},
        "moves": {"type": "string", "description": "What moves where, in words."},
        "schedule": _nullable("string", "cron (UTC); null: by hand only."), "personal_data": {"type": "boolean"},
        "dag_id": {"type": "string"},
        "last_run": {"oneOf": [{"type": "null"}, {"type": "object", "additionalProperties": False,
                                                  "required": ["run_id", "status", "started_at", "finished_at", "rows"],
                                                  "properties": {k: RUN_SCHEMA["properties"][k] for k in (
                                                      "run_id", "status", "started_at", "finished_at", "rows")}}]}}}


def openapi_operations(settings) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(paths -> method -> operation, component schemas) of the connector endpoints."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    errors = {"400": "An unknown parameter, or limit/before that is not a whole number in range",
              "401": "No API key, or not a valid one", "403": "The key is not an admin's",
              "429": "Too many requests from this key (API_RATE_LIMIT)",
              "500": "Unexpected error (logged; no detail is returned)", "503": "The database did not answer"}
    security, tags = [{"bearerKey": []}, {"headerKey": []}], ["connectors"]
    paths = {
        "/api/v1/connectors": {"get": {
            "operationId": "list_connectors", "tags": tags, "security": security,
            "summary": "The declared connectors (CONNECTORS_DIR) and each one's last run.",
            "description": "Admin role. Every declaration that loads, with what it moves, when it runs and its last "
                           "run's state; `problems` lists the files that do not load and why.",
            "responses": {"200": {"description": "The connectors.", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["data", "problems"], "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/Connector"}},
                    "problems": {"type": "array", "items": {"type": "string"}}}}}}},
                **{s: {"description": d, **error} for s, d in errors.items() if s != "400"}}}},
        "/api/v1/connectors/{name}/runs": {"get": {
            "operationId": "list_connector_runs", "tags": tags, "security": security,
            "summary": "One connector's run records (ops.connector_runs), newest first.",
            "description": "Admin role. Pages with `before` (a run_id: `meta.next_before` of the page before).",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 61},
                 "description": "The connector (its declaration's file stem)."},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                            "default": 50}, "description": "Runs per page."},
                {"name": "before", "in": "query", "schema": {"type": "integer"},
                 "description": "Only runs with a smaller run_id."}],
            "responses": {"200": {"description": "The runs.", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["data", "meta"], "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/ConnectorRun"}},
                    "meta": {"type": "object", "additionalProperties": False,
                             "required": ["connector", "limit", "next_before"],
                             "properties": {"connector": {"type": "string"}, "limit": {"type": "integer"},
                                            "next_before": _nullable("integer", "`before` of the next page.")}}}}}}},
                **{s: {"description": d, **error} for s, d in {
                    **errors, "404": "No connector of this name is declared"}.items()}}}},
    }
    return paths, {"Connector": CONNECTOR_SCHEMA, "ConnectorRun": RUN_SCHEMA}
