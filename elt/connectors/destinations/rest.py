"""REST destination: the rows as JSON batches POSTed to a partner's endpoint, each batch exactly once.

Each batch is one POST of `{"connector", "run_key", "batch", "rows": [{column: value, ...}, ...]}` (batch numbers
from 1, `batch_rows` rows each, the last one fewer) with the header `Idempotency-Key: <run_key>-<batch>`, so an
endpoint that honours the key stores a batch once however often it arrives. 5xx, 408, 429, timeouts and failed
connections are retried with exponential backoff (longer when the answer's Retry-After asks for it) up to
`max_attempts`; any other 4xx (or a redirect) refuses the run.

An endpoint cannot be asked what it holds, so the destination reports its own progress: a failed run's error carries
`progress` (batches taken, and the SHA-256 of their bodies), which the engine hands back as `ctx.resume_from`; the
next attempt encodes the same rows again, checks that batches 1..k encode to the same bytes, and sends from k+1.
A completed run's `Delivered.detail` says so, and `delivered` returns it. Decision record 0031.

Values: dates, times and timestamps as ISO 8601 (a timestamp with a time zone carries its offset), decimals as
strings (exact), durations as seconds, binary as base64, null as null. NaN and infinities have no JSON form: the
run fails naming the batch, row and column.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elt.connectors.base import (
    ConnectorError,
    Credentials,
    Delivered,
    DestinationRefused,
    DestinationUnavailable,
    RunContext,
    lazy_module,
)

if TYPE_CHECKING:
    import pyarrow

requests = lazy_module("requests")
RETRIED_STATUSES = frozenset({408, 429})  # besides every 5xx: the endpoint asks to be tried again later


class Options(BaseModel):
    """`credentials` (optional) name a bearer token: the field `token`, or the connection's password."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["rest"]
    url: str
    credentials: Credentials | None = None
    batch_rows: int = Field(5000, ge=1, le=100_000)
    max_attempts: int = Field(5, ge=1, le=20)        # per batch, the first try included
    backoff_seconds: float = Field(1.0, ge=0)        # wait before the 2nd attempt; doubles for each further one
    backoff_max_seconds: float = Field(60.0, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)       # to connect, and for the answer

    @field_validator("url")
    @classmethod
    def _http_without_secrets(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not hold a login or password: name them in credentials")
        return value


def open(options: Options) -> RestDestination:  # the name every kind defines (base.py); shadows no use here
    return RestDestination(options)


@dataclass
class _Progress:
    """What the endpoint has taken so far: batches, rows, bytes, and the SHA-256 of the bodies in order."""

    batch_rows: int
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, body: bytes, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.bytes += len(body)
        self.digest.update(body)

    def as_dict(self, *, complete: bool) -> dict:
        return {"batches": self.batches, "batch_rows": self.batch_rows, "rows": self.rows, "bytes": self.bytes,
                "sha256": self.digest.hexdigest(), "complete": complete}


class RestDestination:
    def __init__(self, options: Options):
        self.options = options

    def delivered(self, ctx: RunContext) -> Delivered | None:
        done = ctx.resume_from
        if not done.get("complete"):
            return None
        return Delivered(location=self.options.url, rows=int(done["rows"]), bytes=int(done["bytes"]),
                         sha256=str(done["sha256"]), detail=dict(done))

    def deliver(self, ctx: RunContext, batches: Iterable[pyarrow.RecordBatch]) -> Delivered:
        taken, batch_rows, taken_sha256 = _resume_point(ctx, self.options.batch_rows)
        progress = _Progress(batch_rows)
        headers = self._headers()
        with requests.Session() as session:
            for number, rows in enumerate(_rebatch(batches, batch_rows), start=1):
                try:
                    body = _body(ctx, number, rows, batch_rows)
                except ConnectorError as exc:  # batches before this one may have been taken: say so
                    raise ConnectorError(str(exc), progress=progress.as_dict(complete=False)) from None
                if number > taken and not ctx.dry_run:
                    self._post(session, ctx, number, body, headers, progress)
                progress.add(body, len(rows))
                if number == taken:
                    _check_same_rows(ctx, progress, taken_sha256)
        if progress.batches < taken:
            raise ConnectorError(f"connector {ctx.connector!r}: run {ctx.run_key} has {progress.batches} batches "
                                 f"now, but an earlier attempt sent {taken}: the rows changed between attempts")
        detail = {**progress.as_dict(complete=not ctx.dry_run), "resumed_after": taken, "dry_run": ctx.dry_run}
        ctx.log.info("connector %s: %d rows in %d batches delivered to %s (%d sent by an earlier attempt)",
                     ctx.connector, progress.rows, progress.batches, self.options.url, taken)
        return Delivered(location=self.options.url, rows=progress.rows, bytes=progress.bytes,
                         sha256=progress.digest.hexdigest(), detail=detail)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.options.credentials:
            secrets = self.options.credentials.resolve()
            token = secrets.get("token") or secrets.get("password")
            if not token:
                raise ConnectorError(f"the credentials of the rest destination {self.options.url} hold no token "
                                     "(a `token` field, or the connection's password)")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _post(self, session: requests.Session, ctx: RunContext, number: int, body: bytes,
              headers: dict[str, str], progress: _Progress) -> None:
        """One batch, retried on 5xx/408/429/timeouts/failed connections; its errors carry what was taken before."""
        headers = {**headers, "Idempotency-Key": f"{ctx.run_key}-{number}"}
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            failed = self._attempt(session, ctx, number, body, headers, progress)
            if failed is None:
                return
            reason, asked = failed
            if attempt < attempts:
                backoff = self.options.backoff_seconds * 2 ** (attempt - 1)
                wait = min(max(backoff, asked), self.options.backoff_max_seconds)
                ctx.log.warning("connector %s: %s did not take batch %d (%s); attempt %d of %d in %.1f s",
                                ctx.connector, self.options.url, number, reason, attempt + 1, attempts, wait)
                time.sleep(wait)
        raise DestinationUnavailable(
            f"{self.options.url} did not take batch {number} of run {ctx.run_key} in {attempts} attempts (last: "
            f"{reason}). {_taken(number)}",
            progress=progress.as_dict(complete=False))

    def _attempt(self, session: requests.Session, ctx: RunContext, number: int, body: bytes,
                 headers: dict[str, str], progress: _Progress) -> tuple[str, float] | None:
        """None when the endpoint took the batch, else why it may be tried again and the wait it asked for
        (Retry-After in seconds; 0: none); raises when it never will take it."""
        timeout = self.options.timeout_seconds
        try:
            with session.post(self.options.url, data=body, headers=headers, timeout=timeout,
                              allow_redirects=False) as response:
                status, retry_after = response.status_code, response.headers.get("Retry-After", "")
        except requests.Timeout:
            return f"no answer within {timeout:g} s", 0
        except requests.RequestException as exc:
            return f"the connection failed ({type(exc).__name__})", 0
        if status < 300:
            return None
        if status >= 500 or status in RETRIED_STATUSES:
            return f"HTTP {status}", float(retry_after) if retry_after.isdigit() else 0
        advice = "set url to the final address" if status < 400 else (
            "check the url, the token and the body's shape (docs/connectors-remote.md); sending the same batch "
            "again cannot help")
        raise DestinationRefused(
            f"{self.options.url} answered HTTP {status} to batch {number} of run {ctx.run_key}: {advice}. "
            f"{_taken(number)}", progress=progress.as_dict(complete=False))


def _taken(number: int) -> str:
    """What the endpoint holds of a run that stopped at batch `number`."""
    if number == 1:
        return "It took no batch of this run"
    return f"It took batch{'es 1 to' if number > 2 else ''} {number - 1}; a retry of the run sends from batch {number}"


def _resume_point(ctx: RunContext, batch_rows: int) -> tuple[int, int, str | None]:
    """(batches already taken, the batch size they were cut with, their bodies' SHA-256) from ctx.resume_from."""
    earlier = ctx.resume_from
    if not earlier or earlier.get("complete") or not earlier.get("batches"):
        return 0, batch_rows, None
    try:
        taken, size, sha256 = int(earlier["batches"]), int(earlier["batch_rows"]), str(earlier["sha256"])
    except (KeyError, TypeError, ValueError):
        raise ConnectorError(f"connector {ctx.connector!r}: the progress recorded for run {ctx.run_key} is not "
                             "one the rest destination wrote (batches, batch_rows, sha256)") from None
    if size != batch_rows:
        ctx.log.warning("connector %s: resuming run %s with the %d-row batches it started with (batch_rows is "
                        "now %d)", ctx.connector, ctx.run_key, size, batch_rows)
    return taken, size, sha256


def _check_same_rows(ctx: RunContext, progress: _Progress, taken_sha256: str | None) -> None:
    if progress.digest.hexdigest() != taken_sha256:
        raise ConnectorError(
            f"connector {ctx.connector!r}: batches 1 to {progress.batches} of run {ctx.run_key} are not the rows "
            "an earlier attempt sent, so resuming would mix two versions. The endpoint holds the earlier ones; "
            "resolve it with the partner, then deliver under a new run")


def _rebatch(batches: Iterable[pyarrow.RecordBatch], size: int) -> Iterator[list[dict]]:
    """Rows in lists of `size` (the last one fewer), whatever the incoming batches' sizes: memory holds one list and
    one incoming batch."""
    pending: list[dict] = []
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            take = min(size - len(pending), batch.num_rows - start)
            pending.extend(batch.slice(start, take).to_pylist())
            start += take
            if len(pending) == size:
                yield pending
                pending = []
    if pending:
        yield pending


def _body(ctx: RunContext, number: int, rows: list[dict], batch_rows: int) -> bytes:
    document = {"connector": ctx.connector, "run_key": ctx.run_key, "batch": number, "rows": rows}
    try:
        return json.dumps(document, default=_json_value, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":")).encode()
    except (TypeError, ValueError):
        row, column, rule = _first_unencodable(rows)
        raise ConnectorError(
            f"connector {ctx.connector!r}: batch {number}, row {(number - 1) * batch_rows + row} of the run, column "
            f"{column!r}: {rule}") from None


def _json_value(value):
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


def _first_unencodable(rows: list[dict]) -> tuple[int, str, str]:
    """Where the first value JSON cannot carry is (row from 1, column, the rule), without the value itself."""
    for number, row in enumerate(rows, start=1):
        for column, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                return number, column, "NaN and infinities have no JSON form"
            try:
                json.dumps(value, default=_json_value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                return number, column, f"a value JSON cannot carry ({exc.__class__.__name__})"
    return 0, "?", "a value JSON cannot carry"
