"""The dashboard's only way to the data: the API over HTTP, with the user's key. Every answer that is not the data
becomes an `ApiProblem` that says what happened (the API down, the key refused, a role too low, a mart not built) in
the API's own words: the API's messages never hold a row's values, so neither does the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

ROLES_FALLBACK = ("analyst", "clinician", "admin")


@dataclass
class ApiProblem(Exception):
    """kind: `unreachable` (no answer), `key` (401), `forbidden` (403), `not_built` (503 not_built), `refused`
    (another 4xx: the request was wrong, e.g. a drop breaking its contract) or `error` (another 5xx)."""
    kind: str
    status: int | None
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class Rows:
    """The rows of one list endpoint for some filters, read page by page up to `max_rows`, with the meta of the
    first page: when the mart was built and from which ledger files."""
    rows: list[dict[str, Any]]
    total: int | None
    total_is_exact: bool
    as_of: str | None
    sources: list[int]
    source_table: str
    truncated: bool


def problem_of(response: requests.Response) -> ApiProblem:
    try:
        error = response.json()["error"]
        code, message = str(error.get("code", "error")), str(error.get("message", ""))
        details = {k: v for k, v in error.items() if k not in ("status", "code", "message")}
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, details = "error", f"the API answered {response.status_code} without its error envelope", {}
    status = response.status_code
    if status == 401:
        kind = "key"
    elif status == 403:
        kind = "forbidden"
    elif status == 503 and code == "not_built":
        kind = "not_built"
    elif 400 <= status < 500:
        kind = "refused"
    else:
        kind = "error"
    return ApiProblem(kind, status, code, message, details)


class Api:
    def __init__(self, base_url: str, key: str | None, timeout: float = 30, max_rows: int = 10_000) -> None:
        self.base_url, self.key, self.timeout, self.max_rows = base_url.rstrip("/"), key, timeout, max_rows
        self.http = requests.Session()
        if key:
            self.http.headers["Authorization"] = f"Bearer {key}"

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        try:
            response = self.http.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiProblem("unreachable", None, "api_unreachable",
                             f"the API at {self.base_url} did not answer ({type(exc).__name__})") from None
        if response.status_code not in ok:
            raise problem_of(response)
        return response

    # --- what the API says about itself and the caller --------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/whoami").json()

    def spec(self) -> dict[str, Any]:
        return self._call("GET", "/openapi.json").json()

    def ready(self) -> dict[str, Any]:
        """/ready's body, whether it says ready (200) or not (503: a nightly mart never built)."""
        return self._call("GET", "/ready", ok=(200, 503)).json()

    # --- the marts -----------------------------------------------------------------------------------------------
    def rows(self, path: str, params: dict[str, Any], page_size: int) -> Rows:
        """Every row matching `params` up to max_rows, following `meta.next_cursor`."""
        query = {k: v for k, v in params.items() if v is not None}
        rows: list[dict[str, Any]] = []
        first: dict[str, Any] | None = None
        cursor = None
        while True:
            limit = max(1, min(page_size, self.max_rows - len(rows)))
            body = self._call("GET", path, params={**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
                              ).json()
            first = first or body["meta"]
            rows += body["data"]
            cursor = body["meta"]["next_cursor"]
            if cursor is None or len(rows) >= self.max_rows:
                break
        return Rows(rows, first["total"], first["total_is_exact"], first["as_of"], list(first["sources"]),
                    first.get("source_table", ""), cursor is not None)

    def csv(self, path: str, params: dict[str, Any]) -> bytes:
        """The API's own CSV of the same rows (all of them: no limit)."""
        query = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", path, params={**query, "format": "csv"}).content

    # --- drops and runs ----------------------------------------------------------------------------------------
    def drop(self, drop_type: str, name: str, data: bytes, fields: dict[str, str]) -> dict[str, Any]:
        form = {"drop_type": drop_type, **{k: v for k, v in fields.items() if v}}
        return self._call("POST", "/api/v1/drops", ok=(200, 202), data=form, files={"file": (name, data)}).json()

    def drop_from_url(self, drop_type: str, url: str, fields: dict[str, str]) -> dict[str, Any]:
        body = {"url": url, "drop_type": drop_type, "fields": {k: v for k, v in fields.items() if v}}
        return self._call("POST", "/api/v1/drops/from-url", ok=(200, 202), json=body).json()

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/runs/{quote(run_id, safe='')}").json()
