"""A table or a query in another Postgres database (a clinic's EHR), pulled into the warehouse by a cursor column.

A pull streams the rows whose cursor is past the last good run's (less `lag`, for rows committed late with an
earlier cursor) through a server-side cursor into one CSV in the drop type's own layout, lands it under the
contract's landing prefix with a key that names the connector and the cursor range, and ingests it like any drop
(elt/connectors/landing.py): the same ledger, rejects and quarantine. Nothing reaches the landing bucket until the
whole result is written, so a pull that dies half-way leaves nothing behind and its re-run starts from the same
cursor. Rows pulled twice (the lag, a re-pull) arrive in two files and the models keep the latest arrival per key.

A drop type whose files replace each other per period (`period.supersede`: the Medilink daily snapshots) is a
snapshot: every pull takes the whole table, since a delta would replace the day's earlier files. See
docs/decisions/0032 and docs/connectors-sources.md.
"""

from __future__ import annotations

import csv
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, ConfigDict, Field, model_validator

from elt.config import Settings, get_settings
from elt.connectors.base import ConnectorError, Credentials, Pulled, RunContext
from elt.connectors.landing import LANDED, contract_for, land_and_ingest, sha256_of
from elt.contracts import Contract, Layout, UploadFieldError
from elt.pipeline import discover_new_files, ingest_file

log = logging.getLogger(__name__)

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Credentials fields (Airflow connection names) -> libpq's.
_CONNINFO = {"host": "host", "port": "port", "login": "user", "password": "password", "schema": "dbname",
             "dbname": "dbname", "database": "dbname"}


class Options(BaseModel):
    """Where the rows are, how they map onto the drop type's columns, and what orders them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["postgres"]
    credentials: Credentials = Field(description="host, port, login, password, schema (the database).")
    table: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$",
                              description="[schema.]table to pull; or `query`.")
    query: str | None = Field(None, description="A select whose columns are named as `columns` (or as the "
                                                "contract's columns); a literal % is written %%.")
    columns: dict[str, str] = Field(default_factory=dict, description="Contract column -> source column. Empty: "
                                    "every column of the contract's layout, by the same name.")
    cursor_column: str = Field(pattern=IDENTIFIER, description="Orders the rows; the pull resumes after its "
                                                               "highest value (a timestamp or a number).")
    key: list[str] = Field(min_length=1, description="The source's primary key: orders rows with one cursor value, "
                                                     "so the same rows make the same bytes.")
    lag: timedelta = Field(timedelta(0), description="Rows up to this long before the last cursor are pulled again "
                                                     "(late commits). Timestamp cursors only.")
    batch_rows: int = Field(5000, ge=1, description="Rows fetched from the server-side cursor at a time.")
    file_stem: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="How the landed file's "
                                  "name starts; default the drop type without its source system (patients).")
    fields: dict[str, str] = Field(default_factory=dict, description="The contract's upload fields (e.g. payer); a "
                                   "month field left out is the run's month.")

    @model_validator(mode="after")
    def _one_relation(self) -> Options:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` and `query`")
        bad = [name for name in [*self.columns.values(), *self.key] if not re.match(IDENTIFIER, name)]
        if bad:
            raise ValueError(f"columns and key must be plain column names: {', '.join(bad)}")
        return self


# Test seam: called with the rows written so far after each batch; only tests set it (to kill a pull mid-stream).
batch_hook: Callable[[int], None] | None = None


@dataclass(frozen=True)
class _Column:
    source: str   # the column in the source
    header: str   # its header in the landed file (the layout's name for the contract column)


def open(options: Options, settings: Settings | None = None) -> PostgresSource:  # noqa: A001 - the kind contract
    return PostgresSource(options, settings or get_settings())


@dataclass
class PostgresSource:
    options: Options
    settings: Settings

    def pull(self, ctx: RunContext, cursor: str | None) -> Pulled:
        contract = contract_for(self.settings, ctx.drop_type, ctx.connector)
        since = cursor
        if contract.period.supersede and cursor is not None:
            log.info("%s: %s files replace each other per period, so every pull is the whole table",
                     ctx.connector, contract.drop_type)
            since = None
        columns = _columns(contract, self.options, ctx.connector)
        stem = self.options.file_stem or contract.drop_type.removeprefix(contract.source_system + "_")
        earlier = () if ctx.dry_run else self._land_waiting(ctx, contract, stem)
        with tempfile.TemporaryDirectory(prefix="elt-pull-") as folder:
            path = Path(folder) / "pull.csv"
            rows, cursor_after = self._write(ctx, path, columns, since)
            if ctx.dry_run or rows == 0:
                return Pulled(earlier, rows, 0, "", cursor_after or cursor)
            key = _landing_key(contract, self.options, ctx, stem, since, cursor_after)
            size, digest = path.stat().st_size, sha256_of(path)
            outcome = land_and_ingest(self.settings, path, key)
        _check(ctx, outcome.status, key)
        log.info("%s: pulled %d rows into %s (%s)", ctx.connector, rows, key, outcome.status)
        return Pulled((*earlier, key), rows, size, digest, cursor_after)

    def _land_waiting(self, ctx: RunContext, contract: Contract, stem: str) -> tuple[str, ...]:
        """Files an earlier pull of this connector landed but did not ingest (it died in between): ingested first,
        so that they do not arrive after this pull's file."""
        mine = f"{stem}_{_token(ctx.connector)}_"
        waiting = [key for key in discover_new_files(drop_type=contract.drop_type, settings=self.settings)
                   if key.rsplit("/", 1)[-1].startswith(mine)]
        for key in waiting:
            _check(ctx, ingest_file(key, settings=self.settings).status, key)
        return tuple(waiting)

    def _write(self, ctx: RunContext, path: Path, columns: list[_Column], since: str | None) -> tuple[int, str | None]:
        """Stream the rows past `since` into a CSV at `path`. Returns the rows written and the highest cursor."""
        query, params = _select(self.options, columns, since)
        rows, highest = 0, None
        try:
            with psycopg.connect(_conninfo(self.options.credentials), application_name="elt-connector") as conn:
                conn.read_only = True
                with conn.cursor(name="elt_pull") as cur, path.open("w", newline="", encoding="utf-8") as out:
                    cur.itersize = self.options.batch_rows
                    cur.execute(query, params)
                    writer = csv.writer(out)
                    writer.writerow([column.header for column in columns])
                    for row in cur:
                        writer.writerow(row[:-1])
                        if row[-1] is not None and (highest is None or row[-1] > highest):
                            highest = row[-1]
                        rows += 1
                        if batch_hook is not None and rows % self.options.batch_rows == 0:
                            batch_hook(rows)
        except psycopg.Error as exc:
            # The server's message may quote a value (a failed cast): only its class and SQLSTATE go out.
            raise ConnectorError(
                f"connector {ctx.connector}: the source failed after {rows} rows ({type(exc).__name__}, SQLSTATE "
                f"{exc.sqlstate or 'none'}); nothing was landed, and a re-run starts from the same cursor") from None
        return rows, (_cursor_text(highest) if highest is not None else None)


def _check(ctx: RunContext, status: str, key: str) -> None:
    if status not in LANDED:
        raise ConnectorError(f"connector {ctx.connector}: {key} was {status}, not loaded (see `elt files` and "
                             "`elt rejects`); the cursor stays where it was")


def _plain_layout(contract: Contract, connector: str) -> Layout:
    """The contract's first layout whose values need no special spelling: the pull writes Postgres's text forms."""
    for layout in contract.resolved_layouts():
        if not layout.formats:
            return layout
    raise ConnectorError(f"connector {connector}: {contract.drop_type} has no layout with plain values to write")


def _columns(contract: Contract, options: Options, connector: str) -> list[_Column]:
    layout = _plain_layout(contract, connector)
    unknown = sorted(set(options.columns) - set(layout.columns))
    if unknown:
        raise ConnectorError(f"connector {connector}: `columns` names {', '.join(unknown)}, not columns of "
                             f"{contract.drop_type}'s {layout.name} layout")
    chosen = [name for name in layout.columns if name in options.columns] if options.columns else list(layout.columns)
    return [_Column(options.columns.get(name, name), layout.columns[name]) for name in chosen]


def _select(options: Options, columns: list[_Column], since: str | None) -> tuple[sql.Composed, list]:
    """The pull's query: the mapped columns as text (Postgres's own spelling: ISO dates), the cursor last."""
    if options.table:
        relation = sql.Identifier(*options.table.split("."))
    else:
        relation = sql.SQL("({})").format(sql.SQL(options.query))
    cursor = sql.Identifier(options.cursor_column)
    selected = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.source)) for c in columns)
    order = sql.SQL(", ").join([cursor, *(sql.Identifier(k) for k in options.key)])
    where, params = sql.SQL(""), []
    if since is not None and options.lag:
        where, params = sql.SQL(" where {} + %s::interval > %s").format(cursor), [options.lag, since]
    elif since is not None:
        where, params = sql.SQL(" where {} > %s").format(cursor), [since]
    query = sql.SQL("select {}, {} from {} as pulled{} order by {}").format(selected, cursor, relation, where, order)
    return query, params


def _conninfo(credentials: Credentials) -> str:
    values = credentials.resolve()
    return make_conninfo("", **{_CONNINFO[name]: value for name, value in values.items() if name in _CONNINFO})


def _cursor_text(value: object) -> str:
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _token(value: str) -> str:
    """A cursor value or name as it goes into a key: letters and digits only (an ISO date's dashes would read as
    the file's reporting day)."""
    return re.sub(r"[^A-Za-z0-9]+", "", value)


def _landing_key(contract: Contract, options: Options, ctx: RunContext, stem: str, since: str | None,
                 cursor_after: str | None) -> str:
    """`<prefix>[<upload folders>]<stem>_<connector>_<from>_<to>.csv`: the same rows pulled from the same cursor
    land at the same key."""
    name = f"{stem}_{_token(ctx.connector)}_{_token(since) if since else 'all'}_{_token(cursor_after or 'none')}.csv"
    given = dict(options.fields)
    for field_name, field in contract.landing.upload_fields.items():
        if field.type == "month":
            given.setdefault(field_name, f"{ctx.started_at:%Y-%m}")
    try:
        key = contract.landing.upload_key(name, given)
    except UploadFieldError as exc:
        raise ConnectorError(f"connector {ctx.connector}: `fields`: {exc}") from None
    if not contract.matches(key):
        raise ConnectorError(f"connector {ctx.connector}: a file named {name} is not a {contract.drop_type} drop; "
                             "set `file_stem` to a name its contract takes")
    return key
