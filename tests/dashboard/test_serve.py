"""How the dashboard is served (`python -m backend.dashboard`, as ./start.sh and the compose service start it):
headless, with Streamlit's usage statistics off, on the address and port of its settings, with an environment that
holds no credential, stopped by Ctrl-C; and its pages are the files of pages/, as views.py declares them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from backend.dashboard.__main__ import streamlit_options
from backend.dashboard.config import DashboardSettings
from backend.dashboard.views import PAGES_DIR, VIEWS
from elt.devstack.__main__ import dashboard_environment
from elt.devstack.servers import free_port


def test_the_pages_folder_holds_exactly_the_declared_pages():
    assert sorted(p.stem for p in PAGES_DIR.glob("*.py")) == sorted(v.file for v in VIEWS)
    assert len({v.url_path for v in VIEWS}) == len(VIEWS)


def test_streamlit_runs_headless_without_usage_statistics_on_the_configured_address():
    options = streamlit_options(DashboardSettings(port=8600, address="0.0.0.0"))
    assert options["browser.gatherUsageStats"] is False and options["server.headless"] is True
    assert (options["server.address"], options["server.port"]) == ("0.0.0.0", 8600)


def test_the_devstack_gives_the_dashboard_no_credentials():
    stack = {"PATH": "/bin", "DATABASE_URL": "postgresql://postgres:pw@h/warehouse", "API_DB_PASSWORD": "x",
             "BI_DB_PASSWORD": "x", "AWS_SECRET_ACCESS_KEY": "x", "AIRFLOW_ADMIN_PASSWORD": "x",
             "AIRFLOW__API_AUTH__JWT_SECRET": "x", "DASHBOARD_MAX_ROWS": "50"}
    assert dashboard_environment(stack) == {"PATH": "/bin", "DASHBOARD_MAX_ROWS": "50"}


def test_the_served_dashboard_answers_on_its_port_and_stops_on_ctrl_c(api_url, tmp_path):
    port = free_port()
    env = {**dashboard_environment(dict(os.environ)), "DASHBOARD_PORT": str(port), "DASHBOARD_API_URL": api_url,
           "HOME": str(tmp_path)}
    with (tmp_path / "dashboard.log").open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "backend.dashboard"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=PAGES_DIR.parents[2])
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as answer:
                    assert answer.read() == b"ok"
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "dashboard.log").read_text()[-2000:]
                time.sleep(0.2)
        else:
            raise AssertionError("the dashboard did not answer: " + (tmp_path / "dashboard.log").read_text()[-2000:])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert b"<html" in page.read().lower()
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=60)
    assert code == 0, (tmp_path / "dashboard.log").read_text()[-2000:]
