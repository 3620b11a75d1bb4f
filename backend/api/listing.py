"""One way to serve a mart as a list endpoint, so that every endpoint filters, sorts, pages, counts, exports
and describes itself the same way.

A `Resource` declares a published mart: its table, the columns it serves (never `select *`: a new mart
column is not served until it is declared here), the unique key, which columns filter and sort, who may
read it, whether its reads are audited and which drop types it is built from. `serve(resource)` answers a
request for it, to a key with the declared role (backend/auth.py):

* query parameters are parsed by a pydantic model generated from the declaration: unknown ones are a 400
  that lists the allowed ones; `limit` is capped;
* pages are keyset pages: `order by <sort column>, <key columns>` and `where (those) > (the last row's)`,
  so a deep page costs what the first one does and rows added meanwhile cause no duplicates or gaps;
* `meta.total` is exact when the table or the matching rows are under 100,000 (the planner's statistics) or
  `count=exact` is asked for, else the planner's estimate (`meta.total_is_exact` says which); a mart's exact count is
  taken once per build of the mart for the same filters, and remembered (its rows change only when it is built);
* `meta.as_of` is when dbt built the mart (`max(built_at)`, read with every page) and `meta.sources` the ledger ids
  of the files loaded for its drop types before that build (read again when the as_of is new, or when the process
  has gone API_BUILD_STAMP_SECONDS by the ids it read: `Build`);
* a JSON page is one transaction, its statements pipelined (for a patient-level read, the statement that reads the
  meta also writes the audit row): one round trip (docs/decisions/0014-api-one-round-trip-per-page-and-conditional-gets.md);
* every answer has a weak ETag (the build stamp, the parsed query, the format, the role); `If-None-Match` with
  it is a 304 that reads no mart, and, for a request this process has parsed before, parses nothing either;
* `Accept: text/csv` or `format=csv` streams the rows as CSV (all matching rows unless `limit` is given),
  with the meta as `X-*` headers: complete or visibly cut off, neutralised against spreadsheet formulas,
  never holding the database for a slow client (backend/api/csv_export.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal

import msgspec
import psycopg
from flask import Flask, Response, current_app, request
from psycopg import Cursor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from sqlalchemy import Connection

from backend.api.csv_export import CsvExport, Meta, header_line, line_writer
from backend.auth import AUDIT_SQL, Caller, audit, audit_params, require
from backend.cache import TtlCache
from backend.db import export_engine, run
from backend.errors import ApiError

# Column types: the JSON type served and the Postgres type a cursor value is cast back to.
TYPES: dict[str, tuple[str, str]] = {
    "text": ("string", "text"), "integer": ("integer", "bigint"), "number": ("number", "numeric"),
    "date": ("string", "date"), "datetime": ("string", "timestamptz"), "boolean": ("boolean", "boolean"),
    "text[]": ("array", "text[]"), "integer[]": ("array", "bigint[]"),
    "json": ("json", "jsonb"),  # any JSON value, served as it is stored (an anomaly's reasons); never a filter or a sort
}
PYTHON_TYPES: dict[str, type] = {"text": str, "integer": int, "number": float, "date": date, "boolean": bool}
# JSON of the list pages: Decimal as a JSON number with its stored digits (msgspec writes it in C, as it does the
# dates and the containers; about five times faster than the json module with a conversion per value).
ENCODER = msgspec.json.Encoder(decimal_format="number")
EXACT_TOTAL_BELOW = 100_000  # rows (planner estimate): below this a count(*) is cheap enough to always run
# How long a process goes by a table's row count as the planner measured it, and by the planner's estimate of the rows
# some filters match (`_page`): estimates, labelled as such (`total_is_exact: false`), that change with ANALYZE.
TABLE_ROWS_SECONDS = 300
# How many requests' views (`_view`) a process remembers, so that a client revalidating the same pages is not parsed
# again each time: about 350 bytes each (3.5 MB when full). Never stale (a view is a function of the request and the
# app's settings), only forgotten, the least recently used first.
VIEWS_KEPT = 10_000
# How many exact counts a process remembers (about 200 bytes each), each for the build of the mart it counted: a mart's
# rows change only when it is built, so the same filters are counted once per build (`_meta_sql`).
COUNTS_KEPT = 10_000


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
    # A column whose value a resource's path carries (`{name}` in Resource.path): what is done to the value before it
    # is compared, and the length it is cut to (KH03 org codes: upper case, at most 20 characters). The catalogue
    # refuses a path value without a max_length; the OpenAPI document gives it as the parameter's maxLength.
    path_transform: Literal["upper"] | None = None
    max_length: int | None = None
    # What a longer path value becomes: "cut" to max_length (a code that is never longer finds nothing), or "refuse"d
    # with a 400 (an identifier that names one row, which a cut value could name wrongly).
    path_overflow: Literal["cut", "refuse"] = "cut"
    # An "eq" filter the request must give (400 without it): a list that is only ever read for one value of it, e.g.
    # one member's claim lines. A query parameter, not a path value, when the value is personal: the access log holds
    # the path (backend/serve.py), never the query string.
    required: bool = False

    def from_path(self, value: str) -> str:
        """A value of this column taken from the request's path, as it is compared with the mart's. A NUL (which no
        Postgres text holds) or, for `path_overflow="refuse"`, a value over max_length is a 400 that names the column,
        never the value."""
        if "\x00" in value:
            raise ApiError(400, "invalid_parameter", f"{self.name}: a NUL character is not allowed")
        if self.path_overflow == "refuse" and self.max_length is not None and len(value) > self.max_length:
            raise ApiError(400, "invalid_parameter", f"{self.name}: at most {self.max_length} characters")
        if self.path_transform == "upper":
            value = value.upper()
        return value[:self.max_length]


@dataclass(frozen=True, eq=False)  # one object per endpoint: identity is equality, and hashing is cheap (caches)
class Resource:
    name: str                      # the path segment and the OpenAPI tag, e.g. "triage-trends"
    table: str                     # schema.table of the published mart
    summary: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]           # unique, not null: the tie-breaker of every sort
    default_sort: str
    role: Literal["analyst", "clinician", "admin"] = "analyst"
    drop_types: tuple[str, ...] = ()  # none given: its family's (backend/api/catalogue.py)
    patient_level: bool = False    # reads are audited (backend/auth.py)
    # False for live operational tables (the ledger): as_of is the moment of the read, sources are none.
    built_by_dbt: bool = True
    # "nightly": rebuilt every night, so /ready holds its age against API_FRESHNESS_HOURS and needs it built.
    # "on_arrival": rebuilt when its drop arrives (quarterly KH03 workbooks): /ready reports it, never judges it.
    refreshed: Literal["nightly", "on_arrival"] = "nightly"
    # Below /api/v1, starting with its family's api.prefix; `{column}` for a value the path carries (that column,
    # compared exactly, Column.from_path). backend/api/catalogue.py routes and documents it from here.
    path: str = ""
    # The path names one row (its key, e.g. one claim's anomaly score): a 404 when no row matches, rather than an
    # empty list.
    single_row: bool = False

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
        if column.required:
            fields[param] = (annotation, Field(description=_filter_description(column, param) + " Required.",
                                               **constraints))
        else:
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
# Postgres numeric holds up to 131072 digits before the decimal point and 16383 after: a cursor value beyond them (a
# finite Decimal such as 1e999999999) would make the cast fail in the database, a 500.
NUMERIC_DIGITS_BEFORE, NUMERIC_DIGITS_AFTER = 131_072, 16_383
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
            if not number.is_finite() or number.adjusted() >= NUMERIC_DIGITS_BEFORE \
                    or number.as_tuple().exponent < -NUMERIC_DIGITS_AFTER:
                raise ValueError("not a Postgres numeric")
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
    args = request.args
    if not args.keys() <= model.model_fields.keys():
        unknown = sorted(set(args) - model.model_fields.keys())
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}",
                       allowed=_allowed(model))
    if any(len(values) > 1 for values in args.listvalues()):
        repeated = sorted(name for name, values in args.lists() if len(values) > 1)
        raise ApiError(400, "invalid_parameter", f"give each parameter once: {', '.join(repeated)}",
                       allowed=_allowed(model))
    values = {name: value for name, value in args.items() if value != ""}
    if any("\x00" in value for value in values.values()):  # Postgres text cannot hold a NUL: it can match nothing
        broken = sorted(name for name, value in values.items() if "\x00" in value)
        raise ApiError(400, "invalid_parameter", f"{', '.join(broken)}: a NUL character is not allowed",
                       allowed=_allowed(model))
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ApiError(400, "invalid_parameter", f"{name}: {first['msg']}", allowed=_allowed(model)) from None


def _allowed(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


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
    """The statement's parts (psycopg's `%(name)s` placeholders). `fixed`: column -> value from the path (e.g. one
    organisation's history), compared exactly like an `eq` filter."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for index, (name, value) in enumerate((fixed or {}).items()):
        resource.column(name)  # a declared column, never a name from the request
        params[f"fp{index}"] = value
        where.append(f"{name} = %(fp{index})s")
    for index, (param, (column, op)) in enumerate(resource.filter_params().items()):
        value = getattr(query, param)
        if value is None:
            continue
        name = f"f{index}"
        params[name] = value
        if column.type == "text" and op == "=" and not column.name.endswith("_id"):  # ids compare exactly (indexed)
            where.append(f"lower({column.name}) = lower(%({name})s)")
        else:
            where.append(f"{column.name} {op} %({name})s")
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
            casts.append(f"cast(%(k{index})s as {TYPES[column_type][1]})")
        keyset = f"({', '.join(order)}) {'<' if descending else '>'} ({', '.join(casts)})"
    select = ", ".join(c.name for c in resource.columns)
    return Plan(select, where, keyset, params, order, descending, sort)


def _sql(resource: Resource, p: Plan, limit: int | None) -> str:
    direction = " desc" if p.descending else ""
    sql = (f"select {p.select} from {resource.table}"  # noqa: S608 - names come from the declarations only
           + (" where " + " and ".join(p.where) if p.where else "")
           + " order by " + ", ".join(name + direction for name in p.order))
    return sql + (" limit %(limit)s" if limit is not None else "")


def _where(filters: list[str]) -> str:
    return " where " + " and ".join(filters) if filters else ""


def _estimate_sql(resource: Resource, filters: list[str]) -> str:
    return f"explain (format json) select 1 from {resource.table}{_where(filters)}"  # noqa: S608


def _count_sql(resource: Resource, filters: list[str]) -> str:
    return f"select count(*) from {resource.table}{_where(filters)}"  # noqa: S608


def _planned_rows(explained: Any) -> int:
    return int(explained[0]["Plan"]["Plan Rows"])


def _meta_sql(resource: Resource, count_filters: list[str] | None = None, *, audited: bool = False) -> str:
    """When the mart was built (`max(built_at)`) and the ledger ids of the files loaded for its drop types before
    that (a live table: as of the read itself, from no file); the table's row count as the planner last measured it,
    which tells the next request whether a count is cheap (`_page`); the count of the rows matching `count_filters`,
    when given; and a digest of the build (as_of and sources). A mart's rows change only with its build, so a count
    is taken once per build: `%(counted_for)s` is the build digest of the count this process already holds for these
    filters (or null), and when the mart is still that build the count is not taken again (null). The ledger is
    read only when the mart's as_of is not `%(known_as_of)s`, the build this process remembers (`Build`, for up to
    API_BUILD_STAMP_SECONDS): then the ids come back null and the digest is `%(known_digest)s`. One statement: one
    snapshot, one round trip. `audited`: the statement also writes the request's audit row (AUDIT_SQL's parameters),
    in the page's transaction: one statement fewer per patient-level page than a separate insert."""
    rows = f"(select reltuples::bigint from pg_class where oid = '{resource.table}'::regclass)"  # noqa: S608
    ctes = [f"audit as ({AUDIT_SQL} returning 1)"] if audited else []  # run once, though nothing reads it
    if not resource.built_by_dbt:
        counted = "null::bigint" if count_filters is None else f"({_count_sql(resource, count_filters)})"
        select = f"select now(), '{{}}'::bigint[], {rows}, {counted}, null::text"
    else:
        digest = ("case when build.ids is null then %(known_digest)s "
                  "else md5(concat(build.as_of, '|', array_to_string(build.ids, ','))) end")
        counted = "null::bigint" if count_filters is None else (
            f"case when {digest} = %(counted_for)s then null else ({_count_sql(resource, count_filters)}) end")
        # Materialized, so that the ledger is read once (inlined, each use of `ids` would read it again).
        ctes.append("build as materialized (select built.as_of, case when built.as_of = %(known_as_of)s then null "  # noqa: S608
                    "else array(select file_id from ops.file_ledger where status = 'loaded' and drop_type = any(%(types)s) "
                    "and finished_at <= built.as_of order by file_id) end as ids "
                    f"from (select max(built_at) as as_of from {resource.table}) as built)")
        select = f"select build.as_of, build.ids, {rows}, {counted}, {digest} from build"  # noqa: S608
    return (f"with {', '.join(ctes)} " if ctes else "") + select


def _meta_params(resource: Resource, p: Plan | None = None, counted_for: str | None = None,
                 known: Build | None = None) -> dict[str, Any]:
    built = {"types": list(resource.drop_types), "counted_for": counted_for,
             "known_as_of": known.as_of if known else None, "known_digest": known.digest if known else None}
    return {**(built if resource.built_by_dbt else {}), **(p.filter_params if p else {})}


@dataclass(frozen=True)
class Build:
    """A mart's build as this process last read it (remembered for API_BUILD_STAMP_SECONDS, from the moment its
    transaction began): when it was built, the ledger ids of its files, and the meta statement's digest of them."""
    as_of: datetime | None
    sources: list[int]
    digest: str | None

    @property
    def stamp(self) -> str:
        return build_stamp(self.as_of, self.sources)


def _read_build(builds: TtlCache, resource: Resource, known: Build | None, began: float, as_of: datetime | None,
                ids: list[int] | None, digest: str | None) -> Build:
    """The build a meta statement returned: the one this process remembered (`known`) when the statement found the
    mart still at its as_of and so did not read the ledger (`ids` null), else the one just read, now remembered. A
    remembered build is never renewed without reading the ledger, so its sources are at most API_BUILD_STAMP_SECONDS
    old."""
    if ids is None and known is not None:
        return known
    build = Build(as_of, ids or [], digest)
    builds.put(resource.table, build, began)
    return build


# --- conditional requests ------------------------------------------------------------------------------------------
REPRESENTATION = "2"  # bump when the same rows would be written differently, so that no old ETag matches


def build_stamp(as_of: datetime | None, sources: list[int]) -> str:
    """A mart's build identity: its as_of and the files it was built from (what meta reports)."""
    return f"{jsonable(as_of)}|{sources}"


def view_of(resource: Resource, query: BaseModel, fixed: dict[str, Any] | None, limit: int, csv_out: bool,
            role: str) -> str:
    """What a response depends on besides the mart's build: the endpoint and its declared columns, the query as
    parsed (defaults filled in: `limit` is the effective one), the format and the caller's role. A digest, so that
    the views this process remembers (`_view`) hold no filter value (a patient id)."""
    asked = sorted((name, str(value)) for name, value in query.model_dump(exclude_none=True).items()
                   if name not in ("format", "limit"))
    view = json.dumps([_signature(resource), role, "csv" if csv_out else "json", limit, asked,
                       sorted((name, str(value)) for name, value in (fixed or {}).items())])
    return hashlib.blake2b(view.encode(), digest_size=16).hexdigest()


@cache
def _signature(resource: Resource) -> str:
    return f"{REPRESENTATION}|{resource.name}|" + ",".join(f"{c.name}:{c.type}" for c in resource.columns)


def etag_of(stamp: str, view: str) -> str:
    """The (weak) ETag of a list response: equal for equal stamps and views, and only then."""
    return hashlib.blake2b(f"{stamp}\x00{view}".encode(), digest_size=16).hexdigest()


VARY = "Accept, Authorization, X-API-Key"  # answers differ by format and by caller


def _cache_headers(resource: Resource, etag: str | None) -> list[tuple[str, str]]:
    """Patient-level pages are never stored (a shared clinic computer keeps no copy); others may be kept by the
    caller's own client, which must revalidate them (If-None-Match) every time, and never by a shared cache. (Given
    to the response as it is made: cheaper than werkzeug's header properties on the 304 path.)"""
    headers = [("Cache-Control", "no-store" if resource.patient_level else "private, no-cache"), ("Vary", VARY)]
    if etag is not None:
        headers.append(("ETag", f'W/"{etag}"'))  # weak, as werkzeug's set_etag(weak=True) wrote it
    return headers


def _matches(etag: str) -> bool:
    """The request's If-None-Match holds `etag` (weak comparison). A client revalidating sends back the one ETag it
    was given, as it was given: that is checked as it stands, and anything else (a list, `*`, a strong form) is
    parsed by werkzeug."""
    sent = request.environ.get("HTTP_IF_NONE_MATCH")
    return sent == f'W/"{etag}"' or (sent is not None and request.if_none_match.contains_weak(etag))


def _not_modified(resource: Resource, etag: str) -> Response:
    return current_app.response_class(status=304, headers=_cache_headers(resource, etag))


def _revalidate(resource: Resource, caller: Caller, view: str) -> Response | None:
    """A 304 when the request's If-None-Match holds the ETag the page would have, without reading the mart: the
    build stamp this process read for it less than API_BUILD_STAMP_SECONDS ago, or else the stamp alone, read now.
    A patient-level 304 is audited like the read it renews (the client goes on showing the rows it holds). None: no
    match, serve the page."""
    builds: TtlCache = current_app.extensions["builds"]
    build = builds.get(resource.table)
    if build is None:
        began = builds.clock()
        as_of, ids, _, _, digest = run(lambda conn: conn.execute(_meta_sql(resource), _meta_params(resource))).fetchone()
        build = _read_build(builds, resource, None, began, as_of, ids, digest)
    etag = etag_of(build.stamp, view)
    if not _matches(etag):
        return None
    if resource.patient_level:
        audit(caller)
    return _not_modified(resource, etag)


# --- serving -------------------------------------------------------------------------------------------------------
def serve(resource: Resource, *, fixed: dict[str, Any] | None = None) -> Response:
    """The list endpoint's response for the current request, to a caller with the resource's role (403 otherwise;
    patient-level reads are audited); `fixed` filters come from the path. A conditional request this process has
    seen before (the same query string, Accept header, path and role) is answered from its remembered view without
    being parsed again: a 304 costs the key check, the role and two digests."""
    caller = require(resource.role)
    asked = None
    if request.environ.get("HTTP_IF_NONE_MATCH") and resource.built_by_dbt:
        view, asked = _view(resource, caller.role, fixed)
        not_modified = _revalidate(resource, caller, view)
        if not_modified is not None:
            return not_modified
    asked = asked or ask(resource, caller.role, fixed)
    if asked.csv:
        if resource.patient_level:
            audit(caller)
        return _csv_response(resource, asked, current_app.config["API_SETTINGS"])
    return _page(resource, asked, caller)


@dataclass(frozen=True)
class Asked:
    """A list request, parsed and checked: its query, whether it wants CSV, its effective limit, its plan and its
    view (`view_of`)."""
    query: BaseModel
    csv: bool
    limit: int
    plan: Plan
    view: str


def ask(resource: Resource, role: str, fixed: dict[str, Any] | None) -> Asked:
    """The current request parsed against the resource (400s for what it may not ask)."""
    settings = current_app.config["API_SETTINGS"]
    query = parse_query(resource.query_model())
    csv_out = wants_csv(query)
    cap = settings.max_csv_rows if csv_out else settings.max_page_size
    if query.limit is not None and query.limit > cap:
        raise ApiError(400, "invalid_parameter", f"limit must be at most {cap}", allowed=_allowed(type(query)))
    p = plan(resource, query, fixed)
    limit = query.limit or (settings.max_csv_rows if csv_out else settings.default_page_size)
    return Asked(query, csv_out, limit, p, view_of(resource, query, fixed, limit, csv_out, role))


def _view(resource: Resource, role: str, fixed: dict[str, Any] | None) -> tuple[str, Asked | None]:
    """The request's view: remembered, when this process has already parsed the same request (its query string and
    Accept header, the path's filters and the role) and found it valid, or else parsed now (and remembered). The view
    is a function of those and of the app's settings only, so the memory never goes stale; a request that was refused
    is never remembered, so it is refused again. At most VIEWS_KEPT requests are remembered, by digest."""
    views: TtlCache = current_app.extensions["views"]
    environ = request.environ
    asked_for = repr((role, environ.get("QUERY_STRING", ""), environ.get("HTTP_ACCEPT"), sorted((fixed or {}).items())))
    key = (resource, hashlib.blake2b(asked_for.encode(errors="surrogatepass"), digest_size=16).digest())
    view = views.get(key)
    if view is not None:
        return view, None
    asked = ask(resource, role, fixed)
    views.put(key, asked.view)
    return asked.view, asked


@dataclass
class _Read:
    page: Cursor                # limit + 1 rows
    meta: Cursor                # as_of, sources, rows in the table, and the count when it was taken with them
    estimate: int | None = None
    count: Cursor | None = None  # the count, when the estimate called for one after all


def _page(resource: Resource, asked: Asked, caller: Caller) -> Response:
    """One JSON page in one transaction: the audit row (patient-level reads: if it cannot be written, nothing is
    served), the page, its total and its provenance, pipelined: one round trip. The total is counted when asked
    (`count=exact`), when the table holds fewer than EXACT_TOTAL_BELOW rows, or when the planner expects fewer
    to match; else it is the planner's estimate. This process asks the planner once per table and filters every
    TABLE_ROWS_SECONDS (the pages of one listing share their filters); the first time, the estimate comes in the
    same round trip and a count, if it calls for one, in a second, in the same transaction."""
    p, limit = asked.plan, asked.limit
    sizes: TtlCache = current_app.extensions["table_rows"]
    builds: TtlCache = current_app.extensions["builds"]
    known_build = builds.get(resource.table) if resource.built_by_dbt else None
    rows_in_table = sizes.get(resource.table)
    planned_key = _planned_key(resource, p)
    planned = sizes.get(planned_key)
    count = (asked.query.count == "exact" or (rows_in_table is not None and 0 <= rows_in_table < EXACT_TOTAL_BELOW)
             or (planned is not None and planned < EXACT_TOTAL_BELOW))
    counts: TtlCache = current_app.extensions["counts"]
    known = counts.get(planned_key) if count and resource.built_by_dbt else None  # (build digest, its count)

    def read(conn: psycopg.Connection) -> _Read:
        page = conn.execute(_sql(resource, p, limit), {**p.params, "limit": limit + 1})
        meta = conn.execute(_meta_sql(resource, p.filters if count else None, audited=resource.patient_level),
                            {**_meta_params(resource, p, known[0] if known else None, known_build),
                             **(audit_params(caller) if resource.patient_level else {})})
        if count or planned is not None:
            return _Read(page, meta, None if count else planned)
        estimate = _planned_rows(conn.execute(_estimate_sql(resource, p.filters), p.filter_params).fetchone()[0])
        sizes.put(planned_key, estimate)
        if estimate >= EXACT_TOTAL_BELOW:
            return _Read(page, meta, estimate)
        return _Read(page, meta, count=conn.execute(_count_sql(resource, p.filters), p.filter_params))

    began = builds.clock()
    done = run(read, read_write=resource.patient_level)
    rows = done.page.fetchall()
    as_of, ids, rows_in_table, counted, digest = done.meta.fetchone()
    build = _read_build(builds, resource, known_build, began, as_of, ids, digest) if resource.built_by_dbt else None
    counted = _build_count(counts, planned_key, known, digest, done.count.fetchone()[0] if done.count else counted)
    sources = build.sources if build else []
    sizes.put(resource.table, rows_in_table, began)
    served = rows[:limit]
    if resource.single_row and not served:
        raise not_found(resource)
    total = done.estimate if done.estimate is not None else counted
    meta = {"count": len(served), "limit": limit,
            "next_cursor": _next_cursor(resource, p, served[-1]) if len(rows) > limit else None,
            "total": total, "total_is_exact": done.estimate is None, "as_of": jsonable(as_of), "sources": sources,
            "source_table": resource.table}
    data = _rows_json(resource, served)
    if build is not None:
        stamp = build.stamp
    else:  # a live table has no build: its page is its own stamp (a 304 saves the transfer, not the read)
        stamp = hashlib.blake2b(data + f"|{total}|{meta['next_cursor']}".encode()).hexdigest()
    etag = etag_of(stamp, asked.view)
    if not resource.built_by_dbt and _matches(etag):
        return _not_modified(resource, etag)
    body = b'{"data":' + data + b',"meta":' + ENCODER.encode(meta) + b"}"
    return current_app.response_class(body, mimetype="application/json", headers=_cache_headers(resource, etag))


def not_found(resource: Resource) -> ApiError:
    """A single-row resource's answer when its path names no row: the path's values are not repeated (a claim id)."""
    return ApiError(404, "not_found", f"no {resource.name} row at this path (its values are compared exactly)")


def _build_count(counts: TtlCache, key: bytes, known: tuple[str, int] | None, build: str | None,
                 counted: int | None) -> int | None:
    """The count of these filters (`key`) in this build of the mart: taken now, and then remembered with the build, or
    not taken because this process held the build's count (`known`). A live table's (no build) is taken every time."""
    if build is None or counted is None:
        return known[1] if build is not None and known is not None and known[0] == build else counted
    counts.put(key, (build, counted))
    return counted


def _planned_key(resource: Resource, p: Plan) -> bytes:
    """The cache key of the planner's estimate for these filters: a digest, so that no filter value (a patient id)
    is kept in the process's memory."""
    filters = repr((resource.table, p.filters, sorted(p.filter_params.items())))
    return hashlib.blake2b(filters.encode(), digest_size=16).digest()


def _next_cursor(resource: Resource, p: Plan, last: tuple) -> str:
    positions = _positions(resource)
    return encode_cursor([p.sort, *(str(jsonable(last[positions[name]])) for name in p.order)])


@cache
def _positions(resource: Resource) -> dict[str, int]:
    return {c.name: index for index, c in enumerate(resource.columns)}


@cache
def _timestamps(resource: Resource) -> tuple[int, ...]:
    return tuple(index for index, c in enumerate(resource.columns) if c.type == "datetime")


def _rows_json(resource: Resource, rows: list[tuple]) -> bytes:
    """The rows as a JSON array of objects, keys in the declared order. Numerics are written exactly as stored
    (0.2500, as in CSV), dates and timestamps in ISO 8601 as Python writes them (`+00:00`)."""
    names = [c.name for c in resource.columns]
    timestamps = _timestamps(resource)
    if timestamps:
        rows = [tuple(v.isoformat() if i in timestamps and v is not None else v for i, v in enumerate(row))
                for row in rows]
    return ENCODER.encode([dict(zip(names, row, strict=True)) for row in rows])


def init_app(app: Flask, settings) -> None:
    """The download slots of this process (API_CSV_STREAMS): see backend/api/csv_export.py; what this process
    remembers of each mart between requests: its build (`Build`, API_BUILD_STAMP_SECONDS), its size and its exact counts
    by build (COUNTS_KEPT); and of the conditional requests it has parsed, their views (VIEWS_KEPT)."""
    app.extensions["csv_slots"] = threading.BoundedSemaphore(settings.csv_streams)
    app.extensions["builds"] = TtlCache(settings.build_stamp_seconds, size=1_000)  # table -> Build
    app.extensions["table_rows"] = TtlCache(TABLE_ROWS_SECONDS, size=10_000)
    app.extensions["views"] = TtlCache(float("inf"), size=VIEWS_KEPT)
    # The exact counts taken, by filters (a digest: no filter value kept), each with the build it counts (`_page`).
    app.extensions["counts"] = TtlCache(float("inf"), size=COUNTS_KEPT)


def _csv_meta(conn: Connection, resource: Resource, p: Plan, exact: bool) -> Meta:
    """The download's meta, in its own transaction (the rows follow in the same snapshot)."""
    total, is_exact = None, True
    if not exact:
        explained = conn.exec_driver_sql(_estimate_sql(resource, p.filters), p.filter_params).scalar()
        if _planned_rows(explained) >= EXACT_TOTAL_BELOW:
            total, is_exact = _planned_rows(explained), False
    if total is None:
        total = conn.exec_driver_sql(_count_sql(resource, p.filters), p.filter_params).scalar()
    as_of, sources, _, _, _ = conn.exec_driver_sql(_meta_sql(resource), _meta_params(resource)).one()
    return Meta(total, is_exact, as_of, list(sources or []))


def _csv_response(resource: Resource, asked: Asked, settings) -> Response:
    slots: threading.BoundedSemaphore = current_app.extensions["csv_slots"]
    if not slots.acquire(blocking=False):
        raise ApiError(503, "too_many_downloads",
                       f"this server streams {settings.csv_streams} CSV downloads at once (API_CSV_STREAMS) and all "
                       "are in use; try again shortly, or page through the JSON",
                       headers={"Retry-After": "5"})
    p, limit = asked.plan, asked.limit
    export = CsvExport(
        export_engine(), _sql(resource, p, limit), {**p.params, "limit": limit},
        header_line([c.name for c in resource.columns]), line_writer([c.type for c in resource.columns]),
        lambda conn: _csv_meta(conn, resource, p, asked.query.count == "exact"), resource.name,
        release=slots.release).start()
    meta = export.wait_until_ready()  # an error before the first rows is still an ordinary error response
    if resource.single_row and meta.total == 0:
        export.close()
        raise not_found(resource)

    response = Response(export, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{resource.name}.csv"'
    response.headers["X-Total-Count"] = str(meta.total)
    response.headers["X-Total-Is-Exact"] = "true" if meta.exact else "false"
    response.headers["X-As-Of"] = jsonable(meta.as_of) or ""
    response.headers["X-Sources"] = ",".join(map(str, meta.sources))
    response.headers["X-Source-Table"] = resource.table
    # A live table's download has no ETag: its identity would be the whole file, which is not known when it starts.
    etag = etag_of(build_stamp(meta.as_of, meta.sources), asked.view) if resource.built_by_dbt else None
    response.headers.extend(_cache_headers(resource, etag))
    return response
