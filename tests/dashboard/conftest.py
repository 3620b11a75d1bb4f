"""Fixtures for the dashboard's tests: the real API served over HTTP on loopback (werkzeug's server in a thread, so the
dashboard talks to it exactly as it talks to a deployed API), over the warehouse the API tests build
(tests/backend/conftest.py: generated Medilink drops, two KH03 quarters and hand-made claims, through the real ingest
and dbt), and Streamlit's AppTest running the dashboard's own files."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from flask import Flask

from backend.app import create_app
from backend.dashboard.views import PAGES_DIR
from tests.backend.conftest import api_settings, keys, warehouse  # noqa: F401 - the API tests' session fixtures

APP = PAGES_DIR.parent / "app.py"


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` on a free loopback port, in a thread; its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def api_url(warehouse, dbt_manifest, login_passwords) -> Iterator[str]:  # noqa: F811 - the imported fixture
    """The API over the built warehouse, with pages of at most 50 rows: the dashboard has to follow cursors."""
    app = create_app(api_settings(warehouse.database_url, login_passwords, max_page_size=50, rate_limit="",
                                  auth_failure_limit=""))
    with serving(app) as url:
        yield url


@pytest.fixture
def fetch(api_url, keys) -> Callable[..., list[dict]]:  # noqa: F811
    """Every row of an API list as `role` reads it, straight from the API: what the tests compare the pages with."""

    def rows(path: str, role: str = "admin", **params) -> list[dict]:
        out, cursor = [], None
        while True:
            body = requests.get(api_url + path, params={**params, "limit": 50, **({"cursor": cursor} if cursor else {})},
                                headers={"Authorization": f"Bearer {keys[role]}"}, timeout=30).json()
            out += body["data"]
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                return out

    return rows


def dashboard(url: str, key: str | None, monkeypatch, page: str | None = None):
    """The dashboard against the API at `url`, with `key` pasted in the sidebar, run once (on `page`, a file name under
    pages/, when given)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DASHBOARD_API_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=120)
    if key is not None:
        at.session_state["api_key"] = key
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at
