"""Each destination kind end to end: a mart delivered by the engine, read back from where it went and compared row
for row with the rows the test put in the mart; a re-run sends nothing; a run that dies mid-delivery leaves nothing
visible, and its re-run delivers once. Real Postgres, a real S3 endpoint, a second real database."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from datetime import UTC
from decimal import Decimal
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from elt.connectors.base import ConnectorError, DestinationRefused
from elt.connectors.engine import RunOptions, run_connector
from tests.conftest import create_database, drop_database
from tests.connectors.conftest import AWKWARD, COLUMNS, MART, expected_arrow_rows


def _runs(db, name: str) -> list[dict]:
    cur = db.execute("select * from ops.connector_runs where connector = %s order by run_id", (name,))
    names = [c.name for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def _objects(client, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _with_built_at(rows, built_at) -> list[dict]:
    return [{**row, "built_at": built_at} for row in expected_arrow_rows(rows)]


def test_s3_parquet_delivery_matches_the_mart_and_a_rerun_sends_nothing(connectors, make_mart, export_bucket, db):
    settings, declare = connectors
    client, bucket = export_bucket
    rows, built_at = make_mart(3_000)
    declare("census_parquet", f"""
        description: Ward census for the commissioner.
        deliver:
          mart: analytics.ward_census
          to: {{kind: s3, bucket: {bucket}, prefix: commissioner/, format: parquet,
                credentials: {{env: {{endpoint_url: S3_ENDPOINT_URL}}}}}}
    """)
    first = run_connector("census_parquet", settings=settings)
    assert first.status == "succeeded" and first.rows == 3_000
    (key,) = _objects(client, bucket)
    assert key.startswith("commissioner/analytics.ward_census/as_of=") and key.endswith(f"/{first.run_key}.parquet")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert (first.bytes, first.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    parquet = pq.ParquetFile(io.BytesIO(body))
    assert parquet.metadata.num_row_groups == 1 and parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == [*COLUMNS, "built_at"]
    assert table.to_pylist() == _with_built_at(rows, built_at)

    again = run_connector("census_parquet", settings=settings)
    assert again.status == "skipped" and again.run_key == first.run_key
    assert _objects(client, bucket) == [key]
    assert client.get_object(Bucket=bucket, Key=key)["ETag"] == client.head_object(Bucket=bucket, Key=key)["ETag"]
    records = _runs(db, "census_parquet")
    assert [r["status"] for r in records] == ["succeeded", "skipped"]
    assert records[0]["as_of"] == built_at and records[0]["location"] == f"s3://{bucket}/{key}"
    assert records[0]["trigger"] == "cli" and records[0]["error"] is None


def test_deliveries_do_not_depend_on_the_sessions_time_zone(connectors, make_mart, tmp_path):
    settings, declare = connectors
    rows, built_at = make_mart(200)
    options = quote("-c TimeZone=Asia/Kolkata", safe="")  # +05:30: what a server's default might be
    joiner = "&" if "?" in settings.database_url else "?"
    settings = settings.model_copy(update={"database_url": f"{settings.database_url}{joiner}options={options}"})
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for fmt in ("parquet", "csv"):
        declare(f"census_{fmt}", f"""
            description: Read by a session that prints times in India.
            deliver: {{mart: analytics.ward_census, to: {{kind: folder, path: {outbox}, format: {fmt}}}}}
        """)
    parquet = run_connector("census_parquet", settings=settings)
    assert pq.read_table(outbox / MART / f"{parquet.run_key}.parquet").to_pylist() == _with_built_at(rows, built_at)
    text = run_connector("census_csv", settings=settings)
    read = list(csv.reader(io.StringIO((outbox / MART / f"{text.run_key}.csv").read_text(), newline="")))
    assert [line[2] for line in read[1:]] == [r[2].isoformat() for r in rows]
    assert [line[6] for line in read[1:]] == [r[6].strftime("%Y-%m-%d %H:%M:%S+00") for r in rows]


def test_parquet_row_groups_gather_batches_up_to_their_size(monkeypatch):
    from elt.connectors import formats

    monkeypatch.setattr(formats, "ROW_GROUP_ROWS", 1_000)
    batches = [pa.RecordBatch.from_pydict({"n": list(range(start, start + 700))}) for start in range(0, 3_500, 700)]
    sink = io.BytesIO()
    assert formats.write_batches(batches, "parquet", formats.CountingSink(sink.write)) == 3_500
    parquet = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)] == [1_400, 1_400, 700]
    assert parquet.read().column("n").to_pylist() == list(range(3_500))


def test_s3_csv_delivery_reads_back_row_for_row(connectors, make_mart, export_bucket):
    settings, declare = connectors
    client, bucket = export_bucket
    rows, _ = make_mart(500)
    declare("census_csv", f"""
        description: Ward census as CSV.
        deliver: {{mart: analytics.ward_census, to: {{kind: s3, bucket: {bucket}, format: csv,
                   credentials: {{env: {{endpoint_url: S3_ENDPOINT_URL}}}}}}}}
    """)
    outcome = run_connector("census_csv", settings=settings)
    (key,) = _objects(client, bucket)
    text = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    read = list(csv.reader(io.StringIO(text)))
    assert read[0] == [*COLUMNS, "built_at"] and len(read) == 501 == outcome.rows + 1
    # names as sent, commas, quotes and newlines kept; csv.reader reads a null (empty) and "" both as ""
    assert [line[1] for line in read[1:]] == [r[1] or "" for r in rows]
    assert [int(line[5]) for line in read[1:]] == [r[5] for r in rows]
    assert [line[6] for line in read[1:]] == [r[6].strftime("%Y-%m-%d %H:%M:%S+00") for r in rows]  # UTC


def test_a_csv_delivery_is_postgres_own_csv_with_awkward_values_kept_apart(connectors, make_mart, tmp_path):
    """The bytes path (stream.CsvCopy): no Arrow between COPY and the file. Read back with a parser that tells a
    quoted empty field from an unquoted one: an empty string stays "" and a null stays empty."""
    settings, declare = connectors
    rows, built_at = make_mart(700)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("census_bytes", f"""
        description: Ward census as CSV to a share.
        deliver: {{mart: analytics.ward_census, to: {{kind: folder, path: {outbox}, format: csv}}}}
    """)
    dry = run_connector("census_bytes", RunOptions(dry_run=True), settings=settings)
    outcome = run_connector("census_bytes", settings=settings)
    target = outbox / MART / f"{outcome.run_key}.csv"
    body = target.read_bytes()
    assert (outcome.rows, outcome.bytes, outcome.sha256) == (700, len(body), hashlib.sha256(body).hexdigest())
    assert (dry.rows, dry.bytes, dry.sha256) == (outcome.rows, outcome.bytes, outcome.sha256)
    assert body.startswith(b"ward_id,ward_name,census_date,occupancy_rate,is_full,big_count,counted_at,built_at\n")

    read = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert len(read) == 701 and all(len(line) == 8 for line in read)
    assert [line[1] for line in read[1:]] == [r[1] or "" for r in rows]  # commas, quotes, newlines, non-ASCII
    assert [line[3] for line in read[1:]] == ["" if r[3] is None else str(r[3]) for r in rows]  # exact digits
    assert [line[4] for line in read[1:]] == ["true" if r[4] else "false" for r in rows]
    assert [line[2] for line in read[1:]] == [r[2].isoformat() for r in rows]
    utc = built_at.astimezone(UTC)  # Postgres writes a fraction of a second without trailing zeros
    fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
    assert {line[7] for line in read[1:]} == {f"{utc:%Y-%m-%d %H:%M:%S}{fraction}+00"}

    names = pacsv.read_csv(io.BytesIO(body), parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(column_types={"ward_name": pa.string()},
                                                                strings_can_be_null=True,
                                                                quoted_strings_can_be_null=False))
    assert names.column("ward_name").to_pylist() == [r[1] for r in rows]  # None and "" kept apart
    assert AWKWARD[-1].encode("utf-8") in body  # UTF-8


def test_a_run_killed_mid_delivery_leaves_no_object_and_the_rerun_delivers_once(
        connectors, db, export_bucket, monkeypatch):
    settings, declare = connectors
    client, bucket = export_bucket
    db.execute("create schema if not exists analytics")
    # ~13 MB of CSV: parts of 5 MiB go up before the failure, so the multipart upload is really under way
    db.execute("create table analytics.big_census as select i as ward_id, md5(i::text) as a, md5((i + 1)::text) as b, "
               "md5((i + 2)::text) as c, now() as built_at from generate_series(1, 120000) as i")
    declare("big_csv", f"""
        description: A large delivery.
        deliver: {{mart: analytics.big_census, to: {{kind: s3, bucket: {bucket}, format: csv,
                   credentials: {{env: {{endpoint_url: S3_ENDPOINT_URL}}}}}}}}
    """)
    import elt.connectors.destinations.s3 as s3_kind
    import elt.connectors.stream as stream

    monkeypatch.setattr(s3_kind, "PART_BYTES", 5 * 1024 * 1024)
    real = stream.CsvCopy._copy
    sent = []

    def dying(self):
        chunks = real(self)
        try:
            for number, chunk in enumerate(chunks):  # 1 MiB each: a 5 MiB part is up before the 9th
                if number == 8:
                    raise RuntimeError("the worker was killed")
                sent.append(len(chunk))
                yield chunk
        finally:
            chunks.close()

    monkeypatch.setattr(stream.CsvCopy, "_copy", dying)
    with pytest.raises(RuntimeError):
        run_connector("big_csv", settings=settings)
    assert len(sent) == 8 and _objects(client, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    (failed,) = _runs(db, "big_csv")
    assert failed["status"] == "failed" and "RuntimeError" in failed["error"]

    monkeypatch.setattr(stream.CsvCopy, "_copy", real)
    done = run_connector("big_csv", settings=settings)
    (key,) = _objects(client, bucket)
    lines = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert done.status == "succeeded" and len(lines) == 120_001
    assert sorted(int(line.split(",")[0]) for line in lines[1:]) == list(range(1, 120_001))
    assert run_connector("big_csv", settings=settings).status == "skipped"


def test_a_delivery_made_by_a_run_that_died_before_recording_is_found_not_sent_again(
        connectors, make_mart, export_bucket, db):
    settings, declare = connectors
    client, bucket = export_bucket
    make_mart(100)
    declare("census_found", f"""
        description: Found in the bucket.
        deliver: {{mart: analytics.ward_census, to: {{kind: s3, bucket: {bucket}, format: parquet,
                   credentials: {{env: {{endpoint_url: S3_ENDPOINT_URL}}}}}}}}
    """)
    first = run_connector("census_found", settings=settings)
    (key,) = _objects(client, bucket)
    modified = client.head_object(Bucket=bucket, Key=key)["LastModified"]
    db.execute("delete from ops.connector_runs where connector = 'census_found'")  # as if it never recorded
    found = run_connector("census_found", settings=settings)
    assert found.status == "succeeded" and found.detail["sent"] is False
    assert (found.rows, found.sha256) == (first.rows, first.sha256)
    assert client.head_object(Bucket=bucket, Key=key)["LastModified"] == modified


def test_full_reload_replaces_the_same_object_and_dry_run_writes_nothing(connectors, make_mart, export_bucket, db):
    settings, declare = connectors
    client, bucket = export_bucket
    make_mart(50)
    declare("census_reload", f"""
        description: Reloaded.
        deliver: {{mart: analytics.ward_census, to: {{kind: s3, bucket: {bucket}, format: csv,
                   credentials: {{env: {{endpoint_url: S3_ENDPOINT_URL}}}}}}}}
    """)
    dry = run_connector("census_reload", RunOptions(dry_run=True), settings=settings)
    assert dry.status == "succeeded" and dry.rows == 50 and _objects(client, bucket) == []
    first = run_connector("census_reload", settings=settings)
    reload = run_connector("census_reload", RunOptions(full_reload=True), settings=settings)
    assert reload.status == "succeeded" and reload.location == first.location and reload.sha256 == first.sha256
    assert len(_objects(client, bucket)) == 1
    assert [r["dry_run"] for r in _runs(db, "census_reload")] == [True, False, False]


def test_folder_delivery_is_renamed_into_place(connectors, make_mart, tmp_path, db):
    settings, declare = connectors
    rows, built_at = make_mart(400)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("census_folder", f"""
        description: To a mounted share.
        deliver: {{mart: analytics.ward_census, to: {{kind: folder, path: {outbox}, format: json}}}}
    """)
    outcome = run_connector("census_folder", settings=settings)
    files = list(outbox.rglob("*"))
    target = outbox / MART / f"{outcome.run_key}.jsonl"
    assert [f for f in files if f.is_file()] == [target]  # no temporary file left beside it
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["ward_id"] for line in lines] == [r[0] for r in rows]
    assert [line["ward_name"] for line in lines] == [r[1] for r in rows]
    assert [line["census_date"] for line in lines] == [r[2].isoformat() for r in rows]
    assert outcome.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert run_connector("census_folder", settings=settings).status == "skipped"


def test_parquet_keeps_each_column_type_the_stream_documents(connectors, db, tmp_path):
    """The Arrow path (stream.batches, the ADBC driver): declared numerics as decimals with their scale, small
    integers and reals at their width, times and plain timestamps as themselves, and what has no Arrow type of its
    own (json, arrays, uuid, intervals, varchar) as the text Postgres prints; nulls stay null in every column."""
    from datetime import datetime, time

    settings, declare = connectors
    db.execute("create schema if not exists analytics")
    db.execute("drop table if exists analytics.odd_types")
    db.execute("create table analytics.odd_types (amount numeric(8, 3), small smallint, ratio real, doc jsonb, "
               "tags text[], id uuid, stay interval, seen timestamp, opens time, code varchar(5))")
    db.execute("insert into analytics.odd_types values (12.345, 7, 1.5, '{\"b\": 1, \"a\": [1, 2]}', "
               "'{x,\"y z\"}', '8f14e45f-ceea-467f-a0e6-7c2ab5f4c1d1', '1 day 02:00', '2026-01-05 02:00:00', "
               "'08:30:15', 'AB12'), (null, null, null, null, null, null, null, null, null, null)")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("odd_types", f"""
        description: Every kind of column a query may give.
        deliver: {{query: "select * from analytics.odd_types", to: {{kind: folder, path: {outbox}, format: parquet}}}}
    """)  # noqa: S608 - a YAML declaration; the only value put in is the test's folder
    outcome = run_connector("odd_types", settings=settings)
    (path,) = outbox.rglob("*.parquet")
    table = pq.read_table(path)
    assert [str(field.type) for field in table.schema] == [
        "decimal128(8, 3)", "int16", "float", "string", "string", "string", "string", "timestamp[us]",
        "time64[us]", "string"]
    assert table.to_pylist() == [
        {"amount": Decimal("12.345"), "small": 7, "ratio": 1.5, "doc": '{"a": [1, 2], "b": 1}', "tags": '{x,"y z"}',
         "id": "8f14e45f-ceea-467f-a0e6-7c2ab5f4c1d1", "stay": "1 day 02:00:00", "seen": datetime(2026, 1, 5, 2),
         "opens": time(8, 30, 15), "code": "AB12"},
        dict.fromkeys(table.column_names)]
    assert outcome.rows == 2


def test_an_arrow_delivery_reads_read_only_in_a_stable_order(connectors, tmp_path):
    """The session that reads an Arrow delivery's rows: read-only, no synchronised scans and no parallel workers,
    so an unchanged mart comes in the same order each time (a REST delivery resumes after the batches taken); and
    values that leave as text print as the CSV path prints them, whatever the server's own styles say."""
    settings, declare = connectors
    options = quote("-c IntervalStyle=iso_8601 -c DateStyle=SQL,\\ DMY", safe="")  # a server's other defaults
    joiner = "&" if "?" in settings.database_url else "?"
    settings = settings.model_copy(update={"database_url": f"{settings.database_url}{joiner}options={options}"})
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("session", f"""
        description: What the reading session is set to.
        deliver:
          query: "select current_setting('transaction_read_only') as read_only,
                  current_setting('synchronize_seqscans') as synchronized,
                  current_setting('max_parallel_workers_per_gather') as workers,
                  interval '1 day 2 hours' as stay, array[date '2026-01-05'] as days"
          to: {{kind: folder, path: {outbox}, format: parquet}}
    """)  # noqa: S608 - a YAML declaration; the only value put in is the test's folder
    run_connector("session", settings=settings)
    (path,) = outbox.rglob("*.parquet")
    assert pq.read_table(path).to_pylist() == [{"read_only": "on", "synchronized": "off", "workers": "0",
                                                "stay": "1 day 02:00:00", "days": "{2026-01-05}"}]


@pytest.fixture
def destination_db(pg_server_url, monkeypatch):
    name = f"hw_dest_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server_url, name)
    monkeypatch.setenv("AIRFLOW_CONN_PARTNER_DB", url)
    yield url
    drop_database(pg_server_url, name)


def test_postgres_replace_then_merge_into_another_database(connectors, make_mart, destination_db, db):
    settings, declare = connectors
    rows, built_at = make_mart(1_000)
    declare("census_replica", """
        description: Replica for the partner.
        deliver: {mart: analytics.ward_census, to: {kind: postgres, table: reporting.ward_census, credentials: {conn_id: partner_db}}}
    """)
    outcome = run_connector("census_replica", settings=settings)
    with psycopg.connect(destination_db) as partner:
        got = partner.execute("select ward_id, ward_name, census_date, occupancy_rate, is_full, big_count, counted_at "
                              "from reporting.ward_census order by ward_id").fetchall()
        types = dict(partner.execute("select column_name, data_type from information_schema.columns "
                                     "where table_name = 'ward_census'").fetchall())
    assert outcome.rows == 1_000
    expected = expected_arrow_rows(rows)
    assert [tuple(r) for r in got] == [tuple(e.values()) for e in expected]
    assert types["counted_at"] == "timestamp with time zone" and types["ward_id"] == "integer"
    assert run_connector("census_replica", settings=settings).status == "skipped"

    # a new build with fewer rows: replace leaves exactly the new build
    db.execute("delete from analytics.ward_census where ward_id >= 600")
    db.execute("update analytics.ward_census set built_at = now() + interval '1 minute'")
    again = run_connector("census_replica", settings=settings)
    assert again.status == "succeeded" and again.run_key != outcome.run_key
    with psycopg.connect(destination_db) as partner:
        assert partner.execute("select count(*), max(ward_id) from reporting.ward_census").fetchone() == (600, 599)
        delivered = partner.execute("select count(*) from reporting.connector_deliveries").fetchone()[0]
    assert delivered == 2


def test_postgres_merge_updates_on_the_key(connectors, make_mart, destination_db, db):
    settings, declare = connectors
    make_mart(300)
    declare("census_merge", """
        description: Merged on ward.
        deliver:
          query: select ward_id, ward_name, big_count, built_at from analytics.ward_census where ward_id < 200
          to: {kind: postgres, table: reporting.wards, mode: merge, key: [ward_id],
                credentials: {conn_id: partner_db}}
    """)
    run_connector("census_merge", settings=settings)
    db.execute("update analytics.ward_census set big_count = -ward_id, built_at = now() + interval '1 minute' where ward_id >= 100")
    run_connector("census_merge", settings=settings)
    with psycopg.connect(destination_db) as partner:
        got = dict(partner.execute("select ward_id, big_count from reporting.wards").fetchall())
    assert len(got) == 200
    assert all(got[i] == (i * 1_000_003 if i < 100 else -i) for i in range(200))


def test_postgres_destination_that_refuses_fails_the_run_without_row_values(connectors, make_mart, destination_db, db):
    settings, declare = connectors
    make_mart(20)
    with psycopg.connect(destination_db, autocommit=True) as partner:
        partner.execute("create schema reporting")
        partner.execute("create table reporting.narrow (ward_id integer primary key)")
    declare("census_bad", """
        description: Into a table of another shape.
        deliver: {mart: analytics.ward_census, to: {kind: postgres, table: reporting.narrow, credentials: {conn_id: partner_db}}}
    """)
    with pytest.raises(DestinationRefused) as refused:
        run_connector("census_bad", settings=settings)
    assert "reporting.narrow" in str(refused.value)
    (record,) = _runs(db, "census_bad")
    assert record["status"] == "failed" and "DestinationRefused" in record["error"]
    assert "with, comma" not in record["error"] and "plain" not in record["error"]


def test_personal_data_runs_are_audited(connectors, make_mart, tmp_path, db):
    settings, declare = connectors
    make_mart(10)
    db.execute("create schema if not exists clinical")
    db.execute("create table clinical.ward_patients as select ward_id, ward_name, built_at from analytics.ward_census")
    declare("patients_out", f"""
        description: Patient-level rows to a secure share.
        personal_data: true
        deliver: {{mart: clinical.ward_patients, to: {{kind: folder, path: {tmp_path}, format: csv}}}}
    """)
    outcome = run_connector("patients_out", settings=settings)
    (audit,) = db.execute("select key_id, role, method, endpoint, params from ops.api_audit").fetchall()
    assert audit[:4] == (None, "connector", "DELIVER", "connector:patients_out")
    assert audit[4]["run_key"] == outcome.run_key


def test_a_mart_that_is_not_built_fails_the_run_with_a_record(connectors, tmp_path, db):
    settings, declare = connectors
    declare("not_yet", f"description: x\ndeliver: {{mart: analytics.not_built, to: {{kind: folder, path: {tmp_path}}}}}\n")
    with pytest.raises(ConnectorError, match="analytics.not_built cannot be read"):
        run_connector("not_yet", settings=settings)
    (record,) = _runs(db, "not_yet")
    assert record["status"] == "failed" and record["error"].startswith("read the warehouse: ConnectorError")
    assert list(tmp_path.iterdir()) == [tmp_path / "connectors"]
