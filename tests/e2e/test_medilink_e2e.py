"""The whole slice: drops in S3 -> medilink_ingest, then medilink_marts, under dag.test() -> dbt marts -> the API.

The expected figures are computed straight from the generated CSV bytes with the csv module and the domain rules
(tests/medilink_figures.py, not from the warehouse), then compared with what the marts hold and the API serves.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from elt.demo import generate_medilink_drops
from tests.disclosure import is_publishable
from tests.medilink_figures import (
    published_condition_analysis,
    published_facility_monthly,
    published_facility_performance,
    published_triage_trends,
    resolved_visits,
)

PREFIX = "medical_records/input/"
DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
END = date(2026, 11, 14)


def expected_patient_visits(files: dict[str, bytes]) -> dict[tuple[str, str, str], tuple[int, list[str]]]:
    """Per resolved patient: visits (all within the 12-month window here) and their distinct conditions."""
    out: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    for visit in resolved_visits(files):
        patient = visit["patient"]
        key = (patient["facility_name"], patient["first_name"].lower(), patient["last_name"].lower())
        count, conditions = out.get(key, (0, set()))
        out[key] = (count + 1, conditions | visit["conditions"])
    return {key: (count, sorted(conditions)) for key, (count, conditions) in out.items()}


def _api_rows(settings) -> list[dict]:
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings

    client = create_app(ApiSettings(database_url=settings.database_url)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "e2e", "analyst")
    rows, cursor = [], None
    while True:
        body = client.get("/api/v1/facilities", query_string={"limit": 5, **({"cursor": cursor} if cursor else {})}).get_json()
        rows += body["data"]
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            return rows


@pytest.mark.e2e
def test_drops_in_s3_reach_the_marts_and_the_api_through_both_dags(settings, store, db, airflow_home, monkeypatch,
                                                                     dbt_manifest):
    drop = generate_medilink_drops(end_date=END, days=21, seed=7)  # three weeks: week-over-week has values
    for name, data in drop.files.items():
        store.put(PREFIX + name, data)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from elt.config import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(str(DAGS)).dags
    ingest, marts = dags["medilink_ingest"], dags["medilink_marts"]
    events_before = _asset_events()
    run = ingest.test()
    assert run.state == "success"
    assert _asset_events() == events_before + 1  # new raw data published: medilink_marts is scheduled on it
    assert _runs(db) == [("medilink_ingest", "success", len(drop.files), [])]
    built = marts.test()
    assert built.state == "success"
    # Every model the nightly builds is a task of its own in the run, and each ended in success.
    models = nightly_models(dbt_manifest)
    assert len(models) >= 15  # not vacuous
    model_tasks = {ti.task_id: ti.state for ti in built.get_task_instances() if ti.task_id in
                   {model_task_id(name, has_tests) for name, has_tests in models.items()}}
    assert model_tasks == {model_task_id(name, has_tests): "success" for name, has_tests in models.items()}

    # Every file loaded once; every deliberately bad row is in rejects and nothing else is.
    statuses = db.execute("select status, count(*) from ops.file_ledger group by 1").fetchall()
    assert statuses == [("loaded", len(drop.files))]
    assert db.execute("select count(distinct (file_id, row_number)) from ops.load_rejects").fetchone()[0] == len(drop.bad_rows)
    assert list(store.list(PREFIX)) == []

    # What the analyst reads is what the CSV bytes give once disclosure control is applied by its documented rule
    # (tests/disclosure.py): no count from 1 to the threshold - 1, the rest rounded.
    expected = published_facility_performance(drop.files)
    served = {row["facility_name"]: row for row in _api_rows(settings)}
    assert set(served) == set(expected)
    for name, figures in expected.items():
        got = {key: served[name][key] for key in figures}
        assert got == figures, name
    assert all(is_publishable(row[column]) for row in served.values()
               for column in ("patient_count", "medical_record_count", "triage_visit_count", "urgent_visit_count"))

    # The trend, condition and monthly marts agree with figures computed from the CSV bytes.
    expected_trends = published_triage_trends(drop.files)
    assert sum(1 for t in expected_trends.values() if t["week_over_week_change"] is not None) >= 5  # not vacuous
    assert _mart(db, "triage_trends", ("facility_name", "visit_date"), next(iter(expected_trends.values()))) \
        == expected_trends
    expected_conditions = published_condition_analysis(drop.files)
    assert len(expected_conditions) >= 20
    assert _mart(db, "condition_analysis", ("state", "age_band", "sex", "condition_name"),
                 next(iter(expected_conditions.values()))) == expected_conditions
    expected_monthly = published_facility_monthly(drop.files)
    assert len({month for _, month in expected_monthly}) == 2  # the drops span two months
    assert _mart(db, "facility_monthly", ("facility_name", "month_start"), next(iter(expected_monthly.values()))) \
        == expected_monthly

    # Each patient's 12-month summary counts the visits and conditions the CSV bytes give them.
    summaries = db.execute(
        "select facilities.facility_name, lower(summary.first_name), lower(summary.last_name), "
        "summary.triage_visit_count_12m, summary.conditions_12m from clinical.patient_summary as summary "
        "join core.dim_facilities as facilities using (facility_id)").fetchall()
    by_patient = {(f, first, last): (count, conditions) for f, first, last, count, conditions in summaries}
    expected_patients = expected_patient_visits(drop.files)
    assert len(expected_patients) >= 50
    assert {key: by_patient[key] for key in expected_patients} == expected_patients

    # A second run with no new files loads nothing, publishes nothing, and a rebuild changes no figure.
    assert ingest.test().state == "success"
    assert db.execute("select count(*) from ops.file_ledger").fetchone()[0] == len(drop.files)
    assert _asset_events() == events_before + 1
    assert marts.test().state == "success"
    assert {row["facility_name"]: row for row in _api_rows(settings)} == served

    # A facility in a state that does not exist passes the file contract (state is free text there) but
    # not the staging test: the marts run fails at that test, at once (no retry), the models downstream of it
    # are skipped (not built), every other model is built, and every published mart keeps its rows.
    published = {table: _snapshot(db, table) for table in PUBLISHED}
    store.put(PREFIX + f"facilities_{END + timedelta(days=1)}.csv",
              b"name,state,lga,lat,lon,type\nAtlantis Royal Clinic,Atlantis,Poseidonia,6.5,3.4,Clinic\n")
    assert ingest.test().state == "success"
    assert _asset_events() == events_before + 2
    failed = marts.test()
    assert failed.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in failed.get_task_instances()}
    assert states["dbt.stg_medilink__facilities.test"] == ("failed", 1)
    downstream = downstream_models(dbt_manifest, "stg_medilink__facilities")
    assert "dim_facilities" in downstream and len(models) - len(downstream) >= 5  # both sides are not vacuous
    assert {name: states[model_task_id(name, has_tests)][0] for name, has_tests in models.items()} == {
        name: "skipped" if name in downstream else "success" for name in models}
    assert {table: _snapshot(db, table) for table in PUBLISHED} == published
    run_state, failed_tasks, detail = db.execute(
        "select state, failed_tasks, detail from ops.pipeline_runs where dag_id = 'medilink_marts' "
        "and run_id = %s", (failed.run_id,)).fetchone()
    assert (run_state, failed_tasks) == ("failed", ["dbt.stg_medilink__facilities.test"])
    assert "accepted_values_stg_medilink__facilities_state" in detail
    get_settings.cache_clear()


def nightly_models(manifest_file: Path) -> dict[str, bool]:
    """The models medilink_marts builds (those in the Medilink family's dbt paths), read from dbt's manifest:
    {name: whether a test is on that model alone}."""
    import json

    from elt.config import Settings
    from elt.dbt_plan import in_paths
    from elt.families import declared_families

    paths = declared_families(Settings())["medilink"].dbt_paths
    nodes = json.loads(manifest_file.read_text())["nodes"]
    models = {uid: node["name"] for uid, node in nodes.items() if node["resource_type"] == "model"
              and in_paths(node, paths) and node["config"]["materialized"] != "ephemeral"}
    tested = {node["depends_on"]["nodes"][0] for node in nodes.values()
              if node["resource_type"] == "test" and len(node["depends_on"]["nodes"]) == 1}
    return {name: uid in tested for uid, name in models.items()}


def model_task_id(name: str, has_tests: bool) -> str:
    """The runbook's task names: `dbt.<model>.run` beside `dbt.<model>.test`, or `dbt.<model>_run` alone."""
    return f"dbt.{name}.run" if has_tests else f"dbt.{name}_run"


def downstream_models(manifest_file: Path, model: str) -> set[str]:
    """Names of the models that read `model`, directly or not (dbt's child map)."""
    import json

    manifest = json.loads(manifest_file.read_text())
    names = {uid: node["name"] for uid, node in manifest["nodes"].items()}
    todo = [uid for uid, name in names.items() if name == model and uid.startswith("model.")]
    found: set[str] = set()
    while todo:
        for child in manifest["child_map"][todo.pop()]:
            if child.startswith("model.") and child not in found:
                found.add(child)
                todo.append(child)
    return {names[uid] for uid in found}


# Every mart the API or BI tools read.
PUBLISHED = ("core.dim_facilities", "core.dim_patients", "core.fct_medical_records", "core.fct_triage_visits",
             "clinical.patient_summary", "analytics.facility_performance", "analytics.facility_monthly",
             "analytics.triage_trends", "analytics.condition_analysis")


def _mart(db, table: str, key: tuple[str, ...], columns: dict) -> dict[tuple, dict]:
    """analytics.<table> as {key: {column: value}} for the columns named, dates as text and numerics as floats."""
    listed = ", ".join([*key, *columns])
    by_key = {}
    for row in db.execute(f"select {listed} from analytics.{table}").fetchall():  # noqa: S608 - fixed names
        values = [v.isoformat() if isinstance(v, date) else float(v) if isinstance(v, Decimal) else v for v in row]
        by_key[tuple(values[:len(key)])] = dict(zip(columns, values[len(key):], strict=True))
    return by_key


def _snapshot(db, table: str) -> list[tuple]:
    return sorted(db.execute(f"select * from {table}").fetchall(), key=repr)  # noqa: S608 - a fixed list


def _asset_events() -> int:
    """Events of the medilink_raw asset in Airflow's metadata database: one per run that published new raw data."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                              .where(AssetModel.uri == "warehouse://raw/medilink"))


def _runs(db) -> list[tuple]:
    return db.execute("select dag_id, state, files_loaded, failed_tasks from ops.pipeline_runs "
                      "order by started_at").fetchall()
