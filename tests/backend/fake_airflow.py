"""A loopback HTTP server that answers the calls backend/airflow_client.py makes the way Airflow 3.x's api-server
does (simple auth manager, REST API v2), and records every request so tests can say what was sent:

* `POST /auth/token` `{"username", "password"}` (nothing else: Airflow's LoginBody is strict) -> 201
  `{"access_token": <JWT with exp>}`, or 401 `{"detail": "Invalid credentials"}`;
* every `/api/v2/...` call without a token it issued (or after `revoke_tokens()`) -> 401 `{"detail": "Not
  authenticated"}`;
* `POST /api/v2/dags/{dag_id}/dagRuns` -> 200 DAGRunResponse (state `queued`); 404 for a DAG it does not
  know; 422 when the body is not a TriggerDAGRunPostBody (`logical_date` missing, unknown fields); 409 for a
  `dag_run_id` it has already;
* `GET /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}` -> 200 the run, 404 when that DAG has no such run;
* `GET /api/v2/assets/events` -> 200 AssetEventCollectionResponse of the events a test registered with `publish`
  (as a task with outlets does when it succeeds), filtered by `source_dag_id` and `source_run_id`, ordered by
  `order_by` (`timestamp` or `-timestamp`, Airflow's default `timestamp`) and cut at `limit` (default 50). A test
  makes that one call fail with `events_down` (the connection is closed unanswered) or `events_status` (an HTTP
  error, as Airflow 3.3.2 answers 500 while a run an event created has not started).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TRIGGER_FIELDS = {"dag_run_id", "data_interval_start", "data_interval_end", "logical_date", "run_after", "conf", "note",
                  "partition_key"}


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any


def make_token(subject: str, seconds: float) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"sub": subject, "exp": int(time.time() + seconds), "jti": f"{time.monotonic_ns()}"}
    return f"{part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.signature"


def _declared_ingest_dags() -> tuple[str, ...]:
    """The ingest DAGs Airflow would have: one per declared source family (elt/dag_factory.py)."""
    from elt.config import Settings
    from elt.families import declared_families

    return tuple(family.ingest_dag_id for family in declared_families(Settings()).values())


@dataclass
class FakeAirflow:
    dags: tuple[str, ...] = field(default_factory=_declared_ingest_dags)
    username: str = "admin"
    password: str = "admin"
    token_seconds: float = 86_400
    requests: list[Recorded] = field(default_factory=list)
    runs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    events_down: bool = False
    events_status: int | None = None

    def start(self) -> FakeAirflow:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def revoke_tokens(self) -> None:
        """As after an api-server restart with a new secret: every token issued so far is refused."""
        self.tokens.clear()

    def calls(self, method: str, path_start: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_start)]

    def triggers(self) -> list[Recorded]:
        return [r for r in self.calls("POST", "/api/v2/dags/") if r.path.endswith("/dagRuns")]

    def publish(self, source_dag_id: str, source_run_id: str, *, asset: str = "medilink_raw", timestamp: str,
                created: tuple[tuple[str, str, str], ...] = ()) -> dict[str, Any]:
        """Record the asset event a task of that run emitted at `timestamp`, with the runs it created as
        (dag_id, run_id, state); the event is returned, so a test can add a run the scheduler creates later."""
        event = {"id": len(self.events) + 1, "asset_id": 1, "uri": f"warehouse://raw/{asset.removesuffix('_raw')}",
                 "name": asset, "group": "asset", "extra": {}, "source_task_id": "publish",
                 "source_dag_id": source_dag_id, "source_run_id": source_run_id, "source_map_index": -1,
                 "created_dagruns": [], "timestamp": timestamp, "partition_key": None}
        for dag_id, run_id, state in created:
            self.created(event, dag_id, run_id, state)
        self.events.append(event)
        return event

    @staticmethod
    def created(event: dict[str, Any], dag_id: str, run_id: str, state: str,
                start_date: str | None = "2026-11-15T02:10:00Z") -> None:
        """A run of `dag_id` that consumed `event` (a DagRunAssetReference)."""
        event["created_dagruns"].append({
            "run_id": run_id, "dag_id": dag_id, "logical_date": None, "start_date": start_date, "end_date": None,
            "state": state, "data_interval_start": None, "data_interval_end": None, "partition_key": None,
            "triggering": True})

    def asset_event_calls(self) -> list[Recorded]:
        return self.calls("GET", "/api/v2/assets/events")

    # --- the api-server ----------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        authorization = handler.headers.get("Authorization")
        self.requests.append(Recorded(method, handler.path, authorization, body))
        if self.events_down and handler.path.startswith("/api/v2/assets/events"):
            handler.close_connection = True  # no answer at all: the client sees the connection closed
            return
        status, answer = self._answer(method, handler.path, authorization, body)
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(self, method: str, path: str, authorization: str | None, body: Any) -> tuple[int, Any]:
        if path == "/auth/token" and method == "POST":
            if not isinstance(body, dict) or set(body) != {"username", "password"}:
                return 422, {"detail": [{"loc": ["body"], "msg": "username and password only", "type": "value_error"}]}
            if (body["username"], body["password"]) != (self.username, self.password):
                return 401, {"detail": "Invalid credentials"}
            token = make_token(self.username, self.token_seconds)
            self.tokens.add(token)
            return 201, {"access_token": token}
        if not path.startswith("/api/v2/"):
            return 404, {"detail": "Not Found"}
        if not authorization or authorization.removeprefix("Bearer ") not in self.tokens:
            return 401, {"detail": "Not authenticated"}
        if urlsplit(path).path == "/api/v2/assets/events" and method == "GET":
            return self._asset_events(parse_qs(urlsplit(path).query))
        parts = [unquote(p) for p in path.split("?", 1)[0].split("/")[3:]]  # dags, {dag_id}, dagRuns[, {run_id}]
        if len(parts) < 3 or parts[0] != "dags" or parts[2] != "dagRuns":
            return 404, {"detail": "Not Found"}
        dag_id = parts[1]
        if len(parts) == 4 and method == "GET":
            run = self.runs.get((dag_id, parts[3]))
            if run is None:
                return 404, {"detail": f"The DagRun with dag_id: `{dag_id}` and run_id: `{parts[3]}` was not found"}
            return 200, run
        if len(parts) == 3 and method == "POST":
            if dag_id not in self.dags:
                return 404, {"detail": f"Dag with dag_id: '{dag_id}' not found"}
            if not isinstance(body, dict) or "logical_date" not in body or set(body) - TRIGGER_FIELDS:
                return 422, {"detail": [{"loc": ["body", "logical_date"], "msg": "Field required", "type": "missing"}]}
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            run_id = body.get("dag_run_id") or f"manual__{now}"
            if (dag_id, run_id) in self.runs:
                return 409, {"detail": f"DAG run {run_id} already exists"}
            run = {"dag_run_id": run_id, "dag_id": dag_id, "logical_date": body["logical_date"], "queued_at": now,
                   "start_date": None, "end_date": None, "duration": None, "data_interval_start": None,
                   "data_interval_end": None, "run_after": now, "last_scheduling_decision": None,
                   "run_type": "manual", "state": "queued", "triggered_by": "rest_api",
                   "triggering_user_name": self.username, "conf": body.get("conf") or {}, "note": body.get("note"),
                   "dag_versions": [], "bundle_version": None, "dag_display_name": dag_id, "partition_key": None,
                   "partition_date": None}
            self.runs[(dag_id, run_id)] = run
            return 200, run
        return 405, {"detail": "Method Not Allowed"}

    def _asset_events(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        if self.events_status:
            return self.events_status, {"detail": "Internal Server Error"}
        wanted = {name: query[name][-1] for name in ("source_dag_id", "source_run_id") if name in query}
        events = [e for e in self.events if all(e[name] == value for name, value in wanted.items())]
        order = query.get("order_by", ["timestamp"])[-1]
        if order.lstrip("-") != "timestamp":
            return 400, {"detail": f"Ordering with '{order}' is not allowed here"}
        events.sort(key=lambda e: e["timestamp"], reverse=order.startswith("-"))
        limit = int(query.get("limit", ["50"])[-1])
        return 200, {"asset_events": events[:limit], "total_entries": len(events)}
