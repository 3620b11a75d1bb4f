"""Run one declared connector: deliver a mart (or a query's result) to its destination, or pull from its source, and
leave a record of what moved in `ops.connector_runs` (docs/decisions/0029-connectors-exactly-once.md).

A delivery:

1. resolves the mart's `as_of` (its build time, `max(built_at)`; for a query, the newest build of the marts it names)
   and the run_key `<connector>-<as_of>`: every attempt at delivering that build has the same key;
2. takes a lock on the run_key (a Postgres advisory lock: two attempts never run side by side) and marks the key's
   earlier `running` rows, whose process died, `failed`;
3. exactly once: a `succeeded` run with the run_key, or a delivery the destination already holds for it
   (`delivered`: a run that died after delivering, before recording), makes this run `skipped` or records what was
   found; nothing is sent. `full_reload` delivers again, onto the same object, table or file;
4. writes the audit row when the connector moves patient-level data, then streams the rows in Arrow batches
   (elt/connectors/stream.py) into the destination's `deliver` (or, to a destination that takes CSV bytes, COPY's
   own CSV into its `deliver_bytes`), and records rows, bytes, checksum and location.

A pull starts from the `cursor_after` of the connector's last succeeded pull (`since` overrides it, `full_reload`
starts from nothing), calls the source's `pull`, and records the files it landed and the cursor after.

A failure is recorded with the step and the exception's kind and message, which the kinds keep free of row values,
then raised again: DestinationUnavailable may be retried (the DAG does), DestinationRefused may not.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg
from psycopg import sql

from elt.config import Settings, get_settings
from elt.connectors.base import ConnectorError, RunContext
from elt.connectors.spec import Connector, ConnectorSpecError, check_connector, load_connector

log = logging.getLogger("elt.connectors")

Trigger = Literal["schedule", "manual", "cli"]
TABLE_REF = re.compile(r'"?([a-z_][a-z0-9_]*)"?\s*\.\s*"?([a-z_][a-z0-9_]*)"?', re.IGNORECASE)


@dataclass(frozen=True)
class RunOptions:
    trigger: Trigger = "cli"
    full_reload: bool = False     # deliveries: deliver again though delivered; pulls: start from no cursor
    since: str | None = None      # pulls: start from this cursor instead of the last good run's
    dry_run: bool = False         # count what would move, write nothing (and record the run as a dry run)


@dataclass
class RunOutcome:
    """What a run did, as recorded: ids, counts and states only (safe for XCom and logs)."""

    connector: str
    direction: str
    run_key: str
    status: str
    run_id: int | None = None
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    location: str | None = None
    as_of: datetime | None = None
    source_files: list[int] = field(default_factory=list)
    cursor_before: str | None = None
    cursor_after: str | None = None
    error: str | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat() if self.as_of else None
        return out

    def summary(self) -> str:
        moved = f"{self.rows} rows, {self.bytes} bytes" if self.rows is not None else "nothing moved"
        where = f" -> {self.location}" if self.location else ""
        why = f": {self.error}" if self.error else ""
        return f"{self.connector} [{self.run_key}] {self.status} ({moved}){where}{why}"


def declared(name: str, settings: Settings) -> Connector:
    """The connector `name` from CONNECTORS_DIR, checked against the contracts; ConnectorSpecError otherwise."""
    from elt.contracts import load_contracts

    path = next((p for p in (settings.connectors_dir / f"{name}.yml", settings.connectors_dir / f"{name}.yaml")
                 if p.is_file()), None)
    if path is None or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConnectorSpecError(f"no connector {name!r} in {settings.connectors_dir} (CONNECTORS_DIR); "
                                 "`elt connectors list` shows the declared ones")
    connector = load_connector(path)
    check_connector(connector, load_contracts(settings.contracts_dir), path.name)
    return connector


def run_connector(name: str, options: RunOptions | None = None, *, settings: Settings | None = None) -> RunOutcome:
    """Run the connector `name` once; its outcome is recorded. Raises ConnectorError (after recording) on failure."""
    settings = settings or get_settings()
    options = options or RunOptions()
    connector = declared(name, settings)
    if options.since is not None and connector.deliver is not None:
        raise ConnectorError(f"connector {name}: `since` applies to pulls (a delivery sends a mart's whole build)")
    with psycopg.connect(settings.database_url, autocommit=True, application_name=f"elt-connector-{name}") as conn:
        if connector.deliver is not None:
            return _Delivery(connector, options, settings, conn).run()
        return _Pull(connector, options, settings, conn).run()


def open_kind(connector: Connector, settings: Settings):
    """The connector's source or destination, opened (with the settings when its `open` takes them)."""
    opener = connector.kind.module.open
    if "settings" in inspect.signature(opener).parameters:
        return opener(connector.options, settings=settings)
    return opener(connector.options)


def _compact(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class _Run:
    """What a delivery and a pull share: the run record, the lock, the audit row."""

    direction: str

    def __init__(self, connector: Connector, options: RunOptions, settings: Settings, conn: psycopg.Connection):
        self.connector, self.options, self.settings, self.conn = connector, options, settings, conn
        self.started = datetime.now(UTC)

    def outcome(self, run_key: str, status: str, **values) -> RunOutcome:
        return RunOutcome(self.connector.name, self.direction, run_key, status, **values)

    def lock(self, run_key: str) -> None:
        """Hold the run_key for this session; another attempt running now is a ConnectorError."""
        (got,) = self.conn.execute("select pg_try_advisory_lock(%s)", (_lock_id(run_key),)).fetchone()
        if not got:
            raise ConnectorError(f"connector {self.connector.name}: run {run_key} is already running elsewhere")
        self.conn.execute("update ops.connector_runs set status = 'failed', finished_at = now(), error = %s "
                          "where run_key = %s and status = 'running'",
                          ("the run ended without recording an outcome (its process died); found by a later run",
                           run_key))

    def unlock(self, run_key: str) -> None:
        self.conn.execute("select pg_advisory_unlock(%s)", (_lock_id(run_key),))

    def start(self, outcome: RunOutcome) -> None:
        outcome.run_id = self.conn.execute(
            "insert into ops.connector_runs (connector, direction, run_key, trigger, status, started_at, as_of, "
            "source_files, cursor_before, dry_run, full_reload) values (%s, %s, %s, %s, 'running', %s, %s, %s, %s, "
            "%s, %s) returning run_id",
            (outcome.connector, self.direction, outcome.run_key, self.options.trigger, self.started, outcome.as_of,
             outcome.source_files, outcome.cursor_before, self.options.dry_run, self.options.full_reload),
        ).fetchone()[0]

    def finish(self, outcome: RunOutcome) -> RunOutcome:
        """Record the outcome (inserting the row of a run that never started, such as a skipped one)."""
        if outcome.run_id is None:
            self.start(outcome)
        self.conn.execute(
            "update ops.connector_runs set status = %s, finished_at = now(), rows = %s, bytes = %s, sha256 = %s, "
            "location = %s, cursor_after = %s, error = %s, detail = cast(%s as jsonb) where run_id = %s",
            (outcome.status, outcome.rows, outcome.bytes, outcome.sha256, outcome.location, outcome.cursor_after,
             outcome.error, json.dumps(outcome.detail, default=str), outcome.run_id))
        log.info("connector run %s", outcome.summary())
        return outcome

    def audit(self, run_key: str) -> None:
        if self.connector.personal_data and not self.options.dry_run:
            from elt.warehouse.audit import audit_connector_run

            audit_connector_run(self.conn, self.connector.name, self.direction,
                                {"run_key": run_key, "trigger": self.options.trigger,
                                 "full_reload": self.options.full_reload})

    def failed(self, outcome: RunOutcome, step: str, exc: BaseException) -> None:
        """Record the failure: the step, the exception's kind, and its message only when it is a ConnectorError
        (whose message the kinds keep free of row values); any other exception is named, not quoted."""
        said = str(exc) if isinstance(exc, ConnectorError) else "see the task's log for the traceback"
        outcome.status = "failed"
        outcome.error = f"{step}: {type(exc).__name__}: {said}"
        if getattr(exc, "progress", None) is not None:  # what the destination took, for the next attempt to resume
            outcome.detail = {**outcome.detail, "progress": exc.progress}
        self.finish(outcome)


def _lock_id(run_key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"connector:{run_key}".encode()).digest()[:8], "big", signed=True)


class _Delivery(_Run):
    direction = "deliver"

    def run(self) -> RunOutcome:
        from elt.connectors.stream import Select, describe

        deliver = self.connector.deliver
        select = Select.of(deliver)
        tables = [deliver.mart] if deliver.mart else _named_tables(deliver.query)
        as_of = _as_of(self.conn, tables)
        run_key = f"{self.connector.name}-{_compact(as_of or self.started)}"
        outcome = self.outcome(run_key, "running", as_of=as_of,
                               source_files=_source_files(self.conn, self.settings, tables, as_of))
        try:
            columns = describe(self.conn, select)
        except psycopg.Error as exc:
            refused = ConnectorError(f"connector {self.connector.name}: {deliver.subject} cannot be read "
                                     f"({type(exc).__name__}, SQLSTATE {exc.sqlstate}): check that it is built, "
                                     "or that the query runs")
            self.failed(outcome, "read the warehouse", refused)
            raise refused from None
        ctx = RunContext(self.connector.name, run_key, as_of, self.started, columns=tuple(c.name for c in columns),
                         mart=deliver.mart, dry_run=self.options.dry_run, resume_from=self._progress(run_key))
        destination = open_kind(self.connector, self.settings)
        self.lock(run_key)
        try:
            return self._deliver_once(outcome, ctx, destination, select, columns)
        finally:
            self.unlock(run_key)

    def _progress(self, run_key: str) -> dict:
        """What the latest failed attempt at this run_key says its destination took (the REST kind's batches), so
        that this attempt resumes after it; nothing for a full reload or a dry run, which start again."""
        if self.options.full_reload or self.options.dry_run:
            return {}
        row = self.conn.execute(
            "select detail -> 'progress' from ops.connector_runs where connector = %s and run_key = %s and "
            "status = 'failed' and not dry_run order by run_id desc limit 1",
            (self.connector.name, run_key)).fetchone()
        return (row and row[0]) or {}

    def _deliver_once(self, outcome: RunOutcome, ctx: RunContext, destination, select, columns) -> RunOutcome:
        if not (self.options.full_reload or self.options.dry_run):
            done = self._already(outcome, ctx, destination)
            if done is not None:
                return done
        self.start(outcome)
        try:
            self.audit(ctx.run_key)
            delivered = self._send(ctx, destination, select, columns)
        except BaseException as exc:
            self.failed(outcome, "deliver", exc)
            raise
        outcome.status = "succeeded"
        outcome.rows, outcome.bytes, outcome.sha256 = delivered.rows, delivered.bytes, delivered.sha256
        outcome.location, outcome.detail = delivered.location, {**delivered.detail, "dry_run": self.options.dry_run}
        return self.finish(outcome)

    def _already(self, outcome: RunOutcome, ctx: RunContext, destination) -> RunOutcome | None:
        """A skipped run when the run_key succeeded before; a succeeded one recording what the destination already
        holds for it (an attempt that died before recording); None when it still has to be delivered."""
        earlier = self.conn.execute(
            "select run_id, rows, bytes, sha256, location from ops.connector_runs where connector = %s and "
            "run_key = %s and status = 'succeeded' and not dry_run order by run_id desc limit 1",
            (outcome.connector, outcome.run_key)).fetchone()
        if earlier:
            outcome.status, outcome.location = "skipped", earlier[4]
            outcome.detail = {"delivered_by_run": earlier[0], "rows": earlier[1], "sha256": earlier[3]}
            return self.finish(outcome)
        try:
            found = destination.delivered(ctx)
        except BaseException as exc:
            self.failed(outcome, "ask the destination what it holds", exc)
            raise
        if found is None:
            return None
        outcome.status, outcome.rows, outcome.bytes, outcome.sha256 = "succeeded", found.rows, found.bytes, found.sha256
        outcome.location, outcome.detail = found.location, {**found.detail, "sent": False}
        return self.finish(outcome)

    def _send(self, ctx: RunContext, destination, select, columns):
        from elt.connectors.stream import arrow_schema, batches

        name = f"elt-connector-{ctx.connector}"
        if getattr(destination, "csv_bytes", False):  # COPY's CSV as it comes, no Arrow (base.py)
            return self._send_csv(ctx, destination, select, columns, name)
        rows = batches(self.settings.database_url, select, arrow_schema(columns), application_name=name)
        try:
            return destination.deliver(ctx, rows)
        finally:
            rows.close()  # a destination that stopped early: the read's session is closed, and Postgres ends it

    def _send_csv(self, ctx: RunContext, destination, select, columns, name: str):
        from elt.connectors.stream import CsvCopy

        # Not `with`: its exit would end the transaction with a round trip, which waits behind a COPY that a
        # destination left half read; closing drops the session, and Postgres ends the COPY and the read with it.
        data = psycopg.connect(self.settings.database_url, application_name=name)
        try:
            data.read_only = True
            rows = CsvCopy(data, select, columns)
            try:
                return destination.deliver_bytes(ctx, rows)
            finally:
                rows.close()  # a destination that stopped early: the COPY is cancelled (psycopg) if still running
        finally:
            data.close()


def _named_tables(query: str) -> list[str]:
    return sorted({f"{schema}.{table}".lower() for schema, table in TABLE_REF.findall(query)})


def _as_of(conn: psycopg.Connection, tables: list[str]) -> datetime | None:
    """The newest build (max(built_at)) of the tables that have a built_at column; None when none has one."""
    built = [row[0] for row in conn.execute(
        "select table_schema || '.' || table_name from information_schema.columns where column_name = 'built_at' "
        "and table_schema || '.' || table_name = any(%s)", (tables,))]
    moments = []
    for table in built:
        schema, name = table.split(".")
        moments.append(conn.execute(sql.SQL("select max(built_at) from {}").format(
            sql.Identifier(schema, name))).fetchone()[0])
    moments = [m for m in moments if m is not None]
    return max(moments) if moments else None


def _source_files(conn: psycopg.Connection, settings: Settings, tables: list[str], as_of: datetime | None) -> list[int]:
    """The ledger ids of the files the marts were built from, as the API's meta.sources finds them: loaded files of
    the drop types of the marts' families, finished before the build."""
    drop_types = mart_drop_types(settings, tables)
    if as_of is None or not drop_types:
        return []
    return conn.execute("select array(select file_id from ops.file_ledger where status = 'loaded' and drop_type = "
                        "any(%s) and finished_at <= %s order by file_id)", (drop_types, as_of)).fetchone()[0]


def mart_drop_types(settings: Settings, tables: list[str]) -> list[str]:
    """The drop types of the families whose dbt folders build `tables`, found through dbt's manifest (none without
    it: `elt parse` writes it)."""
    from elt.families import family_files
    from elt.transform import manifest_path

    path = manifest_path(settings)
    if not path.is_file():
        return []
    nodes = json.loads(path.read_text())["nodes"].values()
    files = [n["original_file_path"] for n in nodes
             if n.get("resource_type") == "model" and f"{n['schema']}.{n.get('alias') or n['name']}" in tables]
    families = family_files(settings.families_dir).values()
    return sorted({drop_type for family in families for drop_type in family.drop_types
                   if any(f.startswith(p.rstrip("/") + "/") for f in files for p in family.marts.dbt_paths)})


class _Pull(_Run):
    direction = "pull"

    def run(self) -> RunOutcome:
        pull = self.connector.pull
        run_key = f"{self.connector.name}-{_compact(self.started)}"
        self.lock(f"{self.connector.name}-pull")  # one pull of a connector at a time: the cursor moves in order
        try:
            cursor = self._cursor()
            outcome = self.outcome(run_key, "running", cursor_before=cursor)
            ctx = RunContext(self.connector.name, run_key, None, self.started, dry_run=self.options.dry_run,
                             drop_type=pull.drop_type)
            self.start(outcome)
            try:
                self.audit(run_key)
                pulled = open_kind(self.connector, self.settings).pull(ctx, cursor)
            except BaseException as exc:
                self.failed(outcome, "pull", exc)
                raise
            outcome.status, outcome.rows, outcome.bytes, outcome.sha256 = ("succeeded", pulled.rows, pulled.bytes,
                                                                           pulled.sha256)
            outcome.cursor_after = cursor if self.options.dry_run else pulled.cursor_after
            outcome.location = f"drop type {pull.drop_type}"
            outcome.detail = {"files": list(pulled.files), "dry_run": self.options.dry_run}
            return self.finish(outcome)
        finally:
            self.unlock(f"{self.connector.name}-pull")

    def _cursor(self) -> str | None:
        if self.options.since is not None:
            return self.options.since
        if self.options.full_reload:
            return None
        row = self.conn.execute("select cursor_after from ops.connector_runs where connector = %s and direction = "
                                "'pull' and status = 'succeeded' and not dry_run order by run_id desc limit 1",
                                (self.connector.name,)).fetchone()
        return row[0] if row else None
