"""What the analyst role reads of the de-identified marts, built by real dbt from three weeks of generated drops:
no count of people or of their visits and records from 1 to SDC_THRESHOLD - 1 anywhere, in JSON or CSV, every
withheld figure marked; and the figures that are published are those worked out here from the drops' CSV bytes by
the documented rule (tests/medilink_figures.py, tests/disclosure.py), never read back from the warehouse."""

from __future__ import annotations

import csv
import io
import json

import pytest

from backend.api.catalogue import declared_catalogue
from elt.config import Settings
from elt.dbt_plan import in_paths
from elt.demo import generate_medilink_drops
from elt.families import declared_families
from tests.backend.conftest import WAREHOUSE_DROPS
from tests.disclosure import is_publishable
from tests.medilink_figures import (
    published_condition_analysis,
    published_facility_monthly,
    published_facility_performance,
    published_facility_stats,
    published_triage_trends,
)

# Lists an analyst reads that are built from the Medilink drops (person-level sources). The bed-occupancy lists
# are NHS England's published KH03 statistics of beds, not people: out of scope (docs/decisions/0011).
MEDILINK = {e.path: e.resource for e in declared_catalogue().endpoints if e.resource.role == "analyst"
            and "{" not in e.path and any(drop_type.startswith("medilink_") for drop_type in e.resource.drop_types)}
# Integer columns that count facilities or days, not people or events about people: published as they are.
NOT_PEOPLE = {"facility_count", "active_days", "visit_days"}


def _manifest(dbt_manifest) -> dict:
    return json.loads(dbt_manifest.read_text())


def counts_of_people(resource) -> set[str]:
    """The integer columns of an endpoint that count people or events about people."""
    return {column.name for column in resource.columns if column.type == "integer"} - NOT_PEOPLE


def controlled_columns(manifest: dict, table: str) -> set[str]:
    """The columns of `table` (schema.name) that carry dbt's `disclosure_controlled` data test."""
    models = {node["unique_id"]: f"{node['schema']}.{node['alias']}" for node in manifest["nodes"].values()
              if node["resource_type"] == "model"}
    return {node["column_name"] for node in manifest["nodes"].values()
            if node["resource_type"] == "test" and (node.get("test_metadata") or {}).get("name") == "disclosure_controlled"
            and models.get(node.get("attached_node")) == table}


def _rows(call, path: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        body = call(path, "analyst", query_string={"limit": 50, **({"cursor": cursor} if cursor else {})}).get_json()
        rows += body["data"]
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return rows


def test_every_count_of_people_in_a_mart_analysts_and_bi_read_is_controlled(dbt_manifest):
    manifest = _manifest(dbt_manifest)
    assert set(MEDILINK) == {"/api/v1/facilities", "/api/v1/analytics/facility-stats", "/api/v1/facility-monthly",
                             "/api/v1/triage-trends", "/api/v1/condition-analysis"}
    for resource in MEDILINK.values():
        assert controlled_columns(manifest, resource.table) == counts_of_people(resource), resource.table
    # bi_reader reads the whole analytics schema: every mart there but the KH03 bed marts controls its counts.
    beds = declared_families(Settings())["nhs_beds"]
    models = {f"analytics.{node['alias']}": node for node in manifest["nodes"].values()
              if node["resource_type"] == "model" and node["schema"] == "analytics"
              and not in_paths(node, beds.marts.dbt_paths)}
    claims = {table for table, node in models.items() if node["original_file_path"].startswith("models/analytics/claims/")}
    assert set(models) - claims == {resource.table for resource in MEDILINK.values()}
    # The claims marts: every bigint column of an aggregate mart is a count of claims, members or stays, and carries
    # the test; the claim-level marts (meta disclosure_control: claim_level) list claims.
    claim_level = {table for table in claims if models[table]["meta"].get("disclosure_control") == "claim_level"}
    assert claim_level == {"analytics.duplicate_claims", "analytics.claim_anomaly_scores"}
    for table in claims - claim_level:
        counts = {name for name, column in models[table]["columns"].items() if column["data_type"] == "bigint"}
        assert counts and controlled_columns(manifest, table) == counts, table
    assert all(controlled_columns(manifest, table) for table in set(models) - claim_level)


@pytest.mark.parametrize("path", sorted(MEDILINK))
def test_an_analyst_never_sees_a_count_below_the_threshold(call, path):
    resource = MEDILINK[path]
    controlled = counts_of_people(resource)
    assert controlled
    rows = _rows(call, path)
    assert rows
    for row in rows:
        assert all(is_publishable(row[column]) for column in controlled), row
        for column in controlled:  # a withheld count is marked, never a silent null or zero
            marker = row.get(f"is_{column}_suppressed")
            if marker is not None and column != "visit_count_prev_7d":  # that one is null, unmarked, before 14 days
                assert marker == (row[column] is None), (column, row)
        if "is_suppressed" in row:
            assert row["is_suppressed"] == (row["visit_count"] is None) == (row["patient_count"] is None), row

    response = call(path, "analyst", query_string={"format": "csv"})
    cells = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(cells) == len(rows)
    assert all(is_publishable(int(cell[column]) if cell[column] else None) for cell in cells for column in controlled)


def _by(rows: list[dict], *key: str) -> dict[tuple, dict]:
    return {tuple(row[k] for k in key) if len(key) > 1 else row[key[0]]: row for row in rows}


def _served(expected: dict, served: dict) -> dict:
    """The served rows, with only the columns the expected rows give."""
    columns = next(iter(expected.values()))
    return {key: {column: row[column] for column in columns} for key, row in served.items()}


def test_published_figures_are_the_drops_figures_under_the_rule(call):
    files = generate_medilink_drops(**WAREHOUSE_DROPS).files

    expected = published_facility_performance(files)
    assert _served(expected, _by(_rows(call, "/api/v1/facilities"), "facility_name")) == expected
    # Clinics with 4, 7 and 8 visits in the three weeks have them withheld; the others are shown, rounded.
    assert {row["is_triage_visit_count_suppressed"] for row in expected.values()} == {True, False}

    expected = published_facility_stats(files)
    assert _served(expected, _by(_rows(call, "/api/v1/analytics/facility-stats"), "state")) == expected

    expected = published_facility_monthly(files)
    assert _served(expected, _by(_rows(call, "/api/v1/facility-monthly"), "facility_name", "month_start")) == expected

    expected = published_triage_trends(files)
    assert _served(expected, _by(_rows(call, "/api/v1/triage-trends"), "facility_name", "visit_date")) == expected
    # The generated clinics see a few visits a day: days are withheld, whole weeks published.
    assert any(row["visit_count"] is None for row in expected.values())
    assert any(row["visit_count_7d"] for row in expected.values())

    expected = published_condition_analysis(files)
    assert _served(expected, _by(_rows(call, "/api/v1/condition-analysis"), "state", "age_band", "sex",
                                 "condition_name")) == expected
    # No group here has more than 4 patients: every row is withheld, and served as such (busier drops in
    # tests/dbt/test_disclosure_control.py publish some).
    assert {row["is_suppressed"] for row in expected.values()} == {True}
