"""`./start.sh screenshots` finds the dashboard's pages as Streamlit serves them and the API explorer where the API
serves it (no browser is started here)."""

from __future__ import annotations

import pytest

from backend.app import create_app
from backend.config import ApiSettings
from elt.devstack import screenshots


@pytest.fixture
def dashboard(tmp_path):
    """A dashboard folder as the dashboard branch lays it out: app.py and pages/<NN>_<slug>.py, plus files that are
    not pages."""
    (tmp_path / "app.py").write_text("import streamlit as st\n")
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("02_clinics.py", "01_bed_occupancy.py", "10_drop_a_file.py", "9_claims.py", "03_pipeline.py",
                 "__init__.py", "_helpers.py", "notes.txt"):
        (pages / name).write_text("import streamlit as st\n")
    return tmp_path


def test_every_page_in_streamlits_order_at_its_url(dashboard):
    shots = screenshots.dashboard_shots("http://127.0.0.1:8501/", dashboard / "pages", dashboard / "app.py")
    # Streamlit orders by the number (9 before 10) and serves each page at its name without the number.
    assert [(shot.name, shot.url, shot.file_name) for shot in shots] == [
        ("dashboard", "http://127.0.0.1:8501/", "dashboard.png"),
        ("dashboard-bed-occupancy", "http://127.0.0.1:8501/bed_occupancy", "dashboard-bed-occupancy.png"),
        ("dashboard-clinics", "http://127.0.0.1:8501/clinics", "dashboard-clinics.png"),
        ("dashboard-pipeline", "http://127.0.0.1:8501/pipeline", "dashboard-pipeline.png"),
        ("dashboard-claims", "http://127.0.0.1:8501/claims", "dashboard-claims.png"),
        ("dashboard-drop-a-file", "http://127.0.0.1:8501/drop_a_file", "dashboard-drop-a-file.png"),
    ]
    # The front page is taken as a new user first sees it (no key); each page with the key, the first being the
    # page the front shows once a key is given (Streamlit's navigation puts its first page at /).
    assert [(shot.takes_key, shot.default_page) for shot in shots] == [(False, False), (True, True)] + [(True, False)] * 4


def test_no_dashboard_yet_means_no_dashboard_pictures(tmp_path, dashboard):
    assert screenshots.dashboard_shots("http://x", tmp_path / "missing", tmp_path / "missing.py") == []
    only_front = screenshots.dashboard_shots("http://x", tmp_path / "missing", dashboard / "app.py")
    assert [shot.url for shot in only_front] == ["http://x/"]


def test_the_explorer_shot_is_at_the_path_the_api_serves():
    shot = screenshots.explorer_shot("http://127.0.0.1:5000/")
    assert (shot.url, shot.file_name, shot.takes_key) == ("http://127.0.0.1:5000/docs/explore", "api-explorer.png",
                                                          False)
    app = create_app(ApiSettings(database_url="postgresql://postgres@127.0.0.1:1/warehouse"))  # not connected to
    assert "/docs/explore" in {rule.rule for rule in app.url_map.iter_rules()}


def test_without_chromium_it_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.delenv("CHROMEDRIVER", raising=False)
    with pytest.raises(SystemExit, match="apt-get install -y chromium chromium-driver"):
        screenshots.find_browser()
