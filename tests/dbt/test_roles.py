"""Who can read what, checked by logging in as members of each group role after a real dbt build."""

from __future__ import annotations

import uuid
from datetime import date

import psycopg
import pytest

from elt.demo import generate_medilink_drops
from elt.pipeline import discover_new_files, ingest_file
from elt.transform import build

PREFIX = "medical_records/input/"


@pytest.fixture
def built(settings, store, db):
    """A warehouse with two days of demo drops loaded (bad rows included) and every dbt model built."""
    drop = generate_medilink_drops(end_date=date(2026, 11, 14), days=2, seed=3, facilities=3, patients_per_facility=4)
    for name, data in drop.files.items():
        store.put(PREFIX + name, data)
    for key in discover_new_files("medilink", settings=settings):
        ingest_file(key, settings=settings)
    assert db.execute("select count(*) from ops.load_rejects").fetchone()[0] > 0  # something to hide
    build(settings=settings)
    return settings


def login_as(db, settings, role: str) -> psycopg.Connection:
    """A new login in `role` only, connected with its password (the test server asks every login but the owner
    for one)."""
    user, password = f"t_{role}_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    db.execute(f"create role \"{user}\" login password '{password}' in role {role}")
    return psycopg.connect(settings.database_url.replace("postgres@", f"{user}:{password}@", 1), autocommit=True)


def can_read(conn: psycopg.Connection, query: str) -> bool:
    try:
        conn.execute(query).fetchall()
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def test_each_role_reads_only_what_it_should(built, db):
    bi = login_as(db, built, "bi_reader")
    api = login_as(db, built, "api_reader")
    loader = login_as(db, built, "warehouse_loader")
    transformer = login_as(db, built, "warehouse_transformer")

    # BI tools: the de-identified analytics marts, nothing with names or raw values.
    assert can_read(bi, "select * from analytics.facility_performance")
    assert not can_read(bi, "select * from core.dim_patients")
    assert not can_read(bi, "select * from clinical.patient_summary")
    assert not can_read(bi, "select * from raw.medilink_patients")
    assert not can_read(bi, "select * from ops.load_rejects")
    # Claims: the de-identified marts (member_key only), never the core facts with member ids.
    assert can_read(bi, "select * from analytics.claim_anomaly_scores")
    assert can_read(bi, "select * from analytics.provider_claim_metrics")
    assert not can_read(bi, "select * from core.fct_claims")
    assert not can_read(bi, "select * from staging.stg_claims__claim_lines")
    # The API: marts, the ledger and rejects, but never the rejected values (personal data).
    assert can_read(api, "select * from analytics.facility_performance")
    assert can_read(api, "select * from core.dim_patients")
    assert can_read(api, "select * from clinical.patient_summary")
    assert can_read(api, "select file_id, status from ops.file_ledger")
    assert can_read(api, "select file_id, row_number, column_name, rule, message from ops.load_rejects")
    assert not can_read(api, "select raw_value from ops.load_rejects")
    assert not can_read(api, "select * from raw.medilink_patients")
    # dbt reads the raw views and the ledger; the loader reads and writes raw and ops, reject values included.
    assert can_read(transformer, "select * from raw.medilink_patients__valid")
    assert not can_read(transformer, "select raw_value from ops.load_rejects")
    assert can_read(loader, "select raw_value from ops.load_rejects")
    assert can_read(loader, "select * from raw.medilink_patients")
    for conn in (bi, api, loader, transformer):
        conn.close()
