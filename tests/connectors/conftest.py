"""A hand-made mart in the test's warehouse, a folder of connector declarations, and an export bucket: what every
connector test delivers from and to (real Postgres, real S3 endpoint; tests/conftest.py). The remote
destinations' SFTP and HTTP servers live in servers.py."""

from __future__ import annotations

import textwrap
from decimal import Decimal

import boto3
import pytest

from tests.connectors.servers import http_receiver, sftp_server, silent_port  # noqa: F401 - the remote destinations' servers

# Values that break naive CSV and typing: commas, quotes, newlines, an empty string beside a null, non-ASCII.
AWKWARD = ["plain", "with, comma", 'with "quotes"', "two\nlines", "", None, "Ünïcödé ward"]
MART = "analytics.ward_census"


def mart_rows(count: int) -> list[tuple]:
    """The mart's rows, made here so that the tests know them without reading them back from what is tested."""
    from datetime import UTC, date, datetime, timedelta

    start = datetime(2026, 1, 1, 8, 30, tzinfo=UTC)
    return [(i, AWKWARD[i % len(AWKWARD)], date(2026, 1, 1) + timedelta(days=i % 90),
             Decimal(i % 400) / Decimal(7) if i % 11 else None, i % 3 == 0, i * 1_000_003,
             start + timedelta(minutes=i)) for i in range(count)]


COLUMNS = ("ward_id", "ward_name", "census_date", "occupancy_rate", "is_full", "big_count", "counted_at")


@pytest.fixture
def make_mart(db):
    """make_mart(rows): analytics.ward_census filled with mart_rows(rows), built now; returns (rows, built_at)."""

    def make(count: int = 2_000) -> tuple[list[tuple], object]:
        rows = mart_rows(count)
        db.execute("create schema if not exists analytics")
        db.execute("drop table if exists analytics.ward_census")
        db.execute("create table analytics.ward_census (ward_id integer not null, ward_name text, census_date date, "
                   "occupancy_rate numeric, is_full boolean, big_count bigint, counted_at timestamptz, "
                   "built_at timestamptz not null default now())")
        with db.cursor().copy(f"copy analytics.ward_census ({', '.join(COLUMNS)}) from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        built_at = db.execute("select max(built_at) from analytics.ward_census").fetchone()[0]
        return rows, built_at

    return make


@pytest.fixture
def connectors(settings, tmp_path):
    """(settings with CONNECTORS_DIR = a fresh folder, declare(name, yaml_text))."""
    folder = tmp_path / "connectors"
    folder.mkdir()
    configured = settings.model_copy(update={"connectors_dir": folder})

    def declare(name: str, text: str) -> None:
        (folder / f"{name}.yml").write_text(textwrap.dedent(text))

    return configured, declare


@pytest.fixture
def export_bucket(settings, monkeypatch):
    """An empty bucket on the suite's S3 endpoint, reachable through S3_ENDPOINT_URL (what the declarations name)."""
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
    bucket = settings.s3_bucket.replace("landing-", "export-")
    client.create_bucket(Bucket=bucket)
    return client, bucket


def expected_arrow_rows(rows: list[tuple]) -> list[dict]:
    """The mart's rows as pyarrow gives them back: an unconstrained numeric as a float (stream.py)."""
    return [dict(zip(COLUMNS, (r[0], r[1], r[2], float(r[3]) if r[3] is not None else None, r[4], r[5], r[6]),
                     strict=True)) for r in rows]
