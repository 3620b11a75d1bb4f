"""Rows for the destination tests, made by hand: each value's expected text is written out here, not derived from
the code under test. `SECRET` is in every row (a made-up patient's name): no error or log line may contain it."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from elt.connectors.base import RunContext

SECRET = "Zebedee-Quartermain"

SCHEMA = pa.schema([
    ("facility_id", pa.int64()),
    ("patient_name", pa.string()),
    ("admitted_on", pa.date32()),
    ("occupancy", pa.decimal128(6, 2)),
    ("measured_at", pa.timestamp("us", tz="UTC")),
    ("note", pa.string()),
])


def rows(count: int, *, name: str = SECRET) -> list[dict]:
    """Python values; note is null on every third row and otherwise holds a comma, quotes and a line break."""
    return [{"facility_id": i, "patient_name": f"{name} {i}", "admitted_on": date(2026, 1, 1 + i % 28),
             "occupancy": Decimal(f"{i}.25"), "measured_at": datetime(2026, 1, 1, 2, i % 60, tzinfo=UTC),
             "note": None if i % 3 == 0 else f'bed "{i}", ward\nB'} for i in range(count)]


def as_json(count: int, *, name: str = SECRET) -> list[dict]:
    """The same rows as the REST destination documents them in JSON (dates ISO, decimals strings)."""
    return [{"facility_id": i, "patient_name": f"{name} {i}", "admitted_on": f"2026-01-{1 + i % 28:02d}",
             "occupancy": f"{i}.25", "measured_at": f"2026-01-01T02:{i % 60:02d}:00+00:00",
             "note": None if i % 3 == 0 else f'bed "{i}", ward\nB'} for i in range(count)]


def batches(values: list[dict], sizes: list[int]) -> list[pa.RecordBatch]:
    """The rows cut into record batches of the given sizes (which must add up to the row count)."""
    assert sum(sizes) == len(values)
    table = pa.Table.from_pylist(values, schema=SCHEMA)
    out, start = [], 0
    for size in sizes:
        out.append(table.slice(start, size).to_batches(max_chunksize=max(size, 1))[0] if size else
                   pa.RecordBatch.from_pylist([], schema=SCHEMA))
        start += size
    return out


def context(run_key: str = "beds_weekly-20260105T020000", **changes) -> RunContext:
    values = {"connector": "beds_weekly", "run_key": run_key, "as_of": datetime(2026, 1, 5, 2, tzinfo=UTC),
              "started_at": datetime(2026, 1, 5, 3, tzinfo=UTC), "columns": tuple(SCHEMA.names),
              "log": logging.getLogger("elt.connectors")}
    return RunContext(**{**values, **changes})


def assert_no_row_values(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert "ward" not in text
