"""The dashboard's pages against the real API and marts (tests/dashboard/conftest.py): every page renders for a key
that may read it, the figures it shows are the API's (fetched here from the API itself), its filters are the API's
and change what is shown, a key sees only the pages its role may read, and errors say what happened."""

from __future__ import annotations

import pytest

from backend.dashboard.views import VIEWS
from tests.dashboard.conftest import dashboard


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def frame(at, key: str):
    """The dataframe the page shows under `key`."""
    return next(d for d in at.dataframe if d.key == key).value if any(d.key == key for d in at.dataframe) else None


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.file)
def test_every_page_renders_for_an_admin_with_demo_data(api_url, keys, monkeypatch, view):
    at = dashboard(api_url, keys["admin"], monkeypatch, view.file)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)
    assert at.title[0].value == view.title
    if view.reads:
        assert at.dataframe or at.metric, f"{view.file} shows no figures"
        assert any("as of 20" in c.value for c in at.caption), "no section says when its mart was built"
