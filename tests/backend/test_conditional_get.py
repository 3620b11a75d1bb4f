"""Conditional GETs (issue 14): every list response carries an ETag derived from the mart's build (as_of, sources), the
query as parsed, the format and the caller's role; a repeat with If-None-Match is a 304 that reads no mart; a
patient-level 304 is audited; a rebuild is seen within API_BUILD_STAMP_SECONDS. Also: a page is only served when its
audit row is written, and a pooled connection that died is replaced without failing the request.

The ETags expected here are never computed with the API's own function: they are compared with each other (equal
for the same answer, different when the build, the query or the role differ)."""

from __future__ import annotations

import time

import psycopg
import pytest

from backend.api import listing
from backend.api.catalogue import declared_catalogue
from backend.app import create_app
from backend.auth import create_key
from backend.cache import TtlCache
from tests.backend.conftest import api_settings, required_values

ENDPOINTS = [(e.path, e.resource) for e in declared_catalogue().endpoints if "{" not in e.path]
BY_PATH = dict(ENDPOINTS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def audit_count(wdb) -> int:
    return wdb.execute("select count(*) from ops.api_audit").fetchone()[0]


# --- on the built warehouse --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(BY_PATH))
def test_every_list_answer_has_an_etag_and_its_repeat_is_a_304(call, wdb, path):
    resource = BY_PATH[path]
    role = resource.role if resource.role != "analyst" else "analyst"
    asked = {**required_values(wdb, resource)[0], "limit": 5}  # with the filters it requires (one member's lines)
    first = call(path, role, query_string=asked)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and len(etag) > 10
    assert first.headers["Cache-Control"] == ("no-store" if resource.patient_level else "private, no-cache")
    assert {"Accept", "Authorization"} <= {v.strip() for v in first.headers["Vary"].split(",")}
    again = call(path, role, query_string=asked, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b"" and again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
    # A list of validators, one of which matches, and the weak-comparison rule (the W/ prefix is not required)
    assert call(path, role, query_string=asked,
                headers={"If-None-Match": f'"other", {etag[2:]}'}).status_code == 304
    assert call(path, role, query_string=asked, headers={"If-None-Match": '"other"'}).status_code == 200


def test_the_etag_depends_on_the_query_the_format_and_the_role(call):
    path = "/api/v1/triage-trends"

    def etag(role: str = "analyst", **query) -> str:
        response = call(path, role, query_string=query)
        assert response.status_code == 200
        return response.headers["ETag"]

    base = etag(limit=5)
    assert etag(limit=5) == base  # the same answer, the same ETag
    cursor = call(path, "analyst", query_string={"limit": 5}).get_json()["meta"]["next_cursor"]
    variants = {
        "limit": etag(limit=6),
        "default limit": etag(),
        "filter": etag(limit=5, visit_date_from="2026-11-10"),
        "sort": etag(limit=5, sort="-visit_date"),
        "cursor": etag(limit=5, cursor=cursor),
        "exact count": etag(limit=5, count="exact"),
        "csv": call(path, "analyst", query_string={"limit": 5, "format": "csv"}).headers["ETag"],
        "clinician": etag("clinician", limit=5),
        "admin": etag("admin", limit=5),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants), variants
    # Another role's ETag is not a match: the clinician's copy is no proof of what an analyst may see
    response = call(path, "analyst", query_string={"limit": 5}, headers={"If-None-Match": variants["clinician"]})
    assert response.status_code == 200 and response.headers["ETag"] == base


def test_a_csv_download_revalidates_too(call):
    path = "/api/v1/facility-monthly"
    first = call(path, "analyst", query_string={"format": "csv"})
    body = first.get_data()  # read the stream before the next request
    assert first.status_code == 200 and body.startswith(b"facility_id,")
    again = call(path, "analyst", query_string={"format": "csv"}, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""


def test_a_patient_level_304_is_audited_and_an_analytics_one_is_not(call, wdb, keys):
    path = "/api/v1/patients"
    before = audit_count(wdb)
    first = call(path, "clinician", query_string={"limit": 2})
    assert first.status_code == 200 and audit_count(wdb) == before + 1
    again = call(path, "clinician", query_string={"limit": 2}, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert audit_count(wdb) == before + 2  # the client goes on showing those rows: that is a read of them
    key_id = int(keys["clinician"].split("_")[1])
    assert wdb.execute("select key_id, endpoint, params from ops.api_audit order by audit_id desc limit 1").fetchone() \
        == (key_id, path, {"limit": ["2"]})
    trends = call("/api/v1/triage-trends", "clinician")
    before = audit_count(wdb)
    assert call("/api/v1/triage-trends", "clinician", headers={"If-None-Match": trends.headers["ETag"]}).status_code == 304
    assert audit_count(wdb) == before


def test_a_304_still_needs_a_valid_key_and_the_role(call):
    path = "/api/v1/patients"
    etag = call(path, "clinician").headers["ETag"]
    assert call(path, None, headers={"If-None-Match": etag}).status_code == 401
    assert call(path, "analyst", headers={"If-None-Match": etag}).status_code == 403
    assert call(path, "clinician", headers={"If-None-Match": "*"}).status_code == 304


# --- on a hand-made mart, rebuilt by the test --------------------------------------------------------------------------
@pytest.fixture
def conditional(settings, login_passwords, facilities_mart):
    """The API on the hand-made facility_performance mart, its build-stamp cache on a clock the test moves."""
    app = create_app(api_settings(settings.database_url, login_passwords, max_page_size=50, default_page_size=2))
    clock = Clock()
    app.extensions["builds"].clock = clock
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'etags', 'analyst')}"
    return app, client, clock


def test_a_rebuild_changes_the_etag_within_the_build_stamp_seconds(conditional, db):
    app, client, clock = conditional
    seconds = app.config["API_SETTINGS"].build_stamp_seconds
    assert seconds == 2  # the documented default
    first = client.get("/api/v1/facilities")
    old = first.headers["ETag"]
    # A rebuild, as dbt's table materialization does it: every row carries the new build's time.
    db.execute("update analytics.facility_performance set built_at = '2026-11-16T02:10:00Z'")
    clock.now += seconds - 0.01  # within the bound the process goes by the stamp it read: still a 304
    assert client.get("/api/v1/facilities", headers={"If-None-Match": old}).status_code == 304
    clock.now += 0.01
    rebuilt = client.get("/api/v1/facilities", headers={"If-None-Match": old})
    assert rebuilt.status_code == 200
    assert rebuilt.get_json()["meta"]["as_of"] == "2026-11-16T02:10:00+00:00"
    new = rebuilt.headers["ETag"]
    assert new != old
    assert client.get("/api/v1/facilities", headers={"If-None-Match": new}).status_code == 304


def test_a_new_source_file_changes_the_etag(conditional, db):
    app, client, clock = conditional
    old = client.get("/api/v1/facilities").headers["ETag"]
    # A file loaded before the build's time: the mart's meta lists it among its sources from now on.
    db.execute("insert into ops.file_ledger (bucket, key, drop_type, contract_version, status, finished_at) "
               "values ('b', 'medical_records/input/patients_2026-11-14.csv', 'medilink_patients', 1, 'loaded', "
               "'2026-11-15T01:00:00Z')")
    clock.now += app.config["API_SETTINGS"].build_stamp_seconds
    response = client.get("/api/v1/facilities", headers={"If-None-Match": old})
    assert response.status_code == 200 and len(response.get_json()["meta"]["sources"]) == 1
    assert response.headers["ETag"] != old


def test_a_page_reads_the_ledger_once_per_build_stamp_seconds_and_sees_a_rebuild_at_once(conditional, db):
    """A page reads its mart's as_of every time, in its own snapshot, but the ledger ids of the build's files only
    when the as_of is new or the build this process remembers is API_BUILD_STAMP_SECONDS old."""
    app, client, clock = conditional
    seconds = app.config["API_SETTINGS"].build_stamp_seconds
    assert client.get("/api/v1/facilities").get_json()["meta"]["sources"] == []
    db.execute("insert into ops.file_ledger (bucket, key, drop_type, contract_version, status, finished_at) "
               "values ('b', 'medical_records/input/patients_2026-11-14.csv', 'medilink_patients', 1, 'loaded', "
               "'2026-11-15T01:00:00Z')")  # loaded before the build, which it now counts among its sources
    clock.now += seconds - 0.01
    assert client.get("/api/v1/facilities").get_json()["meta"]["sources"] == []  # the ledger was not read again
    clock.now += 0.01
    file_ids = client.get("/api/v1/facilities").get_json()["meta"]["sources"]
    assert len(file_ids) == 1
    db.execute("insert into ops.file_ledger (bucket, key, drop_type, contract_version, status, finished_at) "
               "values ('b', 'medical_records/input/patients_2026-11-15.csv', 'medilink_patients', 1, 'loaded', "
               "'2026-11-16T01:00:00Z')")  # loaded after the build: a source of the next one
    db.execute("update analytics.facility_performance set built_at = '2026-11-16T02:10:00Z'")  # that build
    meta = client.get("/api/v1/facilities").get_json()["meta"]  # the clock has not moved: the as_of tells
    assert meta["as_of"] == "2026-11-16T02:10:00+00:00" and len(meta["sources"]) == 2
    assert meta["sources"][0] == file_ids[0]


def test_a_304_reads_no_mart(conditional, db):
    _, client, _ = conditional
    etag = client.get("/api/v1/facilities").headers["ETag"]
    db.execute("revoke select on analytics.facility_performance from api_reader")  # any read of it now fails
    assert client.get("/api/v1/facilities", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/api/v1/facilities").status_code == 500  # proof that the revoke holds for a read


def test_with_no_build_stamp_cache_a_rebuild_is_seen_at_once(settings, login_passwords, facilities_mart, db):
    app = create_app(api_settings(settings.database_url, login_passwords, build_stamp_seconds=0))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'etags', 'analyst')}"
    old = client.get("/api/v1/facilities").headers["ETag"]
    assert client.get("/api/v1/facilities", headers={"If-None-Match": old}).status_code == 304
    db.execute("update analytics.facility_performance set built_at = built_at + interval '1 day'")
    assert client.get("/api/v1/facilities", headers={"If-None-Match": old}).status_code == 200


# --- a conditional request seen before: answered from its remembered view --------------------------------------------
@pytest.fixture
def remembered(settings, login_passwords, facilities_mart):
    """The API on the hand-made mart with both of its caches on clocks the test moves, and a key per role."""
    app = create_app(api_settings(settings.database_url, login_passwords, max_page_size=50, default_page_size=2,
                                  rate_limit="", auth_failure_limit=""))
    clock = Clock()
    app.extensions["builds"].clock = clock
    app.extensions["key_cache"].clock = clock
    keys = {role: create_key(settings.database_url, f"remembered {role}", role) for role in ("analyst", "clinician")}

    def get(role: str, query: str = "", etag: str | None = None, **headers):
        headers = {"Authorization": f"Bearer {keys[role]}", **headers}
        if etag is not None:
            headers["If-None-Match"] = etag
        return app.test_client().get(f"/api/v1/facilities{query}", headers=headers)

    return app, get, clock, keys


def test_a_remembered_request_is_not_parsed_again(remembered, monkeypatch):
    app, get, _, _ = remembered
    etag = get("analyst", "?state=Kano").headers["ETag"]
    parsed = []
    original = listing.parse_query
    monkeypatch.setattr(listing, "parse_query", lambda model: parsed.append(model) or original(model))
    assert get("analyst", "?state=Kano", etag).status_code == 304  # first conditional request: parsed, remembered
    assert [get("analyst", "?state=Kano", etag).status_code for _ in range(3)] == [304] * 3
    assert len(parsed) == 1
    assert get("analyst", "?state=Kano").status_code == 200  # a page is always parsed: it needs the values
    assert len(parsed) == 2


def test_a_revoked_key_gets_no_304_after_the_key_cache_seconds(remembered, db):
    app, get, clock, keys = remembered
    seconds = app.config["API_SETTINGS"].key_cache_seconds
    etag = get("analyst").headers["ETag"]
    assert get("analyst", etag=etag).status_code == 304
    db.execute("update ops.api_keys set revoked_at = now() where key_id = %s", (int(keys["analyst"].split("_")[1]),))
    clock.now += seconds - 0.01
    assert get("analyst", etag=etag).status_code == 304  # the key as checked a moment ago, within the bound
    clock.now += 0.01
    refused = get("analyst", etag=etag)
    assert refused.status_code == 401 and "ETag" not in refused.headers
    clock.now += 3600
    assert get("analyst", etag=etag).status_code == 401


def test_a_rebuild_is_seen_within_the_bound_by_a_remembered_request(remembered, db):
    app, get, clock, _ = remembered
    seconds = app.config["API_SETTINGS"].build_stamp_seconds
    old = get("analyst", "?sort=-facility_name").headers["ETag"]
    assert get("analyst", "?sort=-facility_name", old).status_code == 304  # now remembered
    db.execute("update analytics.facility_performance set built_at = '2026-11-16T02:10:00Z'")
    clock.now += seconds - 0.01
    assert get("analyst", "?sort=-facility_name", old).status_code == 304
    clock.now += 0.01
    rebuilt = get("analyst", "?sort=-facility_name", old)
    assert rebuilt.status_code == 200 and rebuilt.headers["ETag"] != old
    assert rebuilt.get_json()["meta"]["as_of"] == "2026-11-16T02:10:00+00:00"
    assert get("analyst", "?sort=-facility_name", rebuilt.headers["ETag"]).status_code == 304


def test_remembered_requests_keep_the_role_query_and_format_apart(remembered):
    _, get, _, _ = remembered
    etag = get("analyst", "?limit=3").headers["ETag"]
    assert get("analyst", "?limit=3", etag).status_code == 304  # remembered from here on
    variants = {  # name: role, query, headers
        "another role": ("clinician", "?limit=3", {}),
        "another limit": ("analyst", "?limit=4", {}),
        "another filter": ("analyst", "?limit=3&state=Kano", {}),
        "CSV by Accept": ("analyst", "?limit=3", {"Accept": "text/csv"}),
        "CSV by format": ("analyst", "?limit=3&format=csv", {}),
    }
    etags = {}
    for name, (role, query, headers) in variants.items():
        response = get(role, query, etag, **headers)
        assert response.status_code == 200, name  # the remembered view of ?limit=3 is not theirs
        assert response.get_data().startswith(b"facility_id," if "CSV" in name else b'{"data":'), name
        etags[name] = response.headers["ETag"]
    assert etags["CSV by Accept"] == etags["CSV by format"]  # one download, however it was asked for
    assert len({etag, *etags.values()}) == len(variants)  # the rest all differ
    for name, (role, query, headers) in variants.items():  # each now remembered with its own view
        assert [get(role, query, etags[name], **headers).status_code for _ in range(2)] == [304, 304], name
        assert get(role, query, etag, **headers).status_code == 200, name


def test_a_refused_request_is_never_remembered(remembered):
    _, get, _, _ = remembered
    etag = get("analyst").headers["ETag"]
    for query in ("?limit=51", "?colour=red", "?cursor=nonsense", "?state=Kano&state=Lagos"):
        assert [get("analyst", query, etag).status_code for _ in range(2)] == [400, 400], query
    assert get("analyst", "", etag).status_code == 304


def test_the_same_request_has_the_same_etag_in_every_process(settings, login_passwords, facilities_mart):
    """Workers do not share memory: an ETag one process gave must be recognised by another, remembered or not."""
    key = create_key(settings.database_url, "two workers", "analyst")
    first, second = (create_app(api_settings(settings.database_url, login_passwords, rate_limit=""))
                     for _ in range(2))
    headers = {"Authorization": f"Bearer {key}"}
    etag = first.test_client().get("/api/v1/facilities?state=Lagos", headers=headers).headers["ETag"]
    again = second.test_client().get("/api/v1/facilities?state=Lagos", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag


def test_a_remembered_request_keeps_no_filter_value_in_memory(remembered):
    """As with the planner's estimates (`_planned_key`): a filter value can be a patient id."""
    app, get, _, _ = remembered
    etag = get("analyst", "?facility_id=patient-Zq9x").headers["ETag"]
    assert get("analyst", "?facility_id=patient-Zq9x", etag).status_code == 304
    entries = list(app.extensions["views"]._entries.items())  # (resource, request digest) -> (view digest, when)
    assert len(entries) == 1
    (resource, digest), (view, _) = entries[0]
    assert resource.name == "facilities" and isinstance(digest, bytes) and len(digest) == 16
    assert len(view) == 32 and set(view) <= set("0123456789abcdef")
    assert "Zq9x" not in repr(digest) + view


# --- the audit row comes first; dead connections ------------------------------------------------------------------------
PATIENTS_DDL = """
create schema if not exists core;
create table core.dim_patients (
    patient_id text not null, facility_id text, first_name text, last_name text, sex text, birth_date date,
    phone_number text, first_reported_date date, last_reported_date date, built_at timestamptz
);
insert into core.dim_patients values ('p1', 'f1', 'Adaeze', 'Okonkwo-Test', 'F', '1990-01-01', '+2348000000001',
    '2026-11-01', '2026-11-14', '2026-11-15T02:10:00Z');
grant usage on schema core to api_reader;
grant select on core.dim_patients to api_reader;
"""


def test_a_patient_level_read_that_cannot_be_audited_is_not_served(settings, login_passwords, db):
    db.execute(PATIENTS_DDL)
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit=""))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'audit', 'clinician')}"
    served = client.get("/api/v1/patients")
    assert served.status_code == 200 and served.get_json()["data"][0]["last_name"] == "Okonkwo-Test"
    etag = served.headers["ETag"]
    db.execute("revoke insert on ops.api_audit from api_reader")  # the audit trail cannot be written
    for headers in ({}, {"If-None-Match": etag}, {"Accept": "text/csv"}):
        refused = client.get("/api/v1/patients", headers=headers)
        assert refused.status_code == 500, headers
        body = refused.get_data(as_text=True)
        assert "Okonkwo" not in body and "Adaeze" not in body and "+234" not in body
    assert db.execute("select count(*) from ops.api_audit").fetchone()[0] == 1  # the one read that was served


def test_a_pooled_connection_that_died_is_replaced_without_failing_the_request(settings, login_passwords, db,
                                                                                 facilities_mart):
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit=""))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'restart', 'analyst')}"
    assert client.get("/api/v1/facilities").status_code == 200  # a pooled connection now exists
    database = db.execute("select current_database()").fetchone()[0]
    killed = db.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = %s and "
                        "application_name = 'health-api'", (database,)).fetchone()[0]
    assert killed >= 1
    for _ in range(50):  # wait until the server has really ended them
        if not db.execute("select 1 from pg_stat_activity where datname = %s and application_name = 'health-api'",
                          (database,)).fetchone():
            break
        time.sleep(0.05)
    response = client.get("/api/v1/facilities")
    assert response.status_code == 200 and response.get_json()["meta"]["count"] == len(facilities_mart)


# --- the cache itself -----------------------------------------------------------------------------------------------
def test_a_cached_value_lasts_its_seconds_from_when_it_was_true_and_an_older_one_never_replaces_it():
    clock = Clock()
    cache = TtlCache(2, clock=clock)
    cache.put("mart", "build 2", true_at=clock.now)
    cache.put("mart", "build 1", true_at=clock.now - 1)  # read in a transaction that began earlier
    assert cache.get("mart") == "build 2"
    clock.now += 1.99
    assert cache.get("mart") == "build 2"
    clock.now += 0.01
    assert cache.get("mart") is None
    small = TtlCache(10, size=2, clock=clock)
    for name in ("a", "b", "c"):
        small.put(name, name)
    assert [small.get(name) for name in ("a", "b", "c")] == [None, "b", "c"]
    off = TtlCache(0, clock=clock)
    off.put("mart", "build 1")
    assert off.get("mart") is None


def test_the_psycopg_errors_of_the_list_path_keep_their_envelopes(settings, login_passwords):
    """A mart not built yet is still a 503 `not_built` now that the list path talks to psycopg directly."""
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit=""))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'nb', 'analyst')}"
    response = client.get("/api/v1/facilities")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "not_built"
    assert isinstance(psycopg.errors.UndefinedTable("x"), psycopg.ProgrammingError)
