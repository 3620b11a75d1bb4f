"""What every connector kind implements: the contract between the connector engine and one source or destination.

A connector (issue 16) moves data between the warehouse and somewhere else, declared once in a YAML file
(`elt/connectors/spec.py` reads it). Each *kind* of destination (`s3`, `sftp`, `rest`, `postgres`, `folder`) and of
source (`postgres`, `folder`) is one module of `elt/connectors/destinations/` or `elt/connectors/sources/` that
defines two names, and nothing else registers it (the engine finds the modules, so there is no list to keep):

* `Options`: a pydantic model of the kind's settings, with `kind: Literal["<module name>"]` and
  `model_config = ConfigDict(extra="forbid")`. Credentials are never fields: a `credentials: Credentials` field
  names where they are (an Airflow connection id or environment variables), resolved at run time.
* `open(options: Options) -> Destination` (or `-> Source`): the object that does the work. An `open` that also
  takes `settings` is given the engine's (elt.config.Settings), e.g. to land files in the warehouse's bucket.

Every kind module is imported whenever declarations are read (the CLI, each connector DAG's parse, every run), so a
kind loads its client library (boto3, paramiko, requests, pyarrow) when it is used, not at its top: inside `open` and
the functions that need it, or as `lazy_module("name")`.

The engine owns the run record (`ops.connector_runs`), the cursor, exactly-once bookkeeping, audit and logging;
a kind only moves bytes and says what it moved (a destination that writes CSV may take the file's bytes straight
from Postgres: `CsvBytesDestination`, below). No value from a data row may appear in anything a kind raises or
logs: name the connector, the location and the position (batch, row number), never a value.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pyarrow is imported by the kinds that write Parquet or read batches
    import pyarrow


class ConnectorError(Exception):
    """A run cannot go on. The message says what to do next and holds no row values.

    `progress` says what a failed delivery had completed (kind-specific, e.g. the batches a REST endpoint took):
    the engine stores it with the failed run and hands it back as `RunContext.resume_from` to the next attempt at
    the same run_key, so a kind whose destination cannot be asked resumes after it.
    """

    def __init__(self, message: str, *, progress: dict | None = None):
        super().__init__(message)
        self.progress = dict(progress or {})


class DestinationRefused(ConnectorError):
    """The destination answered that it will never take this delivery as sent (an HTTP 4xx, a permission denied):
    retrying the same run cannot help, so the run fails without retries."""


class DestinationUnavailable(ConnectorError):
    """The destination is down or timed out (5xx, refused connection): the run fails and may be retried; nothing
    it already took is sent twice, because the retry resumes from what `delivered` reports."""


@dataclass(frozen=True)
class RunContext:
    """One run of one connector, as the engine hands it to a kind."""

    connector: str                 # the declaration's name (its file's stem)
    run_key: str                   # the same for every attempt at the same delivery: '<connector>-<as_of, compact>'
    as_of: datetime | None         # the delivered mart's build time (None for pulls)
    started_at: datetime
    columns: tuple[str, ...] = ()  # the delivered columns, in order (deliveries)
    mart: str | None = None        # deliveries: the mart's schema.table (None for a query's result); keys name it
    dry_run: bool = False          # count what would move; write nothing
    drop_type: str | None = None   # pulls: the declaration's `pull.drop_type`, whose contract the landed files follow
    # what the latest attempt at this run_key recorded: its Delivered.detail, or its error's `progress` ({} on a
    # first attempt). Kinds that can ask their destination what it holds ignore it (see ConnectorError).
    resume_from: dict = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("elt.connectors"))


@dataclass(frozen=True)
class Delivered:
    """What a destination holds for one run_key: where, how many rows and bytes, and the SHA-256 of those bytes."""

    location: str                  # s3://bucket/key, sftp://host/path, https://host/path, postgres table, a file path
    rows: int
    bytes: int
    sha256: str
    detail: dict = field(default_factory=dict)  # kind-specific (e.g. batches sent), stored in the run record as JSON


class Destination(Protocol):
    def delivered(self, ctx: RunContext) -> Delivered | None:
        """What an earlier attempt with ctx.run_key completed, or None: a run that finds a delivery sends nothing."""

    def deliver(self, ctx: RunContext, batches: Iterable[pyarrow.RecordBatch]) -> Delivered:
        """Write the batches (in order; memory must stay flat in the number of rows) so that a reader never sees a
        partial delivery, and say what was delivered. Raises DestinationRefused or DestinationUnavailable."""


class CsvBytesDestination(Destination, Protocol):
    """Optional, for a destination that writes CSV: it sets `csv_bytes` true (for the options that make it write
    CSV) and the engine then calls `deliver_bytes` instead of `deliver`, with the file's bytes as Postgres's COPY
    writes them (elt/connectors/stream.py, CsvCopy: the CSV conventions are set there, once), with no Arrow between
    (decision 0030). The same duties as `deliver`: atomic, flat memory, no row values in errors."""

    csv_bytes: bool

    def deliver_bytes(self, ctx: RunContext, chunks: CsvChunks) -> Delivered:
        """Write the chunks, in order, as one file, and say what was delivered (`chunks.rows` once they are read)."""


class CsvChunks(Protocol):
    """One CSV file (a header, then the rows) as chunks of bytes; `rows` counts its data rows once iterated."""

    rows: int | None

    def __iter__(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class Pulled:
    """What a source pull landed: the files it handed to the ledger, and where the next pull starts."""

    files: tuple[str, ...]         # landing keys or paths, each ingested through the ledger like any drop
    rows: int
    bytes: int
    sha256: str
    cursor_after: str | None       # stored in the run record; the next pull starts from the last good run's value


class Source(Protocol):
    def pull(self, ctx: RunContext, cursor: str | None) -> Pulled:
        """Land what is new since cursor (None: everything) as files of the connector's drop type."""


class Credentials(BaseModel):
    """Where a connector's secrets are: an Airflow connection id, or environment variables by field name.

    `conn_id` is read from `AIRFLOW_CONN_<ID>` (URI or JSON form), which Airflow itself honours too, so the same
    declaration runs from `elt connectors run` and from its DAG. `env` maps a field (login, password, host, port,
    schema, token, ...) to the name of the variable holding it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    conn_id: str | None = None
    env: dict[str, str] = {}

    def resolve(self) -> dict[str, str]:
        values: dict[str, str] = {}
        if self.conn_id:
            values.update(_airflow_connection(self.conn_id))
        for name, variable in self.env.items():
            if variable not in os.environ:
                raise ConnectorError(f"environment variable {variable} (credentials field {name!r}) is not set")
            values[name] = os.environ[variable]
        return values


def _airflow_connection(conn_id: str) -> dict[str, str]:
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    text = os.environ.get(variable)
    if text is None:
        raise ConnectorError(f"connection {conn_id!r} is not defined: set {variable} (a URI or Airflow's JSON form)")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        extra = data.pop("extra", {}) or {}
        extra = json.loads(extra) if isinstance(extra, str) else extra
        return {k: str(v) for k, v in {**data, **extra}.items() if v is not None}
    parts = urlsplit(text)
    values = {"conn_type": parts.scheme, "host": parts.hostname or "", "login": unquote(parts.username or ""),
              "password": unquote(parts.password or ""), "schema": unquote(parts.path.lstrip("/"))}
    if parts.port:
        values["port"] = str(parts.port)
    return {k: v for k, v in values.items() if v}


def lazy_module(name: str) -> ModuleType:
    """The top-level module `name`, loaded on its first attribute access (the standard library's recipe,
    importlib.util.LazyLoader): a kind's client library costs nothing until a connector of that kind runs. A module
    already loaded is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
