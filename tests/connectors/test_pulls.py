"""The engine's side of a pull: the cursor comes from the last succeeded pull, `since` and `full_reload` override it,
a failed pull keeps the cursor where the last good one left it, and a pull of personal data is audited. The source is
a test kind (tests/connectors/fake_sources/counter.py), found by the same package scan as the real ones."""

from __future__ import annotations

import pytest

from elt.connectors import spec
from elt.connectors.base import ConnectorError
from elt.connectors.engine import RunOptions, run_connector
from tests.connectors.fake_sources import counter


@pytest.fixture
def counter_kind(monkeypatch):
    monkeypatch.setitem(spec.PACKAGES, "source", "tests.connectors.fake_sources")
    spec.kinds.cache_clear()
    spec._connector_model.cache_clear()
    counter.SEEN.clear()
    yield
    spec.kinds.cache_clear()
    spec._connector_model.cache_clear()


def _pull(declare, upto: int, fail_after: int | None = None, personal: bool = False) -> None:
    fail = f", fail_after: {fail_after}" if fail_after is not None else ""
    drop_type = "medilink_patients" if personal else "nhs_kh03_overnight"
    declare("numbers", f"description: Numbers.\npersonal_data: {str(personal).lower()}\n"
                       f"pull: {{from: {{kind: counter, upto: {upto}{fail}}}, drop_type: {drop_type}}}\n")


def test_each_pull_starts_where_the_last_good_one_ended(counter_kind, connectors, db):
    settings, declare = connectors
    _pull(declare, upto=5)
    first = run_connector("numbers", settings=settings)
    assert (first.status, first.rows, first.cursor_before, first.cursor_after) == ("succeeded", 5, None, "5")
    _pull(declare, upto=8)
    assert run_connector("numbers", settings=settings).rows == 3  # 6, 7, 8

    _pull(declare, upto=12, fail_after=9)
    with pytest.raises(ConnectorError):
        run_connector("numbers", settings=settings)
    _pull(declare, upto=12)
    resumed = run_connector("numbers", settings=settings)
    assert (resumed.cursor_before, resumed.rows) == ("8", 4)  # from the last good pull, not the failed one

    assert run_connector("numbers", RunOptions(since="10"), settings=settings).rows == 2
    assert run_connector("numbers", RunOptions(full_reload=True), settings=settings).rows == 12
    assert run_connector("numbers", RunOptions(dry_run=True), settings=settings).cursor_after == "12"
    assert [cursor for _, cursor, _ in counter.SEEN] == [None, "5", "8", "8", "10", None, "12"]
    assert {drop_type for _, _, drop_type in counter.SEEN} == {"nhs_kh03_overnight"}
    records = db.execute("select status, cursor_before, cursor_after, direction from ops.connector_runs "
                         "order by run_id").fetchall()
    assert [r[0] for r in records] == ["succeeded", "succeeded", "failed", "succeeded", "succeeded", "succeeded",
                                       "succeeded"]
    assert records[2][1:3] == ("8", None) and {r[3] for r in records} == {"pull"}


def test_a_dry_run_does_not_move_the_cursor(counter_kind, connectors):
    settings, declare = connectors
    _pull(declare, upto=3)
    run_connector("numbers", settings=settings)
    _pull(declare, upto=6)
    dry = run_connector("numbers", RunOptions(dry_run=True), settings=settings)
    assert (dry.rows, dry.cursor_after) == (3, "3")
    assert run_connector("numbers", settings=settings).cursor_before == "3"


def test_a_pull_of_personal_data_must_say_so_and_is_audited(counter_kind, connectors, db):
    settings, declare = connectors
    declare("numbers", "description: x\npull: {from: {kind: counter, upto: 2}, drop_type: medilink_patients}\n")
    with pytest.raises(spec.ConnectorSpecError, match="personal_data: must be true: its drop type medilink_patients"):
        run_connector("numbers", settings=settings)
    _pull(declare, upto=2, personal=True)
    outcome = run_connector("numbers", settings=settings)
    (audit,) = db.execute("select role, method, endpoint, params->>'run_key' from ops.api_audit").fetchall()
    assert audit == ("connector", "PULL", "connector:numbers", outcome.run_key)
