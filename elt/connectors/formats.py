"""Writing a delivery's record batches as CSV, Parquet or JSON lines to any byte sink, counting rows and bytes and
hashing the bytes as they pass: what the file-like destination kinds (s3, folder) share.

Memory stays flat in the number of rows: each batch is written and dropped; the sink decides what to keep (the S3
multipart sink one part, the folder sink nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # loaded by the Arrow writers only: a CSV delivery of COPY's bytes does without it
    import pyarrow as pa

Format = Literal["csv", "parquet", "json"]
EXTENSIONS: dict[str, str] = {"csv": "csv", "parquet": "parquet", "json": "jsonl"}
ROW_GROUP_ROWS = 128 * 1024  # a Parquet row group: rows, or Arrow bytes if that comes first (_Parquet)
ROW_GROUP_BYTES = 64 * 1024 * 1024
CONTENT_TYPES: dict[str, str] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
                                 "json": "application/x-ndjson"}


class CountingSink:
    """A write-only file object over `write` (None: bytes are counted and hashed, then dropped, as a dry run does)."""

    def __init__(self, write: Callable[[bytes], object] | None = None):
        self._write = write
        self.bytes = 0
        self._sha = hashlib.sha256()
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)  # no copy: hashed and handed on before this returns
        self._sha.update(view)
        self.bytes += view.nbytes
        if self._write is not None:
            self._write(view)
        return view.nbytes

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


def write_batches(batches: Iterable[pa.RecordBatch], fmt: Format, sink: CountingSink) -> int:
    """Write every batch to `sink` in `fmt` (CSV with a header; Parquet, zstd, in row groups of ROW_GROUP_ROWS; JSON: one object per line) and
    return the rows written. The first batch gives the schema; an iterable without one writes nothing."""
    writer = None
    rows = 0
    try:
        for batch in batches:
            if writer is None:
                writer = _writer(fmt, sink, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def write_csv_chunks(chunks, sink: CountingSink) -> int:
    """Write a CSV file's chunks (base.CsvChunks: COPY's own CSV) to `sink` as they come; return its data rows."""
    for chunk in chunks:
        sink.write(chunk)
    return chunks.rows


def _writer(fmt: Format, sink: CountingSink, schema: pa.Schema):
    if fmt == "parquet":
        return _Parquet(sink, schema)
    if fmt == "csv":
        return _Csv(sink, schema)
    return _JsonLines(sink)


def csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its time-zoned timestamps as text in UTC, `2024-01-01 10:00:00.000000Z`, which is what Arrow's CSV
    writer prints for them too, but about thirty times faster (it looks the zone up for every value)."""
    import pyarrow as pa

    zoned = [i for i, f in enumerate(batch.schema) if pa.types.is_timestamp(f.type) and f.type.tz]
    if not zoned:
        return batch
    import pyarrow.compute as pc

    columns = list(batch.columns)
    for i in zoned:  # a zoned timestamp holds UTC; without its zone it is that UTC time
        naive = columns[i].cast(pa.timestamp(batch.schema.field(i).type.unit))
        columns[i] = pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("Z"), "")
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class _Csv:
    """CSV with a header (Arrow's writer: strings quoted, nulls empty), zoned timestamps as UTC text (csv_ready)."""

    def __init__(self, sink: CountingSink, schema: pa.Schema):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        empty = csv_ready(pa.RecordBatch.from_pylist([], schema=schema))
        self.writer = pacsv.CSVWriter(pa.PythonFile(sink, mode="w"), empty.schema)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(csv_ready(batch))

    def close(self) -> None:
        self.writer.close()


class _Parquet:
    """Parquet, zstd level 1, in row groups of ROW_GROUP_ROWS (or ROW_GROUP_BYTES of Arrow data, if less): the
    batches are held until a group is full, because pyarrow closes a row group at every write (a group per batch
    would be a few thousand rows). Memory: one row group, whatever the number of rows. zstd level 1, not snappy:
    as fast to write and 45% fewer bytes to send (decision 0030, amended; benchmarks/README.md, issue 16)."""

    def __init__(self, sink: CountingSink, schema: pa.Schema):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd",
                                       compression_level=1)
        self.held: list[pa.RecordBatch] = []
        self.rows = self.bytes = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.held.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.held:
            import pyarrow as pa

            self.writer.write_table(pa.Table.from_batches(self.held), row_group_size=max(self.rows, 1))
        self.held, self.rows, self.bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


class _JsonLines:
    """Newline-delimited JSON: dates and times as ISO 8601, decimals as JSON numbers."""

    def __init__(self, sink: CountingSink):
        self.sink = sink

    def write_batch(self, batch: pa.RecordBatch) -> None:
        lines = [json.dumps(row, default=_jsonable, ensure_ascii=False) for row in batch.to_pylist()]
        if lines:
            self.sink.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        pass


def _jsonable(value):
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def count_rows(path, fmt: Format) -> int:
    """Rows in a file written by write_batches (a destination's `delivered` reads back what an earlier run left)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return sum(batch.num_rows for batch in pacsv.open_csv(path))
    with open(path, "rb") as stream:
        return sum(1 for line in stream if line.strip())


def file_digest(path) -> tuple[int, str]:
    """(bytes, sha256) of a file, read in 1 MiB blocks."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


class WritesOneFile:
    """What a destination that writes one file per run in `options.format` shares (folder, s3): it takes
    Postgres's own CSV bytes when the format is CSV (the engine's `deliver_bytes` path, decision 0030) and Arrow
    batches otherwise; its `_deliver(ctx, write)` puts the file where it goes."""

    options: object  # the kind's Options, with a `format`

    @property
    def csv_bytes(self) -> bool:
        return self.options.format == "csv"

    def deliver(self, ctx, batches: Iterable) -> object:
        return self._deliver(ctx, lambda sink: write_batches(batches, self.options.format, sink))

    def deliver_bytes(self, ctx, chunks) -> object:
        return self._deliver(ctx, lambda sink: write_csv_chunks(chunks, sink))

    def _deliver(self, ctx, write: Callable[[CountingSink], int]):
        raise NotImplementedError
