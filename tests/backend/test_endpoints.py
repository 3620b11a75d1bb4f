"""Every list endpoint on marts built by real dbt from generated drops: rows, filters, sorts, pages, totals,
provenance, CSV, roles and the audit trail. What the API should return is read from the mart with SQL
written here, never through the API's own query builder."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from backend.api.catalogue import VALUE, declared_catalogue
from backend.api.listing import jsonable
from tests.backend.conftest import required_values

# The lists whose whole mart is the answer. One organisation's bed history ({org_code} in the path) is the
# occupancy list's declaration narrowed by the path: tests/backend/test_beds_api.py covers it. A single-row path (one
# claim's explanation) names one row by its key: test_every_single_row_path_serves_the_row_it_names_and_404_when_none.
ENDPOINTS = [(e.path, e.resource) for e in declared_catalogue().endpoints if "{" not in e.path]
SINGLE_ROW = {e.path: e.resource for e in declared_catalogue().endpoints if e.resource.single_row}
BY_PATH = dict(ENDPOINTS)
PATIENT_LEVEL = [path for path, resource in ENDPOINTS if resource.patient_level]
# Clinicians' lists: the patient-level ones and the claim-level claims lists (single claims, an opaque member key).
CLINICIANS = [path for path, resource in ENDPOINTS if resource.patient_level or resource.role == "clinician"]
ANALYTICS = [path for path, resource in ENDPOINTS if resource.role == "analyst"]
ADMIN_ONLY = [path for path, resource in ENDPOINTS if resource.role == "admin"]


def expected_rows(wdb, resource, where: str = "", params: tuple = (), sort: str | None = None) -> list[dict]:
    """The mart's rows, as the API should serve them: filtered, sorted by the sort column then the key."""
    sort = sort or resource.default_sort
    column = sort.lstrip("-")
    direction = sql.SQL(" desc" if sort.startswith("-") else "")
    order = [column, *(k for k in resource.key if k != column)]
    query = sql.SQL("select {} from {} {} order by {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in resource.columns),
        sql.Identifier(*resource.table.split(".")),
        sql.SQL(where),
        sql.SQL(", ").join(sql.Composed([sql.Identifier(name), direction]) for name in order))
    names = [c.name for c in resource.columns]
    return [dict(zip(names, (jsonable(v) for v in row), strict=True)) for row in wdb.execute(query, params)]


def condition(resource, column: str, op: str = "=") -> str:
    """A filter on `column` as the API documents it: text compares case-insensitively, ids exactly."""
    if resource.column(column).type == "text" and op == "=" and not column.endswith("_id"):
        return f"lower({column}) = lower(%s)"
    return f"{column} {op} %s"


def narrowed_to(resource, values: dict[str, str]) -> tuple[list[str], list]:
    """The SQL conditions and parameters of the required filters' `values`."""
    return [condition(resource, name) for name in values], list(values.values())


def where_clause(conditions: list[str]) -> str:
    return "where " + " and ".join(conditions) if conditions else ""


def walk(call, path: str, role: str = "admin", **params) -> tuple[list[dict], list[dict]]:
    """Every page of `path`: (rows, metas)."""
    rows, metas, cursor = [], [], None
    while True:
        response = call(path, role, query_string={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        rows += body["data"]
        metas.append(body["meta"])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return rows, metas


def test_the_warehouse_has_rows_in_every_served_mart(wdb):
    for _, resource in ENDPOINTS:
        count = wdb.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(*resource.table.split("."))))
        assert count.fetchone()[0] > 0, resource.table


@pytest.mark.parametrize("path", list(BY_PATH))
def test_every_endpoint_serves_its_whole_mart_page_by_page(call, wdb, path):
    resource = BY_PATH[path]
    # A list with required filters (one member's claim lines) is the whole mart one value of them at a time.
    served, firsts = 0, []
    for values in required_values(wdb, resource):
        conditions, params = narrowed_to(resource, values)
        expected = expected_rows(wdb, resource, where_clause(conditions), tuple(params))
        rows, metas = walk(call, path, limit=37, **values)
        assert rows == expected
        assert len(metas) == -(-len(expected) // 37)
        assert metas[0]["total"] == len(expected) and metas[0]["total_is_exact"] is True  # small tables count exactly
        served += len(rows)
        firsts.append(metas[0])
    assert served == len(expected_rows(wdb, resource))  # every row of the mart, each once
    meta = firsts[0]
    if not resource.built_by_dbt:  # the ledger is live: each read as of its moment, and it is its own source
        assert all(datetime.fromisoformat(m["as_of"]) > datetime.now(UTC) - timedelta(minutes=5) for m in firsts)
        assert all(m["sources"] == [] for m in firsts)
        return
    assert all((m["as_of"], m["sources"]) == (meta["as_of"], meta["sources"]) for m in firsts)
    built_at = wdb.execute(sql.SQL("select max(built_at) from {}").format(
        sql.Identifier(*resource.table.split(".")))).fetchone()[0]
    assert meta["as_of"] == built_at.isoformat()
    loaded = [r[0] for r in wdb.execute("select file_id from ops.file_ledger where status = 'loaded' and "
                                        "drop_type = any(%s) order by file_id", (list(resource.drop_types),))]
    assert meta["sources"] == loaded and loaded


def _filter_cases():
    for path, resource in ENDPOINTS:
        for param, (column, op) in resource.filter_params().items():
            yield pytest.param(path, param, column.name, column.type, op, id=f"{resource.name}-{param}")


def absent_values(column, present: list) -> list:
    """Values of the column's type that no row holds, when its declaration names them (a boolean's other value, a
    choice): a filter on a column whose rows all hold one value (or none) must still keep nothing for them."""
    possible = [False, True] if column.type == "boolean" else list(column.choices)
    return [v for v in possible if v not in present]


@pytest.mark.parametrize(("path", "param", "column", "kind", "op"), list(_filter_cases()))
def test_every_filter_keeps_exactly_the_rows_it_names(call, wdb, path, param, column, kind, op):
    resource = BY_PATH[path]
    required = required_values(wdb, resource)[0]  # sent with every request; the values below are among its rows
    conditions, params = narrowed_to(resource, required)
    # A value that occurs in the mart: the median of the column's distinct values.
    values = [v for (v,) in wdb.execute(sql.SQL("select distinct {c} from {t} {w} {a} {c} is not null order by 1").format(
        c=sql.Identifier(column), t=sql.Identifier(*resource.table.split(".")), w=sql.SQL(where_clause(conditions)),
        a=sql.SQL("and" if conditions else "where")), params)]
    absent = absent_values(resource.column(column), values)
    assert values or absent, "no value of this filter to try"
    for value in values[len(values) // 2:][:1] + absent[:1]:
        sent = value.upper() if kind == "text" and not column.endswith("_id") and column != "age_band" and not \
            resource.column(column).choices else value
        expected = expected_rows(wdb, resource, where_clause([*conditions, condition(resource, column, op)]),
                                 (*params, value))
        assert bool(expected) == (value in values)
        rows, metas = walk(call, path, **{**required, param: str(sent).lower() if isinstance(sent, bool) else str(sent),
                                          "limit": 50})
        assert rows == expected
        assert metas[0]["total"] == len(expected)


def _sort_cases():
    for path, resource in ENDPOINTS:
        for sort in resource.sort_choices():
            yield pytest.param(path, sort, id=f"{resource.name}-{sort}")


@pytest.mark.parametrize(("path", "sort"), list(_sort_cases()))
def test_every_sort_orders_by_its_column_then_the_key_across_pages(call, wdb, path, sort):
    resource = BY_PATH[path]
    required = required_values(wdb, resource)[0]
    conditions, params = narrowed_to(resource, required)
    expected = expected_rows(wdb, resource, where_clause(conditions), tuple(params), sort=sort)[:60]
    # One member's few lines (required filters): a row a page, so that every row is on a page boundary.
    rows, _ = walk(call, path, sort=sort, limit=1 if required else 25, **required) if len(expected) < 60 else (None, None)
    if rows is None:  # large marts: the first three pages are enough to cross page boundaries
        rows, cursor = [], None
        for _ in range(3):
            body = call(path, query_string={**required, "sort": sort, "limit": 20,
                                            **({"cursor": cursor} if cursor else {})}).get_json()
            rows += body["data"]
            cursor = body["meta"]["next_cursor"]
    assert rows[:60] == expected


def test_a_cursor_is_only_valid_for_its_own_sort(call):
    body = call("/api/v1/triage-trends", query_string={"limit": 5}).get_json()
    response = call("/api/v1/triage-trends", query_string={"limit": 5, "sort": "-visit_date",
                                                            "cursor": body["meta"]["next_cursor"]})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_cursor"


# Values that decode but fit no column of their type (Postgres's cast would refuse them): a cursor is the client's
# to send back, so a tampered one is the client's error.
NOT_OF_TYPE = {"date": ["x", "2026-02-30", "20261"], "datetime": ["x", "2026-13-01T00:00:00"],
               "integer": ["x", "1.5", "9" * 30, "１２"], "number": ["x", "NaN", "1e999999999"],
               "boolean": ["maybe", "1"], "text": ["a\x00b"]}


def _with_value(cursor: str, position: int, value: str) -> str:
    values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    values[position + 1] = value  # values[0] is the sort the cursor belongs to
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", list(BY_PATH))
def test_a_cursor_that_decodes_but_does_not_fit_its_columns_is_a_400(call, wdb, path):
    resource = BY_PATH[path]
    required = required_values(wdb, resource)[0]
    for sort in resource.sort_choices():
        cursor = call(path, query_string={**required, "sort": sort, "limit": 1}).get_json()["meta"]["next_cursor"]
        assert cursor, (path, sort)
        order = [sort.lstrip("-"), *(k for k in resource.key if k != sort.lstrip("-"))]
        for position, name in enumerate(order):
            for value in NOT_OF_TYPE[resource.column(name).type]:
                response = call(path, query_string={**required, "sort": sort, "limit": 1,
                                                    "cursor": _with_value(cursor, position, value)})
                assert response.status_code == 400, (sort, name, value, response.status_code)
                assert response.get_json()["error"]["code"] == "invalid_cursor"
        assert call(path, query_string={**required, "sort": sort, "limit": 1, "cursor": cursor}).status_code == 200


@pytest.mark.parametrize("path", list(SINGLE_ROW))
def test_every_single_row_path_serves_the_row_it_names_and_404_when_none(call, wdb, path):
    """A single-row path carries its mart's key: each row at its own path (JSON and CSV), and a path that names no row
    is a 404 that does not repeat the path's values."""
    resource = SINGLE_ROW[path]
    names = VALUE.findall(path)
    assert set(names) == set(resource.key)
    role = "clinician" if resource.role == "clinician" else "admin"
    rows = expected_rows(wdb, resource)
    assert rows
    for row in rows[:50]:
        url = VALUE.sub(lambda m, row=row: quote(str(row[m.group(1)]), safe=""), path)
        body = call(url, role).get_json()
        assert (body["data"], body["meta"]["total"], body["meta"]["next_cursor"]) == ([row], 1, None)
    assert len(_csv(call(url, role, query_string={"format": "csv"}))) == 1
    missing = f"{rows[0][names[-1]]}-no-such-row"
    assert missing not in {str(row[names[-1]]) for row in rows}
    url = VALUE.sub(lambda m: quote(missing if m.group(1) == names[-1] else str(rows[0][m.group(1)]), safe=""), path)
    for query in ({}, {"format": "csv"}):
        response = call(url, role, query_string=query)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
        assert missing not in response.get_data(as_text=True)
    if resource.role != "analyst":
        assert call(url, "analyst").status_code == 403


def test_date_ranges_are_inclusive(call, wdb):
    day = date(2026, 11, 10)
    rows, _ = walk(call, "/api/v1/triage-trends", visit_date_from=str(day - timedelta(days=2)), visit_date_to=str(day))
    assert {row["visit_date"] for row in rows} == {str(day - timedelta(days=n)) for n in range(3)}
    facilities = wdb.execute("select count(distinct facility_id) from analytics.triage_trends "
                             "where visit_date between %s and %s", (day - timedelta(days=2), day)).fetchone()[0]
    assert len(rows) == 3 * facilities


# --- roles and audit --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(BY_PATH))
def test_every_endpoint_needs_a_valid_key(call, path):
    for headers in ({}, {"Authorization": "Bearer hwk_1_" + "x" * 43}, {"Authorization": "Basic abc"},
                    {"X-API-Key": "not-a-key"}):
        response = call(path, None, headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert "api-key create" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("path", CLINICIANS)
def test_clinicians_endpoints_refuse_the_analyst_role(call, wdb, path):
    audited = wdb.execute("select count(*) from ops.api_audit").fetchone()[0]
    response = call(path, "analyst")
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "forbidden" and "clinician" in error["message"] and "analyst" in error["message"]
    assert "data" not in response.get_json()
    assert wdb.execute("select count(*) from ops.api_audit").fetchone()[0] == audited  # nothing was read
    assert call(path, "clinician", query_string=required_values(wdb, BY_PATH[path])[0]).status_code == 200


@pytest.mark.parametrize("path", ADMIN_ONLY)
def test_operations_endpoints_serve_the_admin_role_only(call, wdb, path):
    required = required_values(wdb, BY_PATH[path])[0]  # one file's rejects: the role is refused whatever is asked
    for role in ("analyst", "clinician"):
        response = call(path, role, query_string=required)
        assert response.status_code == 403 and "admin" in response.get_json()["error"]["message"]
        assert "data" not in response.get_json()
    assert call(path, "admin", query_string=required).status_code == 200


def test_the_drops_list_is_the_ledger_with_its_reasons(call, wdb):
    rows, _ = walk(call, "/api/v1/drops", status="loaded")
    assert [row["file_id"] for row in rows] == [r[0] for r in wdb.execute(
        "select file_id from ops.file_ledger where status = 'loaded' order by file_id desc")]
    loaded_rows = {row["file_id"]: (row["rows_loaded"], row["rows_rejected"]) for row in rows}
    assert loaded_rows == {f: (loaded, rejected) for f, loaded, rejected in wdb.execute(
        "select file_id, rows_loaded, rows_rejected from ops.file_ledger where status = 'loaded'")}
    assert sum(rejected for _, rejected in loaded_rows.values()) > 0  # the generated drops carry bad rows


@pytest.mark.parametrize("path", ANALYTICS)
def test_analytics_endpoints_serve_every_role(call, path):
    assert {call(path, role).status_code for role in ("analyst", "clinician", "admin")} == {200}


@pytest.mark.parametrize("path", PATIENT_LEVEL)
def test_every_patient_level_read_is_audited_with_who_what_and_parameters(call, wdb, keys, path):
    key_id = int(keys["clinician"].split("_")[1])
    required = required_values(wdb, BY_PATH[path])[0]  # what was asked for (one member's id) is recorded too
    before = wdb.execute("select coalesce(max(audit_id), 0) from ops.api_audit").fetchone()[0]
    assert call(path, "clinician", query_string={**required, "limit": 3, "format": "csv"}).status_code == 200
    assert call(path, "clinician", query_string={**required, "limit": 2}).status_code == 200
    rows = wdb.execute("select key_id, role, method, endpoint, params from ops.api_audit where audit_id > %s "
                       "order by audit_id", (before,)).fetchall()
    asked = {name: [value] for name, value in required.items()}
    assert rows == [(key_id, "clinician", "GET", path, {**asked, "limit": ["3"], "format": ["csv"]}),
                    (key_id, "clinician", "GET", path, {**asked, "limit": ["2"]})]


def test_a_key_that_read_cannot_be_deleted_only_revoked(call, wdb, keys):
    """The audit trail names keys without a foreign key (its check would lock the key's row on every audited read:
    decision 0014), so keys must outlive their audit rows: even the warehouse owner cannot delete or truncate them."""
    key_id = int(keys["clinician"].split("_")[1])
    assert call("/api/v1/patients", "clinician", query_string={"limit": 1}).status_code == 200
    for statement in ("delete from ops.api_keys where key_id = %s", "truncate ops.api_keys cascade"):
        with pytest.raises(psycopg.errors.RaiseException, match="revoked, never deleted"):
            wdb.execute(statement, (key_id,) if "%s" in statement else None)
    assert wdb.execute("select count(*) from ops.api_keys where key_id = %s", (key_id,)).fetchone()[0] == 1
    assert wdb.execute("select count(*) from ops.api_audit where key_id = %s", (key_id,)).fetchone()[0] >= 1


def test_analytics_reads_are_not_audited(call, wdb):
    before = wdb.execute("select count(*) from ops.api_audit").fetchone()[0]
    assert call("/api/v1/triage-trends", "clinician").status_code == 200
    assert wdb.execute("select count(*) from ops.api_audit").fetchone()[0] == before


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_revoked_key_is_refused_within_the_key_cache_seconds(api, warehouse):
    from backend.auth import create_key

    seconds = api.config["API_SETTINGS"].key_cache_seconds
    assert seconds == 5  # the documented default (README, .env.example)
    clock = Clock()
    api.extensions["key_cache"].clock = clock
    try:
        key = create_key(warehouse.database_url, "leaver", "clinician")
        client = api.test_client()
        headers = {"X-API-Key": key}
        assert client.get("/api/v1/patients", headers=headers).status_code == 200
        result = api.test_cli_runner().invoke(args=["api-key", "revoke", key.split("_")[1]])
        assert result.exit_code == 0 and "revoked key" in result.output
        clock.now += seconds - 0.01  # the process still remembers the key it checked a moment ago...
        assert client.get("/api/v1/patients", headers=headers).status_code == 200
        clock.now += 0.01  # ...and no longer once the bound has passed: the key is looked up again and refused
        assert client.get("/api/v1/patients", headers=headers).status_code == 401
        clock.now += 3600  # refusals are never remembered as anything else
        assert client.get("/api/v1/patients", headers=headers).status_code == 401
    finally:
        api.extensions["key_cache"].clock = time.monotonic
        api.extensions["key_cache"].clear()


def test_without_a_key_cache_a_revoked_key_is_refused_at_once(warehouse, dbt_manifest, login_passwords):
    from backend.app import create_app
    from backend.auth import create_key
    from tests.backend.conftest import api_settings

    app = create_app(api_settings(warehouse.database_url, login_passwords, rate_limit="", auth_failure_limit="",
                                  key_cache_seconds=0))
    key = create_key(warehouse.database_url, "leaver", "clinician")
    headers = {"X-API-Key": key}
    assert app.test_client().get("/api/v1/patients", headers=headers).status_code == 200
    assert app.test_cli_runner().invoke(args=["api-key", "revoke", key.split("_")[1]]).exit_code == 0
    assert app.test_client().get("/api/v1/patients", headers=headers).status_code == 401


def test_the_cli_creates_a_working_key_shown_once_and_stores_only_its_hash(api, wdb):
    result = api.test_cli_runner().invoke(args=["api-key", "create", "--name", "BI team", "--role", "analyst"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("hwk_")
    stored = wdb.execute("select name, role, key_hash from ops.api_keys where key_id = %s",
                         (int(key.split("_")[1]),)).fetchone()
    assert stored[:2] == ("BI team", "analyst") and key not in stored[2] and len(stored[2]) == 64
    assert api.test_client().get("/api/v1/facilities", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = api.test_cli_runner().invoke(args=["api-key", "list"]).output
    assert "BI team" in listed and key not in listed


# --- CSV --------------------------------------------------------------------------------------------------------
def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def _as_csv_cell(value, column_type: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join("" if v is None else str(v) for v in value)  # text[] and integer[]: one cell
    if isinstance(value, bool):
        return "true" if value else "false"
    if column_type in ("text", "text[]", "integer[]") and str(value)[:1] in ("=", "+", "-", "@", "\t", "\r", "\n", "'"):
        return "'" + str(value)  # a phone number such as +234..., neutralised against spreadsheet formulas
    return str(value)


def _same_cell(csv_value: str, json_value, column_type: str) -> bool:
    """CSV writes numerics exactly as stored (0.2500); JSON gives them as numbers (0.25), i.e. the nearest double
    (a bed-occupancy rate such as 0.88913428571428571429 is 0.8891342857142857 in JSON). A JSON column's cell is its
    JSON text (neutralised like text, with a leading `'`, which no JSON text starts with): compared parsed."""
    if column_type == "json":
        text = csv_value[1:] if csv_value.startswith("'") else csv_value
        return json_value is None if text == "" else json.loads(text) == json_value
    if isinstance(json_value, float) and csv_value:
        return float(Decimal(csv_value)) == json_value
    return csv_value == _as_csv_cell(json_value, column_type)


@pytest.mark.parametrize("path", list(BY_PATH))
def test_csv_holds_what_json_holds(call, wdb, path):
    resource = BY_PATH[path]
    required = required_values(wdb, resource)[0]
    conditions, params = narrowed_to(resource, required)
    expected = expected_rows(wdb, resource, where_clause(conditions), tuple(params))
    meta = call(path, query_string=required).get_json()["meta"]
    for asked in ({"headers": {"Accept": "text/csv"}, "query_string": required},
                  {"query_string": {**required, "format": "csv"}}):
        response = call(path, **asked)
        rows = _csv(response)  # read the stream before the next request
        assert response.status_code == 200 and response.mimetype == "text/csv"
        assert response.headers["X-Total-Count"] == str(len(expected))
        if resource.built_by_dbt:  # a live table's as_of is the moment of each read
            assert response.headers["X-As-Of"] == meta["as_of"]
        assert response.headers["X-Sources"] == ",".join(map(str, meta["sources"]))
    assert list(rows[0]) == [c.name for c in resource.columns]
    # Every row, not a page: CSV is the spreadsheet user's whole answer.
    assert len(rows) == len(expected)
    assert all(_same_cell(got[k], v, resource.column(k).type)
               for got, row in zip(rows, expected, strict=True) for k, v in row.items())


def test_csv_numbers_are_written_exactly_as_stored(call, wdb):
    rows = _csv(call("/api/v1/triage-trends", query_string={"format": "csv", "limit": 200}))
    served = {(r["facility_id"], r["visit_date"]): r["visit_count_7d_avg"] for r in rows}
    stored = {(f, str(d)): v for f, d, v in wdb.execute(
        "select facility_id, visit_date, visit_count_7d_avg from analytics.triage_trends")}
    # visit_count_7d_avg is numeric with 2 decimals: 5.00 stays 5.00 (a float would print 5.0).
    assert served and all(value == ("" if stored[key] is None else str(stored[key])) for key, value in served.items())
    assert any(value.endswith("0") and "." in value for value in served.values())


# --- bad and hostile input --------------------------------------------------------------------------------------
INJECTIONS = ["' or '1'='1", "1; drop table ops.api_keys; --", "\\x00", "%00", "' union select key_hash from ops.api_keys --",
              "${jndi:ldap://x}", "../../etc/passwd", "\u202e\u0000", "9" * 400, "-1", "2026-13-45", "true'"]


@pytest.mark.parametrize("path", list(BY_PATH))
def test_injection_strings_in_every_parameter_are_refused_or_taken_as_values(call, wdb, path):
    resource = BY_PATH[path]
    required = required_values(wdb, resource)[0]  # so that each parameter is the one a request is judged by
    names = [*resource.filter_params(), "sort", "limit", "cursor", "count", "format"]
    for name in names:
        for value in INJECTIONS:
            response = call(path, query_string={**required, name: value})
            assert response.status_code in {200, 400}, (name, value, response.status_code)
            body = response.get_data(as_text=True)
            assert "select" not in body.lower() or response.status_code == 200, (name, value)
            assert "Traceback" not in body and "psycopg" not in body and "sqlalchemy" not in body.lower()
    assert wdb.execute("select count(*) from ops.api_keys").fetchone()[0] > 0


@pytest.mark.parametrize(("query", "code"), [
    ({"colour": "red"}, "unknown_parameter"), ({"limit": "51"}, "invalid_parameter"),
    ({"limit": "0"}, "invalid_parameter"), ({"sort": "notes"}, "invalid_parameter"),
    ({"visit_date_from": "yesterday"}, "invalid_parameter"), ({"cursor": "bm90IG91cnM"}, "invalid_cursor"),
])
def test_bad_parameters_are_a_400_that_says_what_is_allowed(call, query, code):
    response = call("/api/v1/triage-visits", query_string=query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    if code != "invalid_cursor":
        assert "visit_date_from" in error["allowed"] and "cursor" in error["allowed"]
