"""Airflow 3's REST API (v2), for the two things the API asks of it: start the ingest DAG for a file that was
just dropped, and say how that run is going, and how the marts run its published data started is going.

Airflow 3 authenticates its REST API with JWTs. With the simple auth manager (what ./start.sh runs) a token
comes from `POST {base}/auth/token` with `{"username", "password"}` (201 `{"access_token": "..."}`); calls
send it as `Authorization: Bearer <token>`. The token is kept until a minute before its `exp` claim
(`[api_auth] jwt_expiration_time`, a day by default) and fetched again once when a call answers 401 (the
api-server restarted with a new secret, or the token expired early).

* trigger: `POST /api/v2/dags/{dag_id}/dagRuns` with `TriggerDAGRunPostBody`. In 3.x `logical_date` is
  required but nullable: sent as null, so the run is a manual run "after now" and several may coexist.
* a run: `GET /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}` (404 when that DAG has no such run, or no such DAG).
* what a run published: `GET /api/v2/assets/events?source_dag_id=&source_run_id=` (AssetEventCollectionResponse),
  newest first; each event's `created_dagruns` are the runs of the DAGs scheduled on its asset that consumed it
  (empty until the scheduler has created them), each with its `dag_id`, `run_id` and `state`.

Failures raise AirflowUnavailable (no answer: connection refused, timeout) or AirflowRefused (an HTTP error,
with Airflow's own `detail`); the callers decide what a user is told.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

log = logging.getLogger(__name__)

TOKEN_MARGIN_SECONDS = 60  # fetch a new token this long before the current one expires
TOKEN_FALLBACK_SECONDS = 300  # how long to keep a token whose expiry cannot be read
# Asset events asked for per run: one run publishes one event per task with outlets that succeeded (a mapped task:
# one per map index), far fewer than this; the newest come first.
EVENTS_LIMIT = 100


class AirflowError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class AirflowUnavailable(AirflowError):
    """Airflow did not answer (not running, wrong address, too slow)."""


class AirflowRefused(AirflowError):
    """Airflow answered with an HTTP error: `status`, and its `detail` in the message."""


def token_expiry(token: str) -> float:
    """The `exp` claim of a JWT (not verified: the client only needs to know when to ask again)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return time.time() + TOKEN_FALLBACK_SECONDS


def _detail(response: urllib3.BaseHTTPResponse) -> str:
    """Airflow's (FastAPI's) `detail`, short: a string, or the first validation error's message."""
    try:
        detail = json.loads(response.data).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in detail[:3])
    text = detail if isinstance(detail, str) else response.data[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300] or f"HTTP {response.status}"


class AirflowClient:
    """One Airflow api-server, with the token shared by every request of this process."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._username, self._password = username, password
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_seconds), retries=False, maxsize=4)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    # --- the calls ---------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any], *, run_id: str | None = None,
                note: str | None = None) -> dict[str, Any]:
        """Start a manual run of `dag_id` with `conf`; Airflow's DAGRunResponse (`dag_run_id`, `state`, ...)."""
        body = {"logical_date": None, "conf": conf, "dag_run_id": run_id, "note": note}
        return self._call("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", body)[1]

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The run, or None when Airflow has no such run of that DAG (or no such DAG)."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        try:
            return self._call("GET", path)[1]
        except AirflowRefused as exc:
            if exc.status == 404:
                return None
            raise

    def asset_events(self, source_dag_id: str, source_run_id: str) -> list[dict[str, Any]]:
        """The asset events that run `source_run_id` of `source_dag_id` emitted, newest first (none: it published
        nothing, or not yet). Each is Airflow's AssetEventResponse; its `created_dagruns` are the runs it started."""
        query = urlencode({"source_dag_id": source_dag_id, "source_run_id": source_run_id, "order_by": "-timestamp",
                           "limit": EVENTS_LIMIT})
        events = self._call("GET", f"/api/v2/assets/events?{query}")[1].get("asset_events")
        if not isinstance(events, list):
            raise AirflowRefused("Airflow answered GET /api/v2/assets/events without a list of asset_events")
        return events

    # --- plumbing ----------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: Any = None, token: str | None = None) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._http.request(method, self.base_url + path, headers=headers,
                                      body=json.dumps(body).encode() if body is not None else None)
        except urllib3.exceptions.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow at {self.base_url} did not answer ({type(exc).__name__})") from exc

    def _new_token(self) -> str:
        response = self._send("POST", "/auth/token", {"username": self._username, "password": self._password})
        if response.status in (401, 403):
            raise AirflowRefused(f"Airflow at {self.base_url} refused the API's credentials (API_AIRFLOW_USER / "
                                 f"API_AIRFLOW_PASSWORD): {_detail(response)}", response.status)
        if response.status not in (200, 201):
            raise AirflowRefused(f"Airflow at {self.base_url} gave no token: HTTP {response.status}: "
                                 f"{_detail(response)}", response.status)
        try:
            token = json.loads(response.data)["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AirflowRefused(f"Airflow at {self.base_url} answered /auth/token without an access_token",
                                 response.status) from exc
        self._token, self._expires_at = token, token_expiry(token) - TOKEN_MARGIN_SECONDS
        return token

    def _current_token(self, stale: str | None = None) -> str:
        with self._lock:
            if self._token and self._token != stale and time.time() < self._expires_at:
                return self._token
            return self._new_token()

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        token = self._current_token()
        response = self._send(method, path, body, token)
        if response.status == 401:  # expired or from before an api-server restart: one new token, one retry
            response = self._send(method, path, body, self._current_token(stale=token))
        if response.status >= 400:
            raise AirflowRefused(f"Airflow answered {method} {path} with HTTP {response.status}: {_detail(response)}",
                                 response.status)
        try:
            return response.status, json.loads(response.data)
        except ValueError as exc:
            raise AirflowRefused(f"Airflow answered {method} {path} with something that is not JSON",
                                 response.status) from exc
