"""The demo's clinic system: a database `clinic_ehr` beside the warehouse, which the connector
`airflow/connectors/clinic_ehr_pull.yml` pulls from.

Its `patients` table holds the patients of the generated Medilink drops (elt/demo.py, the same seed as `elt demo`, so
the pull and the dropped export agree), as a clinic's EHR keeps them: a primary key, an `updated_at` the pull's
cursor follows, and the date of birth as the free text a legacy system lets through, so that the demo's two broken
rows reach the warehouse's rejects as they do from a dropped file.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from elt.demo import generate_medilink_drops

DATABASE = "clinic_ehr"
# The variable the declaration's `credentials: {conn_id: clinic_ehr}` reads (elt.connectors.base.Credentials).
CONNECTION_VARIABLE = "AIRFLOW_CONN_CLINIC_EHR"


def create_clinic_ehr(server_url: str, *, seed: int = 42, database: str = DATABASE) -> dict[str, str]:
    """Create the clinic database on the server at `server_url` (a libpq URL as its owner) and fill it once; a
    database that exists is left as it is. Returns the environment the connector needs: {CONNECTION_VARIABLE: url}."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    url = server_url.rsplit("/", 1)[0] + "/" + database
    with psycopg.connect(url) as conn:
        conn.execute("create table if not exists patients (patient_id integer primary key, facility_name text not "
                     "null, first_name text not null, last_name text not null, sex text, dob text, phone text, "
                     "updated_at timestamptz not null default now())")
        if conn.execute("select count(*) from patients").fetchone()[0] == 0:
            with conn.cursor() as cur:
                cur.executemany("insert into patients values (%s, %s, %s, %s, %s, %s, %s, %s)", demo_patients(seed))
    return {CONNECTION_VARIABLE: url}


def demo_patients(seed: int = 42, *, today: date | None = None) -> list[tuple]:
    """(patient_id, facility_name, first_name, last_name, sex, dob, phone, updated_at) of the demo's patients
    export, one registration a few minutes after the other, ending yesterday."""
    today = today or datetime.now(UTC).date()
    drop = generate_medilink_drops(end_date=today - timedelta(days=1), seed=seed)
    (name,) = [name for name in drop.files if name.startswith("patients_")]
    rows = list(csv.DictReader(io.StringIO(drop.files[name].decode("utf-8-sig"))))
    start = datetime.combine(today - timedelta(days=1), datetime.min.time(), UTC) - timedelta(minutes=7 * len(rows))
    return [(number, row["facility_name"], row["first_name"], row["last_name"], row["sex"], row["dob"],
             row["phone"], start + timedelta(minutes=7 * number)) for number, row in enumerate(rows, start=1)]
