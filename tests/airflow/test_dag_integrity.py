"""Every DAG imports cleanly and carries what operators rely on: owner, tags, retries and docs."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "medilink_daily" in dagbag.dags


def test_one_dag_per_file_named_after_it(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_every_dag_has_owner_tags_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner not in {"", "airflow"}, f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_medilink_daily_runs_at_two_utc_and_can_be_triggered_with_a_form(dagbag):
    dag = dagbag.dags["medilink_daily"]
    assert dag.timetable.expression == "0 2 * * *" and str(dag.timetable.timezone) == "UTC"
    assert set(dag.params) == {"drop_type", "key", "dry_run", "full_refresh"}
    assert dag.catchup is False
