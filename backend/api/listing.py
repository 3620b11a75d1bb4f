"""One way to serve a mart as a list endpoint, so that every endpoint filters, sorts, pages, counts, exports
and describes itself the same way.

A `Resource` declares a published mart: its table, the columns it serves (never `select *`: a new mart
column is not served until it is declared here), the unique key, which columns filter and sort, who may
read it and which drop types it is built from. `serve(resource)` answers a request for it:

* query parameters are parsed by a pydantic model generated from the declaration: unknown ones are a 400
  that lists the allowed ones; `limit` is capped;
* pages are keyset pages: `order by <sort column>, <key columns>` and `where (those) > (the last row's)`,
  so a deep page costs what the first one does and rows added meanwhile cause no duplicates or gaps;
* `meta.total` is exact when the planner expects under 100,000 matching rows or `count=exact` is asked for, else the planner's
  estimate (`meta.total_is_exact` says which);
* `meta.as_of` is when dbt built the mart (`max(built_at)`) and `meta.sources` the ledger ids of the files
  loaded for its drop types before that build;
* `Accept: text/csv` or `format=csv` streams the rows as CSV (all matching rows unless `limit` is given),
  with the meta as `X-*` headers: complete or visibly cut off, neutralised against spreadsheet formulas,
  never holding the database for a slow client (backend/api/csv_export.py).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal

from flask import Flask, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from sqlalchemy import text

from backend.api.csv_export import CsvExport, Meta, header_line, line_writer
from backend.db import connection, engine
from backend.errors import ApiError

# Column types: the JSON type served and the Postgres type a cursor value is cast back to.
TYPES: dict[str, tuple[str, str]] = {
    "text": ("string", "text"), "integer": ("integer", "bigint"), "number": ("number", "numeric"),
    "date": ("string", "date"), "datetime": ("string", "timestamptz"), "boolean": ("boolean", "boolean"),
    "text[]": ("array", "text[]"),
}
PYTHON_TYPES: dict[str, type] = {"text": str, "integer": int, "number": float, "date": date, "boolean": bool}
EXACT_TOTAL_BELOW = 100_000  # rows (planner estimate): below this a count(*) is cheap enough to always run


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"
    description: str = ""
    # "eq" (text compares case-insensitively), "range" (`<name>_from` / `<name>_to`, inclusive), or None
    filter: Literal["eq", "range"] | None = None
    # Sortable columns must be not null in the mart (its contract says so): keyset pages compare them.
    sortable: bool = False
    choices: tuple[str, ...] = ()  # allowed values of an "eq" filter, when the mart's contract fixes them


@dataclass(frozen=True)
class Resource:
    name: str                      # the path segment and the OpenAPI tag, e.g. "triage-trends"
    table: str                     # schema.table of the published mart
    summary: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]           # unique, not null: the tie-breaker of every sort
    default_sort: str
    role: Literal["analyst", "clinician", "admin"] = "analyst"
    drop_types: tuple[str, ...] = ()
    patient_level: bool = False    # reads are audited (backend/auth.py)
    # False for live operational tables (the ledger): as_of is the moment of the read, sources are none.
    built_by_dbt: bool = True
    # "nightly": rebuilt every night, so /ready holds its age against API_FRESHNESS_HOURS and needs it built.
    # "on_arrival": rebuilt when its drop arrives (quarterly KH03 workbooks): /ready reports it, never judges it.
    refreshed: Literal["nightly", "on_arrival"] = "nightly"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def sort_choices(self) -> list[str]:
        names = [c.name for c in self.columns if c.sortable]
        return [*names, *("-" + n for n in names)]

    def filter_params(self) -> dict[str, tuple[Column, str]]:
        """query parameter -> (column, operator)"""
        params: dict[str, tuple[Column, str]] = {}
        for column in self.columns:
            if column.filter == "eq":
                params[column.name] = (column, "=")
            elif column.filter == "range":
                params[column.name + "_from"] = (column, ">=")
                params[column.name + "_to"] = (column, "<=")
        return params

    def query_model(self) -> type[BaseModel]:
        """The pydantic model of this endpoint's query string (built once per resource)."""
        return _query_model(self)


@cache
def _query_model(resource: Resource) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for param, (column, _) in resource.filter_params().items():
        annotation: Any = PYTHON_TYPES[column.type]
        if column.choices:
            annotation = Literal[column.choices]  # type: ignore[valid-type]
        constraints: dict[str, Any] = {}
        if annotation is str:
            constraints = {"max_length": 200}
        elif annotation is int:
            constraints = {"ge": -(2**63), "le": 2**63 - 1}  # Postgres bigint
        fields[param] = (annotation | None, Field(None, description=_filter_description(column, param),
                                                  **constraints))
    fields["sort"] = (Literal[tuple(resource.sort_choices())] | None, Field(  # type: ignore[misc]
        None, description=f"Sort key; `-` for descending. Default `{resource.default_sort}`."))
    fields["limit"] = (int | None, Field(None, ge=1, le=2**31, description="Rows per page (JSON: at most the page cap)."))
    fields["cursor"] = (str | None, Field(None, max_length=2000, description="`meta.next_cursor` of the page before."))
    fields["count"] = (Literal["exact", "estimate"] | None, Field(
        None, description="`exact` counts every matching row; by default large tables give an estimate."))
    fields["format"] = (Literal["json", "csv"] | None, Field(None, description="`csv` streams CSV (or send Accept: text/csv)."))
    return create_model(f"{resource.name.title().replace('-', '')}Query", __config__=ConfigDict(extra="forbid"),
                        **fields)


def _filter_description(column: Column, param: str) -> str:
    if param.endswith("_from"):
        return f"{column.name} on or after this value."
    if param.endswith("_to"):
        return f"{column.name} on or before this value."
    return f"Rows whose {column.name} is this value" + (" (case-insensitive)." if column.type == "text" else ".")


# --- values ---------------------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


BIGINT = re.compile(r"-?[0-9]{1,19}")
INVALID_CURSOR = "cursor is not one this API issued for this sort; start again without it"


def decode_cursor(cursor: str, size: int, sort: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        values = None
    if (not isinstance(values, list) or len(values) != size + 1 or values[0] != sort
            or not all(isinstance(v, str) for v in values)):
        raise ApiError(400, "invalid_cursor", INVALID_CURSOR)
    return values[1:]


def cursor_value(value: str, column_type: str) -> Any:
    """A cursor's value as its column's type, checked here rather than by Postgres's cast (a value that decodes
    but does not cast, e.g. a date cursor "x", is the client's error: 400, never a 500)."""
    try:
        if "\x00" in value:
            raise ValueError("NUL")  # no Postgres text holds one
        if column_type == "integer":
            number = int(value) if BIGINT.fullmatch(value) else None  # int() alone takes " 1_0", "１"
            if number is None or not -(2**63) <= number < 2**63:
                raise ValueError("not a bigint")
            return number
        if column_type == "number":
            number = Decimal(value)
            if not number.is_finite():
                raise ValueError("not finite")
            return number
        if column_type == "date":
            return date.fromisoformat(value)
        if column_type == "datetime":
            return datetime.fromisoformat(value)
        if column_type == "boolean":
            return {"True": True, "False": False}[value]
        if column_type == "text":
            return value
    except (ValueError, KeyError, InvalidOperation):
        pass
    raise ApiError(400, "invalid_cursor", INVALID_CURSOR)


# --- parsing ----------------------------------------------------------------------------------------------------
def parse_query(model: type[BaseModel]) -> BaseModel:
    """request.args against a pydantic model; unknown parameters are a 400 naming the allowed ones."""
    allowed = sorted(model.model_fields)
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}", allowed=allowed)
    repeated = sorted(name for name in request.args if len(request.args.getlist(name)) > 1)
    if repeated:
        raise ApiError(400, "invalid_parameter", f"give each parameter once: {', '.join(repeated)}", allowed=allowed)
    values = {name: value for name, value in request.args.items() if value != ""}
    broken = sorted(name for name, value in values.items() if "\x00" in value)
    if broken:  # Postgres text cannot hold a NUL character: no value with one can match anything
        raise ApiError(400, "invalid_parameter", f"{', '.join(broken)}: a NUL character is not allowed", allowed=allowed)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ApiError(400, "invalid_parameter", f"{name}: {first['msg']}", allowed=allowed) from None


def wants_csv(query: BaseModel) -> bool:
    if query.format:
        return query.format == "csv"
    # JSON unless the client prefers CSV (on a tie, e.g. */*, the first listed wins)
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


# --- the query ---------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    select: str
    filters: list[str]             # the request's filters (what the total counts)
    keyset: str | None             # after the cursor's row
    params: dict[str, Any]
    order: list[str]
    descending: bool
    sort: str

    @property
    def where(self) -> list[str]:
        return [*self.filters, *([self.keyset] if self.keyset else [])]

    @property
    def filter_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k.startswith("f")}


def plan(resource: Resource, query: BaseModel, fixed: dict[str, Any] | None = None) -> Plan:
    """The statement's parts. `fixed`: column -> value from the path (e.g. one organisation's history), compared
    exactly like an `eq` filter."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for index, (name, value) in enumerate((fixed or {}).items()):
        resource.column(name)  # a declared column, never a name from the request
        params[f"fp{index}"] = value
        where.append(f"{name} = :fp{index}")
    for index, (param, (column, op)) in enumerate(resource.filter_params().items()):
        value = getattr(query, param)
        if value is None:
            continue
        name = f"f{index}"
        params[name] = value
        if column.type == "text" and op == "=" and not column.name.endswith("_id"):  # ids compare exactly (indexed)
            where.append(f"lower({column.name}) = lower(:{name})")
        else:
            where.append(f"{column.name} {op} :{name}")
    sort = query.sort or resource.default_sort
    descending = sort.startswith("-")
    sort_column = sort.lstrip("-")
    order = [sort_column, *(k for k in resource.key if k != sort_column)]
    keyset = None
    if query.cursor:
        values = decode_cursor(query.cursor, len(order), sort)
        casts = []
        for index, (name, value) in enumerate(zip(order, values, strict=True)):
            column_type = resource.column(name).type
            params[f"k{index}"] = cursor_value(value, column_type)
            casts.append(f"cast(:k{index} as {TYPES[column_type][1]})")
        keyset = f"({', '.join(order)}) {'<' if descending else '>'} ({', '.join(casts)})"
    select = ", ".join(c.name for c in resource.columns)
    return Plan(select, where, keyset, params, order, descending, sort)


def _sql(resource: Resource, p: Plan, limit: int | None) -> str:
    direction = " desc" if p.descending else ""
    sql = (f"select {p.select} from {resource.table}"  # noqa: S608 - names come from the declarations only
           + (" where " + " and ".join(p.where) if p.where else "")
           + " order by " + ", ".join(name + direction for name in p.order))
    return sql + (" limit :limit" if limit is not None else "")


def _total(conn, resource: Resource, filters: list[str], params: dict[str, Any], exact: bool) -> tuple[int, bool]:
    """Rows matching the filters: counted when asked, or when the planner expects fewer than EXACT_TOTAL_BELOW
    (cheap then); else the planner's estimate."""
    where = " where " + " and ".join(filters) if filters else ""
    if not exact:
        plan = conn.execute(text(f"explain (format json) select 1 from {resource.table}{where}"), params).scalar()  # noqa: S608
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate >= EXACT_TOTAL_BELOW:
            return estimate, False
    return conn.execute(text(f"select count(*) from {resource.table}{where}"), params).scalar(), True  # noqa: S608


def provenance(conn, resource: Resource) -> tuple[datetime | None, list[int]]:
    """When the mart was built, and the ledger ids of the files loaded for its drop types before that (one
    statement: both from the same snapshot, in one round trip). A live table is as of the read itself."""
    if not resource.built_by_dbt:
        return conn.execute(text("select now()")).scalar(), []
    as_of, sources = conn.execute(text(
        f"select built.as_of, array(select file_id from ops.file_ledger where status = 'loaded' "  # noqa: S608
        f"and drop_type = any(:types) and finished_at <= built.as_of order by file_id) "
        f"from (select max(built_at) as as_of from {resource.table}) as built"),
        {"types": list(resource.drop_types)}).one()
    return as_of, list(sources or [])


def serve(resource: Resource, *, before_read: Callable[[], None] | None = None,
          fixed: dict[str, Any] | None = None) -> Response:
    """The list endpoint's response for the current request; `fixed` filters come from the path."""
    settings = current_app.config["API_SETTINGS"]
    query = parse_query(resource.query_model())
    csv_out = wants_csv(query)
    if query.limit is not None and query.limit > (settings.max_csv_rows if csv_out else settings.max_page_size):
        cap = settings.max_csv_rows if csv_out else settings.max_page_size
        raise ApiError(400, "invalid_parameter", f"limit must be at most {cap}", allowed=sorted(query.model_fields))
    p = plan(resource, query, fixed)
    if before_read:
        before_read()
    if csv_out:
        return _csv_response(resource, query, p, settings)

    limit = query.limit or settings.default_page_size
    conn = connection()  # one transaction: the page, its total and its as_of see the same build
    rows = conn.execute(text(_sql(resource, p, limit)), {**p.params, "limit": limit + 1}).mappings().all()
    total, exact = _total(conn, resource, p.filters, p.filter_params, query.count == "exact")
    as_of, sources = provenance(conn, resource)
    conn.rollback()
    page = rows[:limit]
    next_cursor = (encode_cursor([p.sort, *(str(jsonable(page[-1][n])) for n in p.order)])
                   if len(rows) > limit else None)
    return jsonify(
        data=[{c.name: jsonable(row[c.name]) for c in resource.columns} for row in page],
        meta={"count": len(page), "limit": limit, "next_cursor": next_cursor, "total": total,
              "total_is_exact": exact, "as_of": jsonable(as_of), "sources": sources, "source_table": resource.table},
    )


def init_app(app: Flask, settings) -> None:
    """The download slots of this process (API_CSV_STREAMS): see backend/api/csv_export.py."""
    app.extensions["csv_slots"] = threading.BoundedSemaphore(settings.csv_streams)


def _csv_response(resource: Resource, query: BaseModel, p: Plan, settings) -> Response:
    slots: threading.BoundedSemaphore = current_app.extensions["csv_slots"]
    if not slots.acquire(blocking=False):
        raise ApiError(503, "too_many_downloads",
                       f"this server streams {settings.csv_streams} CSV downloads at once (API_CSV_STREAMS) and all "
                       "are in use; try again shortly, or page through the JSON",
                       headers={"Retry-After": "5"})
    limit = query.limit or settings.max_csv_rows

    def read_meta(conn) -> Meta:
        total, exact = _total(conn, resource, p.filters, p.filter_params, query.count == "exact")
        as_of, sources = provenance(conn, resource)
        return Meta(total, exact, as_of, sources)

    export = CsvExport(
        engine(), _sql(resource, p, limit), {**p.params, "limit": limit},
        header_line([c.name for c in resource.columns]), line_writer([c.type for c in resource.columns]),
        read_meta, resource.name, release=slots.release).start()
    meta = export.wait_until_ready()  # an error before the first rows is still an ordinary error response

    response = Response(export, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{resource.name}.csv"'
    response.headers["X-Total-Count"] = str(meta.total)
    response.headers["X-Total-Is-Exact"] = "true" if meta.exact else "false"
    response.headers["X-As-Of"] = jsonable(meta.as_of) or ""
    response.headers["X-Sources"] = ",".join(map(str, meta.sources))
    response.headers["X-Source-Table"] = resource.table
    return response
