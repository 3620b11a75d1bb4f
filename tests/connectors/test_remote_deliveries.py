"""The SFTP and REST destinations through the engine, as a declaration runs them (`elt connectors run`, the DAG):
what each server received against the mart the test made, the run records, and a REST delivery that fails half-way
and resumes from the batch the endpoint did not take (its progress kept in the failed run's record). Real Postgres,
a real SFTP server and a real HTTP receiver on loopback (tests/connectors/servers.py)."""

from __future__ import annotations

import csv
import io

import pytest

from elt.connectors.base import DestinationUnavailable
from elt.connectors.engine import run_connector
from tests.connectors.conftest import COLUMNS
from tests.connectors.servers import SFTP_LOGIN

FAIL, PASS = ("status", 503), ("pass", 0)


def _records(db, name: str) -> list[tuple]:
    return db.execute("select status, rows, detail -> 'progress' ->> 'batches', error is not null "
                      "from ops.connector_runs where connector = %s order by run_id", (name,)).fetchall()


def test_rest_delivery_fails_at_batch_3_and_the_next_run_sends_from_batch_3(
        connectors, make_mart, http_receiver, monkeypatch, db):
    settings, declare = connectors
    monkeypatch.setenv("REGISTRY_TOKEN", "token-for-the-test")
    http_receiver.token = "token-for-the-test"
    make_mart(2_000)
    declare("census_registry", f"""
        description: Ward census to the registry, 500 rows a batch.
        deliver:
          mart: analytics.ward_census
          to: {{kind: rest, url: "{http_receiver.url}", batch_rows: 500, max_attempts: 2, backoff_seconds: 0.01,
                credentials: {{env: {{token: REGISTRY_TOKEN}}}}}}
    """)
    http_receiver.answer_next(PASS, PASS, FAIL, FAIL)
    with pytest.raises(DestinationUnavailable):
        run_connector("census_registry", settings=settings)
    first_keys = [request.key for request in http_receiver.requests]
    run_key = first_keys[0].rsplit("-", 1)[0]
    assert first_keys == [f"{run_key}-1", f"{run_key}-2", f"{run_key}-3", f"{run_key}-3"]

    resumed = run_connector("census_registry", settings=settings)
    assert resumed.status == "succeeded" and resumed.rows == 2_000 and resumed.run_key == run_key
    assert [request.key for request in http_receiver.requests][4:] == [f"{run_key}-3", f"{run_key}-4"]
    # 2,000 rows (4 batches of 500: computed from the declaration), each stored once.
    received = http_receiver.rows()
    assert sorted(row["ward_id"] for row in received) == list(range(2_000))

    again = run_connector("census_registry", settings=settings)
    assert again.status == "skipped" and len(http_receiver.requests) == 6
    assert _records(db, "census_registry") == [("failed", None, "2", True), ("succeeded", 2_000, None, False),
                                                ("skipped", None, None, False)]


def test_sftp_delivery_arrives_whole_and_a_rerun_sends_nothing(connectors, make_mart, sftp_server, monkeypatch, db):
    settings, declare = connectors
    monkeypatch.setenv("SFTP_LOGIN", SFTP_LOGIN)
    monkeypatch.setenv("SFTP_KEY", sftp_server.client_key_text)
    (sftp_server.root / "outbox").mkdir()
    rows, _ = make_mart(1_500)
    declare("census_sftp", f"""
        description: Ward census to the partner's SFTP server.
        deliver:
          mart: analytics.ward_census
          to: {{kind: sftp, host: 127.0.0.1, port: {sftp_server.port}, folder: outbox,
                host_key_sha256: "{sftp_server.fingerprint}",
                credentials: {{env: {{login: SFTP_LOGIN, private_key: SFTP_KEY}}}}}}
    """)
    first = run_connector("census_sftp", settings=settings)
    assert first.status == "succeeded" and first.rows == 1_500
    (delivered,) = [p for p in (sftp_server.root / "outbox").iterdir() if p.suffix == ".csv"]
    assert delivered.name == f"{first.run_key}.csv"
    read = list(csv.DictReader(io.StringIO(delivered.read_text())))
    assert [int(row["ward_id"]) for row in read] == [row[0] for row in rows]
    assert list(read[0])[:len(COLUMNS)] == list(COLUMNS)

    again = run_connector("census_sftp", settings=settings)
    assert again.status == "skipped"
    assert sorted(p.name for p in (sftp_server.root / "outbox").iterdir()) == [delivered.name, f"{delivered.name}.sha256"]
    assert [status for status, *_ in _records(db, "census_sftp")] == ["succeeded", "skipped"]
