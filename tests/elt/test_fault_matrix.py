"""The fault matrix: every fault a load can meet, for one file of each kind, and what the next run makes of it.

Kinds: a Medilink CSV (a day's triage visits, beside that day's facilities, patients and medical records), a
KH03 workbook (three raw tables from one file) and a claims CSV (one payer's batch). Faults, each injected
into the real loader against real Postgres and S3 (tests/elt/journey.py and elt.pipeline.STEPS name the
steps):

    kill_before_copy           the loader process is killed (SIGKILL) with the file locked, before its COPY
    kill_mid_copy              ... inside the COPY (the test sees it in pg_stat_progress_copy first)
    kill_after_commit          ... after the commit, before the object is archived
    kill_mid_move              ... with the archive copy in place and the landed object not yet deleted
    s3_error_on_copy           S3 fails every copy to archive/ (the early one and the one after the commit)
    s3_error_on_delete         S3 fails the delete of the landed object after the commit
    postgres_restart_mid_load  Postgres crashes and restarts while the loader is inside its COPY
    postgres_restart_mid_dbt   Postgres crashes and restarts while `dbt build` is half way (held on a lock)

After each, the next run (discover and ingest everything waiting, then `dbt build` where the cell builds
marts) must end with every file loaded exactly once: one ledger row per file, `loaded`, its raw rows as
many as the file has, `(_file_id, _row_number)` unique, the raw rows, rejects and ledger figures equal to
those of a clean load of the same files into another database; the archive holding each file's bytes at
the key the ledger names; nothing left in landing or quarantine.

Marts are compared to a clean build in the cells that build them: `postgres_restart_mid_dbt` (the fault is
in dbt) and `kill_after_commit` (one load fault per kind), because a dbt build costs tens of seconds here;
the raw and ledger comparison, which is what the marts are built from, runs in every cell. Each kind's marts are
`dbt build` of its family's dbt paths (elt/families/*.yml, Family.dbt_select(): its folders and the shared ledger
view), which are compared. Rows are compared with file ids replaced by the files'
keys, and without the columns that say when something ran (timestamps, timings).

The Postgres-restart cells use a Postgres server of their own (started once for this module), never the
session's shared one.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError
from psycopg import sql

import elt.pipeline
from elt.config import Settings
from elt.demo import generate_medilink_drops
from elt.families import declared_families
from elt.pipeline import discover_new_files, ingest_file, prepare
from elt.storage.s3 import ObjectStore
from elt.transform import DbtError, run_dbt
from tests.conftest import REPO, create_database, drop_database
from tests.elt.journey import DEADLINE_SECONDS
from tests.elt.kh03_fixtures import DEFAULT_TRUSTS, SPECIALTIES, build_kh03
from tests.elt.test_claims import BLUECROSS, GOOD, bluecross_line
from tests.elt.test_claims import key as claims_key

FAULTS = ("kill_before_copy", "kill_mid_copy", "kill_after_commit", "kill_mid_move", "s3_error_on_copy",
          "s3_error_on_delete", "postgres_restart_mid_load", "postgres_restart_mid_dbt")
# The cells that build and compare marts (see the module's docstring).
MARTS_BUILT = {"kill_after_commit", "postgres_restart_mid_dbt"}
# The step of the journey at which each kill happens.
KILLED_AT = {"kill_before_copy": "locked", "kill_mid_copy": "copying", "kill_after_commit": "committed",
             "kill_mid_move": "archived"}
# Columns that hold file ids in raw tables, the ledger and the marts: compared as the files' keys.
FILE_ID_COLUMNS = {"_file_id", "file_id", "file_ids", "superseded_by", "duplicate_of"}
# Columns that say when something ran, not what the data is.
RUN_TYPES = {"timestamp with time zone", "timestamp without time zone", "jsonb"}


# --- The three kinds of file ------------------------------------------------------------------------------------


def csv_rows(data: bytes) -> int:
    return len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))) - 1


@dataclass(frozen=True)
class Kind:
    name: str
    files: dict[str, bytes]  # key -> bytes, in the order they are loaded; the last is the faulted one
    rows: dict[str, int]  # key -> rows of that file, counted here from the file itself
    raw_tables: tuple[str, ...]
    dbt_build: tuple[str, ...]
    held_in_dbt: str  # a relation dbt reads half way through its build; locked to hold dbt there
    tables_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> raw tables its rows go to

    @property
    def faulted(self) -> str:
        return list(self.files)[-1]


def family_build(name: str) -> tuple[str, ...]:
    """`dbt build` of what the family's DAG builds: its dbt paths and the shared ones."""
    return ("build", "--select", *declared_families(Settings())[name].dbt_select())


@functools.cache
def medilink() -> Kind:
    day = date(2026, 11, 1)
    drop = generate_medilink_drops(end_date=day, days=1, seed=13, facilities=2, patients_per_facility=4,
                                   visits_per_day=(8, 12))
    order = [f"facilities_{day}.csv", f"patients_{day}.csv", f"medical_records_{day}.csv", f"triage_visits_{day}.csv"]
    files = {"medical_records/input/" + name: drop.files[name] for name in order}
    tables = {key: (f"raw.medilink_{key.rsplit('/', 1)[1].rsplit('_', 1)[0]}",) for key in files}
    return Kind("medilink", files, {key: csv_rows(data) for key, data in files.items()},
                tuple(t for (t,) in tables.values()), family_build("medilink"),
                "raw.medilink_triage_visits__valid", tables)


@functools.cache
def kh03() -> Kind:
    key = "nhs/kh03/Beds-Open-Overnight-Web_File-Q2-2020-21.xlsx"
    trusts, regions = len(DEFAULT_TRUSTS), len({t.region for t in DEFAULT_TRUSTS})
    # trust sheet: England + each trust, five sectors each; region sheet: each region; specialty: trust x specialty
    rows = (1 + trusts) * 5 + regions * 5 + trusts * len(SPECIALTIES)
    tables = ("raw.nhs_kh03_trust_sector", "raw.nhs_kh03_region_sector", "raw.nhs_kh03_specialty")
    return Kind("kh03", {key: build_kh03()}, {key: rows}, tables, family_build("nhs_beds"),
                "raw.nhs_kh03_specialty__valid", {key: tables})


@functools.cache
def claims() -> Kind:
    key = claims_key("bluecross")
    data = "\n".join([BLUECROSS, *(bluecross_line((f"C{n}", *GOOD[n % 3][1:])) for n in range(30))]).encode() + b"\n"
    return Kind("claims", {key: data}, {key: 30}, ("raw.claims",), family_build("claims"),
                "raw.claims__valid", {key: ("raw.claims",)})


# Built once per session, so that a cell and the clean reference load the very same bytes (a workbook records
# in its zip when it was written).
KINDS = {"medilink": medilink, "kh03": kh03, "claims": claims}


# --- What a database holds, comparable between two databases ------------------------------------------------


def _as_keys(value, keys: dict[int, str]):
    if isinstance(value, list):
        return sorted(keys.get(v, v) for v in value)
    return keys.get(value, value)


def _rows(conn: psycopg.Connection, relation: str) -> list[tuple]:
    """Every row of `relation`, file ids as keys, without run-time columns, in a fixed order."""
    keys = dict(conn.execute("select file_id, key from ops.file_ledger").fetchall())
    schema, name = relation.split(".")
    columns = [c for c, data_type in conn.execute(
        "select column_name, data_type from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position", (schema, name)).fetchall() if data_type not in RUN_TYPES]
    rows = conn.execute(sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, name))).fetchall()
    translated = [tuple(_as_keys(v, keys) if c in FILE_ID_COLUMNS else v for c, v in zip(columns, row, strict=True))
                  for row in rows]
    return sorted(translated, key=repr)


def loaded_state(conn: psycopg.Connection, kind: Kind) -> dict[str, list[tuple]]:
    """The ledger's figures, the raw rows and the rejects of the kind's files."""
    keys = dict(conn.execute("select file_id, key from ops.file_ledger").fetchall())
    ledger = conn.execute(
        "select key, status, rows_read, rows_loaded, rows_rejected, sha256, encoding, layout, period_start, "
        "period_end, published_on, error, superseded_by, duplicate_of from ops.file_ledger").fetchall()
    rejects = conn.execute("select file_id, row_number, column_name, rule, message from ops.load_rejects").fetchall()
    state = {"ledger": sorted((*row[:12], keys.get(row[12]), keys.get(row[13])) for row in ledger),
             "rejects": sorted((keys[row[0]], *row[1:]) for row in rejects)}
    state.update({table: _rows(conn, table) for table in kind.raw_tables})
    return state


def marts(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every relation dbt built (all schemas but raw, ops and the system's), but the ledger's staging view."""
    relations = [f"{schema}.{name}" for schema, name in conn.execute(
        "select table_schema, table_name from information_schema.tables where table_schema not in "
        "('raw', 'ops', 'public', 'information_schema', 'pg_catalog') and table_name not like 'stg_ops__%' "
        "order by 1, 2").fetchall()]
    return {relation: _rows(conn, relation) for relation in relations}


# --- Servers, databases and runs ---------------------------------------------------------------------------------


@dataclass
class Warehouse:
    settings: Settings
    store: ObjectStore
    server: object | None = None  # the EmbeddedPostgres, when the cell may crash it


def new_bucket(endpoint: str) -> str:
    bucket = f"landing-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


def next_run(warehouse: Warehouse) -> list:
    """What the next run does: load everything waiting in landing."""
    return [ingest_file(key, settings=warehouse.settings)
            for key in discover_new_files(settings=warehouse.settings)]


def load_clean(warehouse: Warehouse, kind: Kind, keys: list[str]) -> None:
    for key in keys:
        warehouse.store.put(key, kind.files[key])
        assert ingest_file(key, settings=warehouse.settings).status == "loaded"


@pytest.fixture(scope="module")
def clean(pg_server_url, s3_endpoint_url, warehouse_template):
    """kind -> (loaded state, marts) of a clean load and build of its files, in a database of its own."""
    cache: dict[str, tuple[dict, dict]] = {}
    databases = []

    def reference(kind: Kind) -> tuple[dict, dict]:
        if kind.name not in cache:
            name = f"clean_{kind.name}_{uuid.uuid4().hex[:6]}"
            databases.append(name)
            settings = Settings(database_url=create_database(pg_server_url, name, template=warehouse_template),
                                s3_endpoint_url=s3_endpoint_url, s3_bucket=new_bucket(s3_endpoint_url))
            load_clean(Warehouse(settings, ObjectStore(settings)), kind, list(kind.files))
            run_dbt(list(kind.dbt_build), settings=settings)
            with psycopg.connect(settings.database_url) as conn:
                cache[kind.name] = (loaded_state(conn, kind), marts(conn))
        return cache[kind.name]

    yield reference
    for name in databases:
        drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
def crashable_server(tmp_path_factory):
    """A Postgres server of this module's own, for the cells that crash it."""
    from elt.devstack.servers import EmbeddedPostgres, free_port

    root = tmp_path_factory.mktemp("crashable-postgres")
    server = EmbeddedPostgres(root / "data", free_port(), root / "postgres.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def warehouse(request, settings, store, s3_endpoint_url):
    """The cell's warehouse: the test's database on the session's server, or for the Postgres-restart cells a
    fresh database on the module's own server."""
    if not request.node.callspec.params["fault"].startswith("postgres_restart"):
        yield Warehouse(settings, store)
        return
    server = request.getfixturevalue("crashable_server")
    url = create_database(server.url("postgres"), f"warehouse_{uuid.uuid4().hex[:6]}")
    crashable = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=settings.s3_bucket)
    prepare(crashable)
    yield Warehouse(crashable, store, server)
    drop_database(server.url("postgres"), url.rsplit("/", 1)[1])


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url, autocommit=True, application_name="fault-matrix") as conn:
        return conn.execute(query).fetchone()[0]


# --- The faults --------------------------------------------------------------------------------------------------

# The loader in a process of its own: at `step` it says so on stdout and waits, to be killed there by the test.
LOADER = """
import sys
import elt.pipeline

def hold(step, key):
    if step == sys.argv[2]:
        print("at", step, flush=True)
        sys.stdin.readline()

elt.pipeline.step_hook = hold
elt.pipeline.ingest_file(sys.argv[1])
"""


def kill_loader_at(warehouse: Warehouse, key: str, step: str) -> None:
    settings = warehouse.settings
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": settings.database_url,
           "S3_ENDPOINT_URL": settings.s3_endpoint_url, "S3_BUCKET": settings.s3_bucket}
    loader = subprocess.Popen([sys.executable, "-c", LOADER, key, step], env=env, cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = loader.stdout.readline()
        assert line.strip() == f"at {step}", f"the loader ended (exit {loader.wait()}) before reaching {step}"
        if step == "copying":  # really inside the COPY
            assert count(settings.database_url,
                         "select count(*) from pg_stat_progress_copy where datname = current_database()") == 1
        os.killpg(loader.pid, signal.SIGKILL)
        assert loader.wait() == -signal.SIGKILL
    finally:
        if loader.poll() is None:
            os.killpg(loader.pid, signal.SIGKILL)
            loader.wait()
    # The killed session's transaction ends when Postgres sees its connection drop.
    wait_until(lambda: count(settings.database_url, "select count(*) from pg_stat_activity where "
                             "datname = current_database() and application_name = 'elt'") == 0,
               "the killed loader's session to end")


def injected(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "InternalError", "Message": "injected by the test"},
                        "ResponseMetadata": {"HTTPStatusCode": 500}}, operation)


def s3_error(warehouse: Warehouse, key: str, monkeypatch, operation: str) -> None:
    """One load with S3 failing `operation` ('copy' to archive/, or 'delete' of the landed object)."""

    class FailingStore(ObjectStore):
        def copy(self, source_key, target_key, **kwargs):
            if operation == "copy" and "/archive/" in target_key:
                raise injected("CopyObject")
            return super().copy(source_key, target_key, **kwargs)

        def delete(self, target_key):
            if operation == "delete" and target_key == key:
                raise injected("DeleteObject")
            return super().delete(target_key)

    monkeypatch.setattr(elt.pipeline, "ObjectStore", FailingStore)
    with pytest.raises(ClientError, match="injected by the test"):
        ingest_file(key, settings=warehouse.settings)
    monkeypatch.undo()
    with psycopg.connect(warehouse.settings.database_url) as conn:  # the error came after the commit
        assert conn.execute("select status from ops.file_ledger where key = %s", (key,)).fetchone() == ("loaded",)
    assert warehouse.store.exists(key)


def postgres_restart_mid_load(warehouse: Warehouse, key: str, monkeypatch) -> None:
    inside_copy, go_on = threading.Event(), threading.Event()
    result: list = []

    def hold(step, _key):
        if step == "copying" and not inside_copy.is_set():
            inside_copy.set()
            go_on.wait()

    def load():
        try:
            result.append(ingest_file(key, settings=warehouse.settings))
        except Exception as exc:  # noqa: BLE001 - inspected below
            result.append(exc)

    monkeypatch.setattr(elt.pipeline, "step_hook", hold)
    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_until(inside_copy.is_set, "the load to reach its COPY")
        assert count(warehouse.settings.database_url,
                     "select count(*) from pg_stat_progress_copy where datname = current_database()") == 1
        warehouse.server.kill()
        warehouse.server.start()  # crash recovery
    finally:
        go_on.set()
        loader.join()
    monkeypatch.undo()
    assert isinstance(result[0], psycopg.OperationalError), result  # the run fails; Airflow would retry it


def postgres_restart_mid_dbt(warehouse: Warehouse, kind: Kind) -> None:
    """dbt builds until it needs `held_in_dbt`, which the test holds locked; Postgres crashes there."""
    url = warehouse.settings.database_url
    failure: list = []
    locker = psycopg.connect(url, application_name="fault-matrix-lock")
    locker.execute(sql.SQL("lock table {} in access exclusive mode").format(
        sql.Identifier(*kind.held_in_dbt.split("."))))

    def build():
        try:
            run_dbt(list(kind.dbt_build), settings=warehouse.settings)
        except DbtError as exc:
            failure.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    try:
        wait_until(lambda: count(url, "select count(*) from pg_stat_activity where datname = current_database() "
                                      "and wait_event_type = 'Lock' and application_name <> 'fault-matrix-lock'") > 0,
                   "dbt to wait for the locked relation")
        warehouse.server.kill()
    finally:
        builder.join()
        locker.close()
    warehouse.server.start()
    assert failure, "dbt build did not fail when Postgres went down"


# --- The matrix ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_after_the_fault_the_next_run_loads_every_file_exactly_once(kind_name, fault, warehouse, clean, monkeypatch):
    kind = KINDS[kind_name]()
    store, settings = warehouse.store, warehouse.settings
    load_clean(warehouse, kind, list(kind.files)[:-1])  # the files loaded before the faulted one
    key = kind.faulted
    store.put(key, kind.files[key])

    if fault in KILLED_AT:
        kill_loader_at(warehouse, key, KILLED_AT[fault])
    elif fault.startswith("s3_error_on_"):
        s3_error(warehouse, key, monkeypatch, fault.removeprefix("s3_error_on_"))
    elif fault == "postgres_restart_mid_load":
        postgres_restart_mid_load(warehouse, key, monkeypatch)
    else:
        assert ingest_file(key, settings=settings).status == "loaded"
        postgres_restart_mid_dbt(warehouse, kind)

    next_run(warehouse)
    if fault in MARTS_BUILT:
        run_dbt(list(kind.dbt_build), settings=settings)

    expected_state, expected_marts = clean(kind)
    with psycopg.connect(settings.database_url) as conn:
        ledger = conn.execute("select key, status, archived_key from ops.file_ledger order by key").fetchall()
        # Every file once, loaded, with as many raw rows as the file has, each (_file_id, _row_number) once.
        assert [(k, status) for k, status, _ in ledger] == [(k, "loaded") for k in sorted(kind.files)]
        for file_key, rows in kind.rows.items():
            counted = [conn.execute(sql.SQL(
                "select count(*), count(distinct (_file_id, _row_number)) from {} where _file_id = "
                "(select file_id from ops.file_ledger where key = %s)").format(sql.Identifier(*table.split("."))),
                (file_key,)).fetchone() for table in kind.tables_of[file_key]]
            assert tuple(map(sum, zip(*counted, strict=True))) == (rows, rows), file_key
        assert loaded_state(conn, kind) == expected_state
        if fault in MARTS_BUILT:
            built = marts(conn)
            assert built and built == expected_marts
    # The archive holds each file's bytes where the ledger says; nothing is left waiting or quarantined.
    for file_key, _, archived_key in ledger:
        assert store.read(archived_key) == kind.files[file_key], file_key
    assert discover_new_files(settings=settings) == []
    assert [o.key for o in store.list("") if "/quarantine/" in o.key] == []

