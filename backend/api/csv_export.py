"""CSV downloads that either arrive whole or visibly broken, that no slow client can use to starve the others,
and that a spreadsheet opens as data, never as formulas (issue 13; docs/decisions/0009).

* **Decoupled from the client.** A producer thread reads the rows from Postgres as fast as Postgres gives
  them, in one read-only snapshot (the total, `as_of` and `sources` of the headers come from the same one),
  into a spool file on disk; the response sends the spool at whatever pace the client reads. A client at a
  few KB/s therefore holds neither a database connection nor an open transaction (which would hold back
  vacuum and a dbt rebuild's swap of the mart) for longer than the read itself takes, and memory stays flat.
* **Bounded.** A worker streams at most API_CSV_STREAMS downloads at once, fewer than its API_THREADS, so
  downloads always leave threads for other calls; one more download is a 503 with Retry-After.
* **Complete or visibly cut.** Nothing is sent before the first rows are read, so an error up to then (the
  statement timeout, a mart not built) is an ordinary JSON error. An error after that (the connection lost,
  the server shut down) makes the body iterator raise: the server (granian) then drops the connection without
  the final zero-length chunk of the chunked body, which every HTTP/1.1 client reports as an incomplete read.
  A download never ends cleanly short of its rows.
* **No formulas.** Text cells that begin with `=`, `+`, `-`, `@`, tab, CR or LF (OWASP's CSV injection
  triggers) get a leading `'`, which makes a spreadsheet show the cell as text; so does a text cell that
  begins with `'` itself, so that one rule restores every value: a text cell beginning with `'` had one
  added. Every text cell is quoted, so no separator (`,`, or `;` where a spreadsheet splits on it) inside a
  value can start a cell of its own. Numbers, dates and booleans are written as they are: `-5` in a numeric
  column stays a number, while the text `-5` (an identifier, a free-text answer) becomes `'-5`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
CHUNK_BYTES = 64 * 1024
FETCH_ROWS = 2000


class ExportFailed(Exception):
    """The rows could not all be read after the response had started: the download must end broken."""


def csv_cell(value: Any) -> str:
    """A value of a numeric, date, time or boolean column, as the CSV writes it (never quoted: it holds no
    separator and cannot start a formula)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")  # exactly as stored: 0.2500, not 0.25 or 2.5e-1
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def csv_text(value: Any) -> str:
    """A text (or text[]) value, neutralised and quoted; NULL stays an empty, unquoted cell."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join("" if v is None else str(v) for v in value)
    value = str(value)
    if value.startswith(FORMULA_TRIGGERS) or value.startswith("'"):
        value = "'" + value
    return '"' + value.replace('"', '""') + '"'


def csv_json(value: Any) -> str:
    """A JSON value (an anomaly's reasons) as its JSON text in one text cell, neutralised and quoted like text."""
    return "" if value is None else csv_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def line_writer(column_types: list[str]) -> Callable[[tuple], str]:
    """One CSV line (CRLF-terminated) per row, each cell written by its column's type."""
    writers = [csv_text if kind in ("text", "text[]", "integer[]") else csv_json if kind == "json" else csv_cell
               for kind in column_types]

    def line(row: tuple) -> str:
        return ",".join(write(value) for write, value in zip(writers, row, strict=True)) + "\r\n"

    return line


def header_line(names: list[str]) -> str:
    return ",".join(names) + "\r\n"  # declared column names: identifiers, nothing to quote or neutralise


@dataclass
class Meta:
    total: int
    exact: bool
    as_of: Any
    sources: list[int]


@dataclass
class CsvExport:
    """One download: `start()`, `wait_until_ready()` (the meta, or the error that came before any row), then
    iterate the body; the server calls `close()` when it is done with it, however it ended."""

    engine: Engine
    select_sql: str
    params: dict[str, Any]
    header: str
    line: Callable[[tuple], str]
    read_meta: Callable[[Connection], Meta]
    name: str
    release: Callable[[], None] = lambda: None
    meta: Meta | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _written: int = 0
    _sent: int = 0
    _ready: bool = False
    _done: bool = False
    _error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _closed: bool = False
    _users: int = 2  # the producer and the response: the last one out closes the spool

    def start(self) -> CsvExport:
        self._spool = tempfile.TemporaryFile(prefix="api-csv-", buffering=0)  # noqa: SIM115 - closed by _leave
        threading.Thread(target=self._produce, name=f"csv-{self.name}", daemon=True).start()
        return self

    def wait_until_ready(self) -> Meta:
        """The meta once the first rows are spooled; the producer's exception if it failed before that."""
        with self._cond:
            while not self._ready:
                self._cond.wait()
            if self.meta is None:
                error = self._error
                self.close()
                raise error if error is not None else ExportFailed(f"the {self.name} export did not start")
            return self.meta

    # --- the producer: Postgres -> spool ------------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            with self.engine.connect() as conn:  # one transaction, one snapshot: the meta and the rows agree
                meta = self.read_meta(conn)
                # A server-side cursor, FETCH_ROWS rows at a time (the size is given to partitions(): without it the
                # driver fetches everything at once).
                # The SQL is psycopg's (`%(name)s` placeholders): handed to the driver as it is.
                result = conn.exec_driver_sql(self.select_sql, self.params, execution_options={"stream_results": True})
                head = self.header
                for rows in result.partitions(FETCH_ROWS):  # the first fetch runs the query: errors come before any byte
                    if self._stop.is_set():  # the client went away: stop reading
                        break
                    self._append(head + "".join(self.line(row) for row in rows))
                    head = ""
                    self._publish(meta)
                if head:  # no rows at all: the header alone is the whole file
                    self._append(head)
                    self._publish(meta)
            self._finish(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the response, which decides what the client sees
            self._finish(exc)
        finally:
            self._leave()

    def _append(self, chunk: str) -> None:
        data = memoryview(chunk.encode())
        written = 0
        while written < len(data):  # unbuffered (readable by the response as soon as it is counted), so it may be short
            written += self._spool.write(data[written:])
        with self._cond:
            self._written += len(data)
            self._cond.notify_all()

    def _publish(self, meta: Meta) -> None:
        with self._cond:
            self.meta, self._ready = meta, True
            self._cond.notify_all()

    def _finish(self, error: BaseException | None) -> None:
        with self._cond:
            self._error, self._done, self._ready = error, True, True
            self._cond.notify_all()

    # --- the response: spool -> client ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        finally:  # sent whole, failed, or the client gone: done with the download either way
            self.close()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                while self._written == self._sent and not self._done:
                    self._cond.wait()
                written, done, error = self._written, self._done, self._error
            while self._sent < written:
                chunk = os.pread(self._spool.fileno(), min(CHUNK_BYTES, written - self._sent), self._sent)
                self._sent += len(chunk)
                yield chunk
            if done:
                if error is not None:
                    log.error("the %s CSV export stopped after %d bytes: %s; the download is cut off without its "
                              "last chunk", self.name, self._sent, type(error).__name__)
                    raise ExportFailed(f"the {self.name} CSV export stopped after {self._sent} bytes "
                                       f"({type(error).__name__})") from None
                return

    def close(self) -> None:
        """The response is done with (sent, failed, or the client gone; the server calls this, and so does the end
        of the iteration): stop the producer, give the download slot back. Once only."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self.release()
        self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self._spool.close()
