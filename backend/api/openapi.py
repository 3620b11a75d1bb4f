"""GET /openapi.json (OpenAPI 3.1) and GET /docs (the same, as a page to read), generated from the app's catalogue
(backend/api/catalogue.py: the families' resources, the routes they are served at), so the description cannot drift
from what is served. Column descriptions come from the dbt project (`dbt/target/manifest.json`, written by `elt
parse`), the documentation the marts are built with. The descriptions are CommonMark: /docs renders them (HTML in
them is shown as text, never passed through); /docs/explore (backend/api/explorer.py) lets a request be sent.
"""

from __future__ import annotations

import html
import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from markdown_it import MarkdownIt

from backend.api.connectors import openapi_operations as connector_operations
from backend.api.listing import TYPES, Column, Resource
from backend.api.uploads import openapi_operations
from backend.api.whoami import openapi_operations as whoami_operations

log = logging.getLogger(__name__)
bp = Blueprint("openapi", __name__)

# Endpoints that are not lists (dropping files, run states) describe their own operations beside their views.
OPERATIONS = [openapi_operations, whoami_operations, connector_operations]
ERRORS = {"400": "Bad parameter (the message says which; `allowed` lists the parameters), or a cursor this API did "
                 "not issue for this sort (`invalid_cursor`)",
          "401": "No API key, or not a valid one", "403": "The key's role may not read this",
          "429": "Too many requests from this key (API_RATE_LIMIT), or too many failed authentications from this "
                 "address (API_AUTH_FAILURE_LIMIT); Retry-After says when to try again",
          "500": "Unexpected error (logged; no detail is returned)",
          "503": "The mart is not built yet (`not_built`), the query took too long (`query_timeout`), the database "
                 "did not answer, or every CSV download of this server is in use (`too_many_downloads`, Retry-After)"}

NOT_FOUND = "No row at this path (`not_found`): its values are compared exactly, and are not repeated in the message"


def _errors(resource: Resource) -> dict[str, str]:
    """The error answers of a list: a single-row resource's path may name no row (404)."""
    return dict(sorted({**ERRORS, **({"404": NOT_FOUND} if resource.single_row else {})}.items()))


CONDITIONAL = ("The `ETag` of a response this client holds for the same URL: the answer is then `304 Not Modified`, "
               "with no body, while the mart has not been rebuilt since (its `as_of` and `sources` are the same), "
               "without reading it again. A rebuild is seen within API_BUILD_STAMP_SECONDS (default 2 s). A "
               "patient-level 304 is audited like the read it renews.")
ETAG = {"description": "Weak validator of this answer: derived from the mart's build (`as_of`, `sources`), the query as "
                       "parsed (defaults filled in), the format and the caller's role; send it back as `If-None-Match`. "
                       "A live table's (the ledger's) comes from the page itself, and its CSV download has none.",
        "schema": {"type": "string"}}
CACHE_CONTROL = {"description": "`no-store` for patient-level data (no copy is kept on the client's disk); `private, "
                                "no-cache` otherwise (the caller's own client may keep it, and revalidates it every time).",
                 "schema": {"type": "string"}}


@lru_cache(maxsize=4)
def _dbt_descriptions(manifest: Path, mtime: float) -> dict[str, dict[str, str]]:
    """schema.table -> column -> description, from dbt's manifest."""
    nodes = json.loads(manifest.read_text())["nodes"].values()
    return {f"{n['schema']}.{n['alias']}": {c: meta.get("description", "") for c, meta in n["columns"].items()}
            | {"": n.get("description", "")}
            for n in nodes if n.get("resource_type") == "model"}


def dbt_descriptions() -> dict[str, dict[str, str]]:
    manifest = current_app.config["API_SETTINGS"].dbt_docs_dir / "manifest.json"
    if not manifest.is_file():
        log.warning("%s not found: the API's schema goes without the marts' column descriptions (run `elt parse`)",
                    manifest)
        return {}
    return _dbt_descriptions(manifest, manifest.stat().st_mtime)


def _column_schema(column: Column, description: str) -> dict[str, Any]:
    json_type = TYPES[column.type][0]
    schema: dict[str, Any] = {} if column.type == "json" else {"type": [json_type, "null"]}  # json: any JSON value
    if column.type == "date":
        schema["format"] = "date"
    elif column.type == "datetime":
        schema["format"] = "date-time"
    elif column.type in ("text[]", "integer[]"):
        schema["items"] = {"type": "string" if column.type == "text[]" else "integer"}
    if column.choices:
        schema["enum"] = [*column.choices, None]
    if description or column.description:
        schema["description"] = " ".join((column.description or description).split())
    return schema


def _parameters(resource: Resource, max_page_size: int) -> list[dict[str, Any]]:
    params = []
    for name, (column, op) in resource.filter_params().items():
        schema = {k: v for k, v in _column_schema(column, "").items() if k != "description"}
        schema["type"] = TYPES[column.type][0]
        if column.choices:
            schema["enum"] = list(column.choices)
        if column.type == "text":
            schema["maxLength"] = 200
        what = {"=": "equals" + (" (case-insensitive)" if column.type == "text" and not column.name.endswith("_id")
                                 else ""), ">=": "on or after / at least", "<=": "on or before / at most"}[op]
        params.append({"name": name, "in": "query", "required": column.required, "schema": schema,
                       "description": f"Only rows whose `{column.name}` {what} this value."})
    params += [
        {"name": "sort", "in": "query", "required": False,
         "schema": {"type": "string", "enum": resource.sort_choices(), "default": resource.default_sort},
         "description": "Sort column; a leading `-` sorts descending. Ties are broken by the row's key."},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": max_page_size},
         "description": f"Rows per page (JSON: at most {max_page_size}). A CSV download streams every matching "
                        "row unless a limit is given."},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 2000},
         "description": "`meta.next_cursor` of the previous page (same filters and sort)."},
        {"name": "count", "in": "query", "required": False, "schema": {"type": "string", "enum": ["exact", "estimate"]},
         "description": "`exact`: count every matching row. By default, when the planner expects 100,000 matching rows or more, its "
                        "estimate (`meta.total_is_exact` says which)."},
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 2000},
         "description": CONDITIONAL},
        {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["json", "csv"]},
         "description": "`csv` (or `Accept: text/csv`) streams CSV, with the meta in X-Total-Count, X-As-Of, "
                        "X-Sources headers. Text cells are quoted, and one that begins with =, +, -, @, tab, CR, LF "
                        "or ' gets a leading ' (a spreadsheet shows it as text, never runs it as a formula). A "
                        "download cut off half-way ends without the last chunk of its chunked body (an error in "
                        "any HTTP/1.1 client), never as a shorter file that looks whole."},
    ]
    return params


def _path_parameter(column: Column) -> dict[str, Any]:
    """A value the path carries (the catalogue requires its column's max_length)."""
    return {"name": column.name, "in": "path", "required": True,
            "schema": {"type": "string", "maxLength": column.max_length}, "description": column.description or column.name}


def spec() -> dict[str, Any]:
    settings = current_app.config["API_SETTINGS"]
    described = dbt_descriptions()
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["status", "code", "message"],
            "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"},
                           "allowed": {"type": "array", "items": {"type": "string"}},
                           "rule": {"type": "string", "description": "The contract rule a dropped file breaks."},
                           "key_pattern": {"type": "string", "description": "The names a drop type takes."}}}}},
        "Meta": {"type": "object",
                 "required": ["count", "limit", "next_cursor", "total", "total_is_exact", "as_of", "sources"],
                 "properties": {
                     "count": {"type": "integer", "description": "Rows in this page."},
                     "limit": {"type": "integer"},
                     "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; "
                                     "null on the last page."},
                     "total": {"type": "integer", "description": "Rows matching the filters (see total_is_exact)."},
                     "total_is_exact": {"type": "boolean"},
                     "as_of": {"type": ["string", "null"], "format": "date-time",
                               "description": "When dbt built the mart this page was read from."},
                     "sources": {"type": "array", "items": {"type": "integer"},
                                 "description": "Ledger ids (ops.file_ledger, `elt files`) of the files loaded for "
                                                "this mart's drop types before that build."},
                     "source_table": {"type": "string"},
                 }},
    }
    for endpoint in current_app.extensions["catalogue"].endpoints:
        path, resource = endpoint.path, endpoint.resource
        columns = described.get(resource.table, {})
        row_name = resource.name.title().replace("-", "") + "Row"
        schemas[row_name] = {
            "type": "object", "required": [c.name for c in resource.columns], "additionalProperties": False,
            "properties": {c.name: _column_schema(c, columns.get(c.name, "")) for c in resource.columns},
        }
        access = ("Role **clinician** or **admin**; personal data: every call is written to the audit trail."
                  if resource.patient_level else f"Role **{resource.role}**" + (" or above." if resource.role != "admin"
                                                                               else "."))
        mart = " ".join(columns.get("", "").split())
        paths[path] = {"get": {
            "operationId": "list_" + resource.name.replace("-", "_"),
            "tags": ["patient-level" if resource.patient_level else "operations" if resource.role == "admin"
                     else "analytics"],
            "summary": resource.summary,
            # Machine-readable beside the prose: the least role that reads it (the dashboard shows a key only these).
            "x-role": resource.role,
            "description": f"{access} Reads `{resource.table}`. {mart}".strip()
            + ("" if resource.built_by_dbt else " A live table: `meta.as_of` is the time of the read."),
            "security": [{"bearerKey": []}, {"headerKey": []}],
            "parameters": [
                *(_path_parameter(resource.column(name)) for name in re.findall(r"{(\w+)}", path)),
                *_parameters(resource, settings.max_page_size)],
            "responses": {
                "200": {"description": "One page of rows, or the CSV download.",
                        "headers": {"ETag": ETAG, "Cache-Control": CACHE_CONTROL}, "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["data", "meta"], "additionalProperties": False,
                        "properties": {"data": {"type": "array", "items": {"$ref": f"#/components/schemas/{row_name}"}},
                                       "meta": {"$ref": "#/components/schemas/Meta"}}}},
                    "text/csv": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: the ETag in If-None-Match is still this answer's. No body.",
                        "headers": {"ETag": ETAG, "Cache-Control": CACHE_CONTROL}},
                **{status: {"description": text, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}}
                   for status, text in _errors(resource).items()},
            },
        }}
    for operations in OPERATIONS:
        more_paths, more_schemas = operations(settings)
        for path, methods in more_paths.items():
            paths.setdefault(path, {}).update(methods)
        schemas.update(more_schemas)
    paths["/health"] = {"get": {"operationId": "health", "tags": ["service"], "summary": "Liveness: the process answers.",
                                 "security": [], "responses": {"200": {"description": "Alive", "content": {
                                     "application/json": {"schema": {"type": "object"}}}}}}}
    paths["/ready"] = {"get": {"operationId": "ready", "tags": ["service"],
                               "summary": "Readiness: the database answers and every mart is built; how fresh each is.",
                               "description": "Per mart: `built` (the table exists), `has_rows` (false when the "
                                              "files loaded so far held none of its rows), `built_at`, `age_hours`, "
                                              "`fresh`, and `refreshed: on_arrival` for marts rebuilt when their drop "
                                              "arrives (bed occupancy), which never make the API unready.",
                               "security": [], "responses": {
                                   "200": {"description": "Ready (`status` is `stale` when a mart is older than "
                                                          "API_FRESHNESS_HOURS)",
                                           "content": {"application/json": {"schema": {"type": "object"}}}},
                                   "503": {"description": "Database unreachable, or a mart never built",
                                           "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Health warehouse API", "version": "1.0.0",
                 "description": "The warehouse's published marts as JSON or CSV. Every list is filtered by "
                                "allow-listed parameters, sorted, and paged by cursor; `meta` says how fresh the "
                                "answer is (`as_of`) and which files it comes from (`sources`). Send an API key: "
                                "`Authorization: Bearer <key>` (`./start.sh api-key create --name NAME --role ROLE`)."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer hwk_...`"},
            "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec())


# markdown-it's "js-default": CommonMark with tables, raw HTML off (escaped as text), links only to safe schemes.
_MARKDOWN = MarkdownIt("js-default")


def markdown(text: str, *, inline: bool = False) -> str:
    """A description as HTML: HTML in `text` is escaped, never interpreted; `inline` for a table cell (no <p>)."""
    return _MARKDOWN.renderInline(text) if inline else _MARKDOWN.render(text)


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("format") or schema.get("type", "object")
    kind = kind if isinstance(kind, str) else kind[0]
    return kind + (": " + ", ".join(str(v) for v in schema["enum"] if v is not None) if "enum" in schema else "")


def _table(first: str, rows: list[tuple[str, dict[str, Any], str]]) -> str:
    e = html.escape
    return (f"<table><tr><th>{first}</th><th>type</th><th>meaning</th></tr>"
            + "".join(f"<tr><td><code>{e(name)}</code></td><td>{e(_kind(schema))}</td><td>{markdown(text, inline=True)}</td>"
                      "</tr>"
                      for name, schema, text in rows) + "</table>")


@bp.get("/docs")
def docs():
    """The spec as one readable page (no scripts, nothing fetched from elsewhere); the explorer beside it sends
    requests."""
    document = spec()
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(document['info']['title'])}</title>"
             "<style>body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .5em;"
             "text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .2em}h2{margin-top:2em}</style>"
             f"</head><body><h1>{e(document['info']['title'])}</h1>{markdown(document['info']['description'])}"
             "<p><strong>Try a request</strong> (your key entered once): <a href='/docs/explore'>/docs/explore</a>. "
             "Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1). Model and column "
             "documentation: <a href='/dbt-docs/'>/dbt-docs/</a>.</p>"]
    for path, item in document["paths"].items():
        for method, op in item.items():
            parts.append(f"<h2 id='{e(op['operationId'])}'>{method.upper()} <code>{e(path)}</code></h2>"
                         f"<p>{markdown(op['summary'], inline=True)}</p>")
            if op.get("description"):
                parts.append(markdown(op["description"]))
            if op.get("parameters"):
                parts.append(_table("parameter", [(p["name"], p["schema"], p["description"]) for p in op["parameters"]]))
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                parts.append(f"<p>Request body ({e(media)}):</p>" + _table("field", [
                    (name, schema, schema.get("description", ""))
                    for name, schema in content["schema"]["properties"].items()]))
            success = next((r for status, r in op["responses"].items() if status.startswith("2")), {})
            schema = success.get("content", {}).get("application/json", {}).get("schema", {})
            rows = schema.get("properties", {}).get("data", {}).get("items")  # a list's rows, or the answer itself
            ref = (rows or schema).get("$ref")
            if ref:
                described = document["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
                parts.append(_table("column" if rows else "field", [
                    (name, field, field.get("description", "")) for name, field in described.items()]))
    parts.append("</body></html>")
    response = Response("".join(parts), mimetype="text/html")
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response
