"""The local stack's promises: the bucket survives a restart, and CI runs what a developer runs."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest

from elt.devstack.servers import LocalS3, free_port

REPO = Path(__file__).resolve().parents[2]


def test_local_s3_objects_survive_a_restart_and_deletions_stick(tmp_path):
    first = LocalS3(free_port(), tmp_path / "s3.log", persist_dir=tmp_path / "s3", bucket="landing")
    first.start()
    first.client().put_object(Bucket="landing", Key="medical_records/input/a.csv", Body=b"a,b\n1,2\n")
    first.client().put_object(Bucket="landing", Key="medical_records/input/gone.csv", Body=b"x")
    first.sync()
    first.client().delete_object(Bucket="landing", Key="medical_records/input/gone.csv")
    first.stop()

    second = LocalS3(free_port(), tmp_path / "s3.log", persist_dir=tmp_path / "s3", bucket="landing")
    second.start()
    try:
        keys = [o["Key"] for o in second.client().list_objects_v2(Bucket="landing").get("Contents", [])]
        body = second.client().get_object(Bucket="landing", Key="medical_records/input/a.csv")["Body"].read()
    finally:
        second.stop()
    assert keys == ["medical_records/input/a.csv"]
    assert body == b"a,b\n1,2\n"


def test_ci_runs_exactly_the_readme_test_command():
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[-1] == "./start.sh test"
    assert "./start.sh test" in (REPO / "README.md").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user (initdb refuses root)")
def test_postgres_starts_from_a_checkout_inside_a_folder_only_root_may_enter(tmp_path, monkeypatch):
    """A checkout in root's home (0700): the server's system user can reach neither the binaries in .venv nor
    the cluster's folder. Both move to a shared folder; the private folder stays private."""
    from elt.devstack import servers

    private = Path(tempfile.mkdtemp(prefix="hw-private-"))  # like /root: drwx------ root
    shared = Path(tempfile.mkdtemp(prefix="hw-shared-"))
    shared.chmod(0o755)
    monkeypatch.setattr(servers, "SHARED_ROOT", shared / "health-warehouse")
    try:
        private.chmod(0o700)
        # The wheel's layout: pgserver/pginstall/bin, whose rpath finds the libraries in ../../../pgserver.libs
        site_packages = private / "checkout" / ".venv" / "site-packages"
        installed = servers.pg_bin_dir().parent.parent
        for folder in (installed, installed.with_name("pgserver.libs")):
            shutil.copytree(folder, site_packages / folder.name, symlinks=True)
        binaries = site_packages / "pgserver" / "pginstall"
        data_dir = private / "checkout" / ".data" / "postgres"
        server = servers.EmbeddedPostgres(data_dir, servers.free_port(), tmp_path / "pg.log", bin_dir=binaries / "bin")
        server.start()
        try:
            with psycopg.connect(server.url(), autocommit=True) as conn:
                assert conn.execute("select 1").fetchone() == (1,)
        finally:
            server.stop()
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # nothing of the user's was opened to others
        assert data_dir.is_symlink() and (data_dir.resolve() / "PG_VERSION").exists()
        assert data_dir.resolve().is_relative_to(shared)
        # The next start finds the same cluster through the link.
        again = servers.EmbeddedPostgres(data_dir, servers.free_port(), tmp_path / "pg.log", bin_dir=binaries / "bin")
        again.start()
        again.stop()
        assert again.data_dir == data_dir.resolve()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_the_status_line_says_when_ready_gave_no_answer():
    """While dbt swaps a mart in, /ready can miss the status loop's 3 s timeout: the line said "0 of ? built",
    which reads as if nothing were built. It now says there was no answer."""
    from elt.devstack.__main__ import marts_status

    for no_answer in (None, {}):
        line = marts_status(no_answer)
        assert "no answer from the API's /ready" in line and "0 of" not in line and "?" not in line
    built = {"analytics.triage_trends": {"built": True, "refreshed": "nightly"},
             "analytics.facility_stats": {"built": False, "refreshed": "nightly"}}
    assert marts_status(built) == "nightly marts the API serves: 1 of 2 built"


def test_a_fresh_stack_runs_the_demo_ingest_and_builds_every_other_nightly_familys_marts():
    """/ready wants every nightly mart built: on a fresh stack the families without files yet (claims) get their
    marts built empty; the beds, rebuilt when a workbook arrives, wait for it."""
    from elt.config import Settings
    from elt.devstack.__main__ import DEMO_FAMILY, first_runs
    from elt.families import declared_families

    first = first_runs(declared_families(Settings()), DEMO_FAMILY)
    assert first.triggered == ("medilink_ingest", "claims_marts")
    assert set(first.parsed) == {"medilink_ingest", "medilink_marts", "claims_marts"}


def test_the_stack_makes_the_buckets_its_s3_deliveries_write_to_and_runs_their_first_delivery_once_built(
        pg_server_url):
    """The export bucket is derived from the declarations (airflow/connectors), not named twice; a delivery's DAG is
    triggered once its mart has a build, and not while it has none."""
    from elt.config import Settings
    from elt.connectors.spec import export_buckets, load_connectors
    from elt.devstack.__main__ import _built, declared_connectors
    from tests.conftest import create_database, drop_database

    declared = load_connectors(Settings().connectors_dir)
    buckets = {c.options.bucket for c in declared.values() if c.deliver is not None and c.kind.name == "s3"}
    assert export_buckets(declared_connectors()) == sorted(buckets) and "health-exports" in buckets
    url = create_database(pg_server_url, "hw_devstack_built")
    with psycopg.connect(url, autocommit=True) as conn:
        assert not _built(conn, "analytics.bed_occupancy_trends")
        conn.execute("create schema analytics")
        conn.execute("create table analytics.bed_occupancy_trends (org_code text, built_at timestamptz)")
        assert not _built(conn, "analytics.bed_occupancy_trends")  # made, never built: no rows
        conn.execute("insert into analytics.bed_occupancy_trends values ('RXX', now())")
        assert _built(conn, "analytics.bed_occupancy_trends")
    drop_database(pg_server_url, "hw_devstack_built")
