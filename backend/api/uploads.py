"""Dropping a file through the API, for the people who receive drops by e-mail or find them on NHS England's
site rather than writing to the bucket (issue 6):

* `POST /api/v1/drops`: a multipart upload, `file` plus the form field `drop_type`;
* `POST /api/v1/drops/from-url`: `{"url", "drop_type"}`, fetched by backend/fetch.py from an allowed host;
* `GET /api/v1/runs/<run_id>`: how the ingest run the drop started is going, what became of the file, and which
  run of the family's marts DAG its published data started (`marts`: when that run succeeds the marts are ready).

Both drops take the same path (`accept`), cheapest checks first, each refusal a 4xx that says what to do:
the drop type is known (400, listing them); the caller's role may drop it (403: each contract declares its
`drop_role`; patient-level drop types need clinician or admin); the extension is one the contract reads (415); the bytes are
what the extension says (415); the size is within API_UPLOAD_MAX_BYTES (413); the name is one the drop
type takes under its landing prefix (400, showing the pattern); nothing waits under that key already
(409: a waiting file is never overwritten); the file passes its contract's whole-file rules with the
loader's own readers (422, elt/preflight.py); a file for a period that a loaded file reports on already
(a revised KH03 quarter, which would replace served figures) needs the contract's `revision_role` (403). Then
it is stored under the landing prefix, registered in
the file ledger (its `file_id` is the answer's `drop_id`) and the source system's ingest DAG is started
with `conf {"key": ...}` through Airflow's REST API. From the moment it is stored nothing is lost: when
Airflow cannot be reached the answer is still 202, with a warning that the nightly run will load it.
`ops.api_runs` records which key started each run: `GET /api/v1/runs/<run_id>` shows a run to that key and to
admins, and is a 404 for everyone else.

Files go to the landing bucket with the ELT's settings (S3_*: elt/config.py), as `elt put` does. The ledger row
is written as the login `health_api_drops` (API_DROPS_DB_PASSWORD), which may register a file and nothing else,
never with the warehouse owner's DATABASE_URL; the API's reads stay read-only.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import secure_filename

from backend.airflow_client import AirflowClient, AirflowError
from backend.auth import Caller, has_role, require
from backend.config import ApiSettings
from backend.db import connection
from backend.errors import ApiError
from backend.fetch import FetchPolicy, FetchRefused, fetch
from elt.config import Settings, get_settings
from elt.contracts import ROLES, Contract, ContractError, UploadFieldError, load_contracts
from elt.families import Family, FamilyError, declared_families, family_of
from elt.pipeline import register_landed, reporting_period
from elt.preflight import check_content, check_drop
from elt.readers import reader_for
from elt.readers.csv_header import FileRejected
from elt.storage.s3 import ObjectExists, ObjectStore, StoredObject

log = logging.getLogger(__name__)
bp = Blueprint("uploads", __name__, url_prefix="/api/v1")

CONTENT_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xls": "application/vnd.ms-excel",
}
MULTIPART_ROOM = 1024 * 1024  # bytes of multipart envelope and form fields allowed beside the file itself
# Airflow's default [scheduler] allowed_run_id_pattern, and a length its run_id column holds.
RUN_ID = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")


def init_app(app: Flask, settings: ApiSettings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = settings.upload_max_bytes + MULTIPART_ROOM
    app.extensions["airflow"] = AirflowClient(settings.airflow_base_url(), settings.airflow_user,
                                              settings.airflow_password.get_secret_value(),
                                              timeout_seconds=settings.airflow_timeout_seconds)


def _settings() -> ApiSettings:
    return current_app.config["API_SETTINGS"]


def warehouse() -> Settings:
    """The ELT's settings: the landing bucket, the contracts, the ledger's database (tests pass their own)."""
    return current_app.config.get("ELT_SETTINGS") or get_settings()


def families() -> dict[str, Family]:
    """The source families (elt/families): a drop of one of a family's drop types is loaded by its ingest DAG
    (`conf {"key": ...}`), which also runs by itself at the family's `daily_at`; other drop types load with
    `elt ingest`. Read on each use, like the contracts (a few small files), so that a changed declaration needs no
    restart; an unreadable one leaves no DAG to route to."""
    try:
        return declared_families(warehouse())
    except (FamilyError, ContractError) as exc:
        log.error("the source families cannot be read, so no drop is routed to an ingest DAG: %s", exc)
        return {}


def _ingest_dags() -> tuple[str, ...]:
    return tuple(family.ingest_dag_id for family in families().values())


def _store() -> ObjectStore:
    if "landing_store" not in current_app.extensions:  # one boto3 client per process: it is thread-safe
        current_app.extensions["landing_store"] = ObjectStore(warehouse())
    return current_app.extensions["landing_store"]


def fetch_policy(settings: ApiSettings) -> FetchPolicy:
    """The fetch policy from the settings (tests put one of their own in app.config["FETCH_POLICY"])."""
    return current_app.config.get("FETCH_POLICY") or FetchPolicy(
        allowed_hosts=tuple(h.strip().lower() for h in settings.fetch_allowed_hosts.split(",") if h.strip()),
        max_bytes=settings.upload_max_bytes, timeout_seconds=settings.fetch_timeout_seconds)


def extensions(contract: Contract) -> tuple[str, ...]:
    """File extensions a drop type reads, as its reader says: CSV for a CSV contract; .xlsx and .xls alike for a
    workbook (python-calamine reads both)."""
    return reader_for(contract).extensions


def safe_name(name: str) -> str:
    """The base name of an uploaded file, reduced to letters, digits, `.`, `_` and `-` (no folders, no leading
    dot: nothing that could climb out of the landing prefix or hide from the loader)."""
    return secure_filename(re.split(r"[/\\]", name or "")[-1])[:200]


# --- the one path of both drops ----------------------------------------------------------------------------
def _upload_key(contract: Contract, file_name: str, given: Mapping[str, Any]) -> str:
    """Where the drop is stored: the contract's upload fields (a claims batch's payer and month) from what the
    request gave fill its folders; a 400 naming the field and what it takes (never the value) when one is missing
    or wrong."""
    try:
        return contract.landing.upload_key(file_name, given)
    except UploadFieldError as exc:
        raise ApiError(400, "missing_field" if exc.missing else "invalid_field", f"{contract.drop_type} drops: {exc}",
                       field=exc.field) from None


def _checked_file(contract: Contract, name: str, data: bytes, settings: ApiSettings) -> tuple[str, str]:
    """The drop's safe file name and its extension, once its name, extension, size and content type fit the contract (else an
    ApiError saying what to send instead)."""
    drop_type, allowed = contract.drop_type, extensions(contract)
    file_name = safe_name(name)
    if not file_name:
        raise ApiError(400, "missing_file_name", f"the file has no usable name: give it one ending "
                                                 f"{' or '.join('.' + e for e in allowed)}")
    extension = file_name.rsplit(".", 1)[1].lower() if "." in file_name else ""
    if extension not in allowed:
        raise ApiError(415, "unsupported_extension",
                       f"{drop_type} drops are {' or '.join('.' + e for e in allowed)} files; {file_name} is "
                       + (f".{extension}" if extension else "without an extension")
                       + ": send the file in that format, or choose the drop type it belongs to",
                       allowed=[f".{e}" for e in allowed])
    if len(data) > settings.upload_max_bytes:
        raise ApiError(413, "too_large", f"{file_name} is {len(data):,} bytes; the limit is "
                                         f"{settings.upload_max_bytes:,} (API_UPLOAD_MAX_BYTES): drop it in the "
                                         f"bucket instead (`./start.sh elt put FILE`)")
    try:
        check_content(extension, data)
    except FileRejected as exc:
        raise ApiError(400 if exc.rule == "empty_file" else 415, exc.rule, f"{file_name}: {exc.message}") from None
    return file_name, extension


def accept(drop_type: Any, name: str, data: bytes, caller: Caller, *, origin: str,
           fields: Mapping[str, Any] | None = None) -> Response:
    """Check, store, register and start the load of one drop; the 202 answer, or an ApiError saying why not.
    `fields`: what the request gave beside the file (the contract's upload fields are read from it)."""
    settings, elt_settings = _settings(), warehouse()
    contracts = load_contracts(elt_settings.contracts_dir)
    if not isinstance(drop_type, str) or drop_type not in contracts:
        shown = f"unknown drop type {drop_type!r}" if drop_type else "no drop_type given"
        raise ApiError(400, "unknown_drop_type", f"{shown}: send drop_type, one of {', '.join(sorted(contracts))}",
                       allowed=sorted(contracts))
    contract = contracts[drop_type]
    _may_drop(contract, caller, contract.drop_role, "")
    file_name, extension = _checked_file(contract, name, data, settings)
    key = _upload_key(contract, file_name, fields or {})
    matching = [c.drop_type for c in contracts.values() if c.matches(key)]
    if matching != [drop_type]:
        others = f" (it would also be read as {', '.join(m for m in matching if m != drop_type)})" if len(matching) > 1 else ""
        raise ApiError(400, "name_not_accepted",
                       f"{drop_type} does not take a file named {file_name}{others}: its names under "
                       f"{contract.landing.prefix} must match {contract.landing.key_pattern}; rename the file",
                       key_pattern=contract.landing.key_pattern)
    store = _store()
    try:
        waiting = store.head(key)
    except (BotoCoreError, ClientError) as exc:
        raise _storage_unavailable(exc) from None
    if waiting is not None:
        raise ApiError(409, "already_waiting",
                       f"{key} already waits to be loaded (since {waiting.last_modified:%Y-%m-%d %H:%M} UTC); it is "
                       f"never overwritten: wait until it has been loaded, or send this file under another name")
    try:
        period = check_drop(contract, data, file_name, limits=elt_settings.workbook_limits()) or _key_period(contract, key)
    except FileRejected as exc:
        raise ApiError(422, "contract_violation", f"{file_name} breaks the {drop_type} contract: {exc.message}",
                       rule=exc.rule) from None

    sha256 = hashlib.sha256(data).hexdigest()
    twin = _loaded_twin(drop_type, sha256)
    if twin is not None:  # the same bytes again: nothing new to load, nothing stored
        return _already_loaded(twin, key, drop_type, file_name, data, sha256)
    if contract.revision_role and period is not None:
        loaded = _loaded_for_period(drop_type, period)
        if loaded is not None:
            _may_drop(contract, caller, contract.role_to_drop(replaces_loaded_period=True),
                      f" to replace the loaded file {loaded} for {period[0]:%Y-%m-%d} to {period[1]:%Y-%m-%d} (a "
                      f"revision supersedes the figures served for that period)")
    try:
        # Atomic: of two drops racing past the check above, S3 stores one and refuses the other.
        store.put(key, data, content_type=CONTENT_TYPES[extension], only_if_absent=True)
    except ObjectExists:
        raise ApiError(409, "already_waiting", f"{key} was stored by another drop a moment ago; it is never "
                       "overwritten: wait until it has been loaded, or send this file under another name") from None
    except (BotoCoreError, ClientError) as exc:
        raise _storage_unavailable(exc) from None
    log.info("drop %s (%s, %d bytes, sha256 %s) stored by API key %d from %s", key, drop_type, len(data), sha256,
             caller.key_id, origin)
    warnings: list[str] = []
    drop_id = _register(key, elt_settings, warnings)
    family = family_of(families(), drop_type)
    dag_id = family.ingest_dag_id if family else None
    run_id = None
    stored = f"{file_name} is stored as {key}" + (f" (drop {drop_id})" if drop_id is not None else "")
    if family is None:
        message = (f"{stored}. {drop_type} drops belong to no source family (elt/families), so no ingest DAG loads "
                   f"them: it loads with `elt ingest --drop-type {drop_type}` (or `--key {key}`)")
    else:
        run_id = _trigger(family, key, drop_id, caller, warnings)
        message = (f"{stored}; {dag_id} run {run_id} loads it: follow it at /api/v1/runs/{run_id}" if run_id
                   else f"{stored}; it waits for the next {dag_id} run")
    body = {
        "drop_id": drop_id, "key": key, "drop_type": drop_type, "file_name": file_name, "size_bytes": len(data),
        "sha256": sha256, "dag_id": dag_id, "run_id": run_id,
        "status_url": f"/api/v1/runs/{run_id}" if run_id else None,
        "message": message, "warning": " ".join(warnings) or None,
    }
    response = jsonify(body)
    response.status_code = 202
    if run_id:
        response.headers["Location"] = body["status_url"]
    return response


def _may_drop(contract: Contract, caller: Caller, role: str, why: str) -> None:
    """403 unless the caller has `role` (or above): the contract's drop_role, or its revision_role (`why`)."""
    if not has_role(caller, role):
        raise ApiError(403, "forbidden", f"{contract.drop_type} drops{why} need the {role} role (or above), as its "
                                         f"contract declares; this key has {caller.role}", required_role=role)


def _key_period(contract: Contract, key: str) -> tuple[Any, Any] | None:
    """The period the key names, for a contract whose newer files supersede older ones by it (revision_role)."""
    if not contract.revision_role or reader_for(contract).states_period:
        return None
    period = reporting_period(contract, StoredObject("", key, "", 0, datetime.now(UTC)))
    return period if period[0] is not None else None


def _loaded_for_period(drop_type: str, period: tuple[Any, Any]) -> int | None:
    """The loaded file of this drop type that reports on exactly this period, if any."""
    conn = connection()
    file_id = conn.execute(text(
        "select file_id from ops.file_ledger where drop_type = :drop_type and status = 'loaded' "
        "and period_start = :start and period_end = :end order by file_id desc limit 1"),
        {"drop_type": drop_type, "start": period[0], "end": period[1]}).scalar()
    conn.rollback()
    return file_id


def _loaded_twin(drop_type: str, sha256: str) -> dict[str, Any] | None:
    """The loaded ledger row holding exactly these bytes for this drop type, if any (the loader's duplicate rule)."""
    conn = connection()
    row = conn.execute(text(
        "select file_id, key, finished_at from ops.file_ledger where drop_type = :drop_type and sha256 = :sha256 "
        "and status = 'loaded' order by file_id desc limit 1"),
        {"drop_type": drop_type, "sha256": sha256}).mappings().one_or_none()
    conn.rollback()
    return dict(row) if row else None


def _already_loaded(twin: dict[str, Any], key: str, drop_type: str, file_name: str, data: bytes,
                    sha256: str) -> Response:
    loaded_at = twin["finished_at"].isoformat() if twin["finished_at"] else "earlier"
    return jsonify({
        "drop_id": twin["file_id"], "key": twin["key"], "drop_type": drop_type, "file_name": file_name,
        "size_bytes": len(data), "sha256": sha256, "dag_id": None, "run_id": None, "status_url": None,
        "message": f"{file_name} holds the same bytes as drop {twin['file_id']} ({twin['key']}), loaded {loaded_at}: "
                   "nothing new to load, so nothing was stored. Its figures are already served; a revised "
                   "file (other bytes) loads as a new drop.",
        "warning": None,
    })


def _storage_unavailable(exc: Exception) -> ApiError:
    log.error("landing bucket unavailable: %s", type(exc).__name__)
    return ApiError(503, "storage_unavailable", "the landing bucket did not answer, so nothing was stored; send the "
                                                "file again shortly")


def _register(key: str, elt_settings: Settings, warnings: list[str]) -> int | None:
    """The file's ledger id. The file is stored already: a ledger that cannot be written now is a warning (the
    next run registers the file when it finds it), not a failure that would make the sender drop it again."""
    try:
        return register_landed(key, settings=elt_settings.model_copy(update={"database_url": _settings().drops_url()}))
    except (psycopg.Error, BotoCoreError, ClientError) as exc:
        log.error("drop %s stored but not registered in the ledger: %s", key, type(exc).__name__)
        warnings.append("The file ledger could not be written just now, so there is no drop id yet; the file is "
                        "stored and the next ingest run registers and loads it.")
        return None


def _trigger(family: Family, key: str, drop_id: int | None, caller: Caller, warnings: list[str]) -> str | None:
    """Start the family's ingest DAG for this key; None (and a warning) when Airflow cannot be reached or refuses."""
    dag_id = family.ingest_dag_id
    run_id = f"api_drop_{drop_id if drop_id is not None else 'new'}_{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    _record_run(dag_id, run_id, key, drop_id, caller, warnings)
    note = f"Dropped through the API by key {caller.key_id}: {key}" + (f" (ledger file {drop_id})" if drop_id else "")
    try:
        run = current_app.extensions["airflow"].trigger(dag_id, {"key": key}, run_id=run_id, note=note)
    except AirflowError as exc:
        log.warning("drop %s stored; %s not triggered: %s", key, dag_id, exc.message)
        warnings.append(f"Airflow could not start {dag_id} ({exc.message}). The file is stored and waits: the next "
                        f"scheduled run ({family.schedule_text()}) loads it, or trigger {dag_id} in the Airflow UI with key {key}.")
        return None
    return run.get("dag_run_id") or run_id


def _record_run(dag_id: str, run_id: str, key: str, drop_id: int | None, caller: Caller, warnings: list[str]) -> None:
    """Who starts this run (before it is asked of Airflow): GET /runs/<run_id> shows it to that key and admins."""
    conn = connection()
    conn.rollback()
    try:
        with conn.begin():
            conn.execute(text("set transaction read write"))  # the API's connections default to read only
            conn.execute(text("insert into ops.api_runs (dag_id, run_id, key_id, object_key, file_id) "
                              "values (:dag_id, :run_id, :key_id, :key, :file_id)"),
                         {"dag_id": dag_id, "run_id": run_id, "key_id": caller.key_id, "key": key, "file_id": drop_id})
    except SQLAlchemyError as exc:
        log.error("run %s of %s for %s: not recorded as started by key %d: %s", run_id, dag_id, key, caller.key_id,
                  type(getattr(exc, "orig", exc)).__name__)
        warnings.append("The run could not be recorded as yours just now, so only an admin can follow it at its "
                        "status_url; the file loads all the same.")


def _runs_visible_to(caller: Caller, run_id: str) -> tuple[Family, ...]:
    """The families whose ingest DAG's run `run_id` the caller may see: every one for admins, else those it started."""
    declared = tuple(families().values())
    if has_role(caller, "admin"):
        return declared
    conn = connection()
    started = set(conn.execute(text("select dag_id from ops.api_runs where run_id = :run_id and key_id = :key_id"),
                               {"run_id": run_id, "key_id": caller.key_id}).scalars())
    conn.rollback()
    return tuple(family for family in declared if family.ingest_dag_id in started)


# --- the endpoints --------------------------------------------------------------------------------------------
@bp.post("/drops")
def upload():
    caller = require(ROLES[0])  # any key; the drop type's contract says which role may drop it (accept)
    try:
        upload = request.files.get("file")
        drop_type = request.form.get("drop_type")
    except RequestEntityTooLarge:
        limit = _settings().upload_max_bytes
        raise ApiError(413, "too_large", f"the upload is larger than the limit of {limit:,} bytes "
                                         f"(API_UPLOAD_MAX_BYTES): drop it in the bucket instead "
                                         f"(`./start.sh elt put FILE`)") from None
    if upload is None:
        raise ApiError(400, "missing_file", "send the file as the multipart form field `file` (curl: -F "
                                            "file=@NAME.xlsx) and its drop type as `drop_type` (-F drop_type=TYPE)")
    data = upload.stream.read(_settings().upload_max_bytes + 1)
    return accept(drop_type, upload.filename or "", data, caller, origin="upload", fields=request.form)


class FromUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    drop_type: str = Field(min_length=1, max_length=100)
    name: str | None = Field(None, max_length=200, description="File name to store it under, when the URL's "
                                                               "path does not end in one.")
    fields: dict[str, str] = Field(default_factory=dict, max_length=10, description="The drop type's upload "
                                   "fields (a claims batch's payer and month).")


FETCH_HINTS = {
    "host_not_allowed": "download the file and upload it with POST /api/v1/drops, or ask an operator to add the "
                        "host to API_FETCH_ALLOWED_HOSTS",
    "scheme_not_allowed": "use the https:// address of the file",
    "private_address": "only public servers can be fetched from; upload the file with POST /api/v1/drops",
    "too_large": "drop it in the bucket instead (`./start.sh elt put FILE`)",
    "fetch_failed": "check that the URL opens in a browser, then try again",
    "too_many_redirects": "use the address the file finally downloads from",
    "unresolvable_host": "check the URL",
    "invalid_url": "check the URL (a port is 1 to 65535)",
    "fetch_timeout": "the server is too slow: download the file and upload it with POST /api/v1/drops",
}


@bp.post("/drops/from-url")
def upload_from_url():
    caller = require(ROLES[0])  # any key; the drop type's contract says which role may drop it (accept)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", 'send JSON: {"url": "https://...", "drop_type": "..."}',
                       allowed=sorted(FromUrl.model_fields))
    try:
        body = FromUrl.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, "invalid_body", f"{where}: {first['msg']}", allowed=sorted(FromUrl.model_fields)) from None
    try:
        fetched = fetch(body.url, fetch_policy(_settings()))
    except FetchRefused as exc:
        hint = FETCH_HINTS.get(exc.code)
        raise ApiError(exc.status, exc.code, exc.message + (f": {hint}" if hint else "")) from None
    # Named after where the file ended up (a redirect's target), unless only the URL given has an extension.
    names = [n for n in (_name_from_url(fetched.url), _name_from_url(body.url)) if n]
    name = body.name or next((n for n in names if "." in n), names[0] if names else "")
    return accept(body.drop_type, name, fetched.data, caller, origin=_without_query(fetched.url), fields=body.fields)


def _name_from_url(url: str) -> str:
    return posixpath.basename(unquote(urlsplit(url).path))


def _without_query(url: str) -> str:
    """For the log: a query string may carry a signature or a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@bp.get("/runs/<run_id>")
def run_state(run_id: str):
    caller = require(ROLES[0])
    if not RUN_ID.fullmatch(run_id):
        raise ApiError(400, "invalid_run_id", "a run id is letters, digits and _ . ~ : + - (the `run_id` a drop "
                                              "answered with)")
    client: AirflowClient = current_app.extensions["airflow"]
    # A run someone else started is answered exactly like one that does not exist: its existence is not told.
    for family in _runs_visible_to(caller, run_id):
        try:
            run = client.get_run(family.ingest_dag_id, run_id)
        except AirflowError as exc:
            log.warning("run %s: Airflow did not answer: %s", run_id, exc.message)
            raise ApiError(503, "airflow_unavailable", f"Airflow did not answer ({exc.message}); try again shortly. "
                                                       "A dropped file is stored whatever Airflow does.") from None
        if run is not None:
            return jsonify(_run_answer(client, family, run_id, run))
    raise ApiError(404, "run_not_found", f"no run {run_id} of {' or '.join(_ingest_dags())} that this key may "
                                         "see: use the run_id your drop answered with (admins see every run)")


def _run_answer(client: AirflowClient, family: Family, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
    key = (run.get("conf") or {}).get("key")
    run_id, state = run.get("dag_run_id", run_id), run.get("state")
    marts, message = _marts_run(client, family, run_id, state)
    return {"run_id": run_id, "dag_id": family.ingest_dag_id, "state": state, "run_type": run.get("run_type"),
            "queued_at": run.get("queued_at"), "start_date": run.get("start_date"), "end_date": run.get("end_date"),
            "key": key, "note": run.get("note"), "drop": _drop(key), "marts": marts, "message": message}


# Airflow's DagRunState values after which a run emits no more asset events.
FINISHED = frozenset({"success", "failed"})


def _marts_run(client: AirflowClient, family: Family, run_id: str,
               state: Any) -> tuple[dict[str, Any] | None, str]:
    """(`marts`, `message`): the run of the family's marts DAG that the ingest run's asset events started
    (proposal 0001 §4: `<family>_ingest` publishes `<family>_raw`, `<family>_marts` is scheduled on it). Airflow not
    answering here does not fail the answer: the ingest run's state is known, the marts run's is `unknown`."""
    marts_dag = family.marts_dag_id
    try:
        events = client.asset_events(family.ingest_dag_id, run_id)
    except AirflowError as exc:
        log.warning("run %s: Airflow did not say which %s run follows it: %s", run_id, marts_dag, exc.message)
        return ({"dag_id": marts_dag, "run_id": None, "state": "unknown"},
                f"Airflow did not say which {marts_dag} run builds the marts from this run ({exc.message}): the "
                "load's state above is current; ask again shortly for the marts.")
    if not events:
        if state in FINISHED:
            return None, (f"The run published no new raw data (no file was loaded), so no {marts_dag} run follows it: "
                          "the marts are as they were.")
        return None, (f"The run has not published yet: when it has loaded new raw data, {marts_dag} builds the marts "
                      "from it, and `marts` names that run.")
    marts = _latest_run_of(events, marts_dag)
    if marts is None:
        return ({"dag_id": marts_dag, "run_id": None, "state": "waiting"},
                f"The run published new raw data; {marts_dag} has not started a run for it yet (the scheduler starts "
                f"one within moments, unless {marts_dag} is paused).")
    return marts, (f"The run published new raw data; {marts_dag} run {marts['run_id']} builds the marts from it "
                   f"({marts['state']}).")


def _latest_run_of(events: list[Any], dag_id: str) -> dict[str, Any] | None:
    """The newest run of `dag_id` among the runs the events created: that of the newest event, and of those the one
    started last (one not started yet is the newest)."""
    runs = [(str(event.get("timestamp") or ""), run.get("start_date") is None, str(run.get("start_date") or ""), run)
            for event in events if isinstance(event, dict)
            for run in event.get("created_dagruns") or () if isinstance(run, dict) and run.get("dag_id") == dag_id]
    if not runs:
        return None
    *_, run = max(runs, key=lambda entry: entry[:3])
    return {"dag_id": dag_id, "run_id": run.get("run_id"), "state": run.get("state")}


def _drop(key: Any) -> dict[str, Any] | None:
    """The newest ledger row of the run's key: whether the file loaded, and why not."""
    if not isinstance(key, str) or not key:
        return None
    conn = connection()
    row = conn.execute(text(
        "select file_id, drop_type, status, rows_loaded, rows_rejected, error from ops.file_ledger "
        "where bucket = :bucket and key = :key order by file_id desc limit 1"),
        {"bucket": warehouse().s3_bucket, "key": key}).mappings().one_or_none()
    conn.rollback()
    if row is None:
        return None
    return {"drop_id": row["file_id"], "drop_type": row["drop_type"], "status": row["status"],
            "rows_loaded": row["rows_loaded"], "rows_rejected": row["rows_rejected"], "error": row["error"]}


# --- what /openapi.json says about these endpoints -------------------------------------------------------------
def _nullable(json_type: str, description: str, **more: Any) -> dict[str, Any]:
    return {"type": [json_type, "null"], "description": description, **more}


def drop_roles_text(contracts: dict[str, Contract]) -> str:
    """Who may drop what, from the contracts: one sentence for the OpenAPI document."""
    parts = [f"`{name}`: {c.drop_role}" + (f" ({c.revision_role} to replace a loaded period's file)"
                                           if c.revision_role and c.revision_role != c.drop_role else "")
             for name, c in sorted(contracts.items())]
    return ("Roles needed to drop (or above): " + "; ".join(parts) + ".") if parts else ""


def upload_field_schemas(contracts: dict[str, Contract]) -> dict[str, dict[str, Any]]:
    """The form fields some drop types need beside the file (`landing.upload_fields`), for the OpenAPI document."""
    fields: dict[str, dict[str, Any]] = {}
    for drop_type, contract in sorted(contracts.items()):
        for name, field in contract.landing.upload_fields.items():
            schema = fields.setdefault(name, {"type": "string", "description": ""})
            form = "YYYY-MM" if field.type == "month" else f"`{field.pattern}`"
            schema["description"] += (f"{' ' if schema['description'] else ''}Needed by `{drop_type}` drops "
                                      f"({form}): {field.description or field.type}")
    return fields


def openapi_operations(settings: ApiSettings) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(paths -> method -> operation, component schemas) of the drop and run endpoints."""
    try:
        contracts = load_contracts(warehouse().contracts_dir)
    except Exception:  # noqa: BLE001 - the document is still served when a contract is broken; uploads say why
        contracts = {}
    drop_types = sorted(contracts)
    fields = upload_field_schemas(contracts)
    role = f"Any key; the drop type's contract says which role may drop it. {drop_roles_text(contracts)}"
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    common = {
        "401": "No API key, or not a valid one",
        "403": "The key's role may not drop this drop type, or may not replace the file loaded for its period "
               "(`required_role` names the role needed)",
        "429": "Too many requests from this key (API_RATE_LIMIT), or too many failed authentications from this "
               "address (API_AUTH_FAILURE_LIMIT); Retry-After says when to try again",
        "500": "Unexpected error (logged; no detail is returned)",
    }
    drop_errors = {
        "400": "Unknown drop type (`allowed` lists them), no file, or a name the drop type does not take "
               "(`key_pattern` shows the names it takes)",
        "409": "A file already waits under that key: it is never overwritten",
        "413": f"Larger than API_UPLOAD_MAX_BYTES ({settings.upload_max_bytes:,} bytes)",
        "415": "An extension the drop type does not read, or content that is not what the extension says",
        "422": "The file breaks its contract (`rule` names the check; nothing was stored)",
        "503": "The landing bucket did not answer (nothing was stored)",
        **common,
    }
    accepted = {"200": {
        "description": "Already loaded: the same bytes were loaded before for this drop type (`drop_id` is that "
                       "file). Nothing is stored and no run is started.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DropAccepted"}}}}, "202": {
        "description": "Stored, registered and (for Medilink and NHS drops) its ingest run started. `run_id` is "
                       "null when its source system has no DAG, or when Airflow could not be reached (`warning` says "
                       "so: the file waits for the nightly run).",
        "headers": {"Location": {"description": "`status_url`, when a run was started.", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DropAccepted"}}}}}
    drop_type = {"type": "string", "description": "The contract the file is a drop of.",
                 **({"enum": drop_types} if drop_types else {})}
    tags, security = ["drops"], [{"bearerKey": []}, {"headerKey": []}]
    # Machine-readable beside the prose: drop type -> the least role that may drop it, and replace a loaded period.
    roles = {"x-drop-roles": {name: {"drop_role": c.drop_role, "revision_role": c.revision_role or c.drop_role}
                              for name, c in sorted(contracts.items())},
             # and drop type -> the form fields its uploads need beside the file (none for most)
             "x-drop-fields": {name: sorted(c.landing.upload_fields) for name, c in sorted(contracts.items())}}
    paths = {
        "/api/v1/drops": {"post": {
            "operationId": "upload_drop", "tags": tags, "security": security, **roles,
            "summary": "Drop a file (.csv, .xlsx, .xls) for a drop type: checked, stored, and its load started.",
            "description": f"{role} The file is checked before it is accepted (drop type, extension, content, size, "
                           "name, nothing waiting under the same key, the contract's file-level rules), stored under "
                           "the drop type's landing prefix under its own name, registered in the file ledger "
                           "(`drop_id`), and the ingest DAG of its source system is started for it. Follow the "
                           "load at `status_url`.",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "drop_type"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": "The file, under its own name (the name is kept)."},
                               "drop_type": drop_type, **fields}}}}},
            "responses": {**accepted, **{s: {"description": d, **error} for s, d in drop_errors.items()}},
        }},
        "/api/v1/drops/from-url": {"post": {
            "operationId": "drop_from_url", "tags": tags, "security": security, **roles,
            "summary": "Drop a file by its URL (from an allowed host): fetched, then as an upload.",
            "description": f"{role} The file is fetched over https from a host on API_FETCH_ALLOWED_HOSTS (public "
                           "addresses only; every redirect checked again; at most API_UPLOAD_MAX_BYTES), named after "
                           "the URL's last path segment (or `name`), then checked, stored, registered and loaded as "
                           "an upload is.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["url", "drop_type"], "additionalProperties": False,
                "properties": {"url": {"type": "string", "maxLength": 2000, "description": "https URL of the file."},
                               "drop_type": drop_type,
                               "name": {"type": ["string", "null"], "maxLength": 200,
                                        "description": "Name to store it under, when the URL does not end in one."},
                               "fields": {"type": "object", "properties": fields,
                                          "additionalProperties": {"type": "string"},
                                          "description": "The drop type's upload fields, as for an upload."}}}}}},
            "responses": {**accepted, **{s: {"description": d, **error} for s, d in {
                **drop_errors,
                "400": drop_errors["400"] + "; a body that is not the JSON described, or a URL refused before "
                                            "fetching (not a valid URL or port, host not allowed, not https, not a "
                                            "public address)",
                "502": "The server at the URL failed or answered an error",
                "504": "The whole fetch (redirects and body) took longer than API_FETCH_TIMEOUT_SECONDS"}.items()}},
        }},
        "/api/v1/runs/{run_id}": {"get": {
            "operationId": "get_run", "tags": tags, "security": security,
            "summary": "The state of an ingest run a drop started, what became of the file, and of the marts.",
            "description": "Any key: a run is shown to the key whose drop started it, and to admins (any other "
                           f"run is a 404). Asks Airflow for the run (of {', '.join(_ingest_dags())}); `drop` is the "
                           "file ledger's row for the run's key: `loaded`, or `quarantined`/`rejected` with the "
                           "reason in `error`; `marts` is the run of the family's marts DAG that the ingest run's "
                           "published data started (Airflow's asset events), whose `success` means the marts are "
                           "ready. When Airflow answers for the run but not for its asset events, the run is still "
                           "answered, with `marts.state` `unknown`.",
            "parameters": [{"name": "run_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": f"^{RUN_ID.pattern}$"},
                            "description": "`run_id` of a drop's answer."}],
            "responses": {
                "200": {"description": "The run.", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunState"}}}},
                **{s: {"description": d, **error} for s, d in {
                    "400": "Not a run id", "404": "No ingest DAG has a run with this id that this key may see",
                    **{status: text for status, text in common.items() if status != "403"},
                    "503": "Airflow did not answer"}.items()},
            },
        }},
    }
    schemas = {
        "DropAccepted": {"type": "object", "additionalProperties": False, "required": [
            "drop_id", "key", "drop_type", "file_name", "size_bytes", "sha256", "dag_id", "run_id", "status_url",
            "message", "warning"], "properties": {
            "drop_id": _nullable("integer", "The file's id in the file ledger (`GET /api/v1/drops`, `elt files`); "
                                            "null only when the ledger could not be written (see `warning`)."),
            "key": {"type": "string", "description": "Where the file is stored in the landing bucket."},
            "drop_type": {"type": "string"},
            "file_name": {"type": "string", "description": "The name it was stored under (the sent name, reduced "
                                                           "to letters, digits, `.`, `_` and `-`)."},
            "size_bytes": {"type": "integer"},
            "sha256": {"type": "string", "description": "Hex sha256 of the bytes stored."},
            "dag_id": _nullable("string", "The DAG that loads it; null when its source system has none."),
            "run_id": _nullable("string", "The run started for it; null when none was (see `message`, `warning`)."),
            "status_url": _nullable("string", "Where to follow the run."),
            "message": {"type": "string", "description": "What happened, and what happens next."},
            "warning": _nullable("string", "Something went wrong after the file was stored (it is not lost)."),
        }},
        "RunState": {"type": "object", "additionalProperties": False, "required": [
            "run_id", "dag_id", "state", "run_type", "queued_at", "start_date", "end_date", "key", "note", "drop",
            "marts", "message"],
            "properties": {
            "run_id": {"type": "string"},
            "dag_id": {"type": "string"},
            "state": _nullable("string", "Airflow's state: queued, running, success or failed."),
            "run_type": _nullable("string", "manual for a run a drop started; scheduled for the nightly run."),
            "queued_at": _nullable("string", "When the run was queued.", format="date-time"),
            "start_date": _nullable("string", "When it started.", format="date-time"),
            "end_date": _nullable("string", "When it ended.", format="date-time"),
            "key": _nullable("string", "The object key the run loads (conf `key`); null for a run of every file."),
            "note": _nullable("string", "Airflow's note on the run."),
            "drop": {"oneOf": [{"type": "null"}, {
                "type": "object", "additionalProperties": False,
                "required": ["drop_id", "drop_type", "status", "rows_loaded", "rows_rejected", "error"],
                "properties": {
                    "drop_id": {"type": "integer"}, "drop_type": {"type": "string"},
                    "status": {"type": "string", "description": "discovered, loading, loaded, rejected, "
                                                                "quarantined, duplicate or superseded."},
                    "rows_loaded": {"type": ["integer", "null"]}, "rows_rejected": {"type": ["integer", "null"]},
                    "error": _nullable("string", "Why the file did not load; null when it did.")}}],
                "description": "The file ledger's newest row for `key`: what became of the file."},
            "marts": {"oneOf": [{"type": "null"}, {
                "type": "object", "additionalProperties": False, "required": ["dag_id", "run_id", "state"],
                "properties": {
                    "dag_id": {"type": "string", "description": "The family's marts DAG (`<family>_marts`)."},
                    "run_id": _nullable("string", "The marts run; null while it is `waiting` or `unknown`."),
                    "state": {"type": "string", "description": "Airflow's state of the marts run (queued, running, "
                                                               "success, failed); `waiting`: the data is published "
                                                               "and the marts run not created yet; `unknown`: Airflow "
                                                               "did not answer when asked."}}}],
                "description": "The run that builds the marts from what this run loaded: the ingest run publishes "
                               "its family's raw asset and the marts DAG is scheduled on it, so the marts are ready "
                               "when this run's state is `success`. null while the ingest run has not published, or "
                               "when it published nothing (no new file loaded); `message` says which. With several, "
                               "the latest."},
            "message": {"type": "string", "description": "What `state` and `marts` mean, in words: whether the "
                                                         "marts are being built from this run, and by which run."},
        }},
    }
    return paths, schemas
