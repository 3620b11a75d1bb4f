"""Every DAG imports cleanly and carries what operators rely on: owner, tags, retries, callbacks and docs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


def _families() -> dict:
    from elt.config import REPO_ROOT
    from elt.contracts import load_contracts
    from elt.families import load_families

    return load_families(REPO_ROOT / "elt" / "families", load_contracts(REPO_ROOT / "elt" / "contracts"))


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"medilink_ingest", "medilink_marts", "nhs_beds_ingest"} <= set(dagbag.dags)


def test_one_dag_per_file_named_after_it(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_every_dag_has_owner_tags_retries_callbacks_and_docs(dagbag):
    from elt.dbt_watch import BUILD_TASK, GATE_TASK
    from elt.orchestration import on_run_finished, on_task_failure

    # Never retried, on purpose (docs/decisions/0015): the nightly `dbt build` (its model tasks take over when it
    # fails) and the task that turns the dbt tasks' failures into the run's (its failure is theirs, recorded there).
    not_retried = {("medilink_marts", BUILD_TASK), ("medilink_marts", GATE_TASK)}
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no doc_md"
        assert dag.on_success_callback == dag.on_failure_callback == on_run_finished, dag_id
        for task in dag.tasks:
            assert task.owner not in {"", "airflow"}, f"{dag_id}.{task.task_id} has no owner"
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            if (dag_id, task.task_id) in not_retried:
                assert task.retries == 0, f"{dag_id}.{task.task_id} is retried"
                assert (on_task_failure in callbacks) is (task.task_id == BUILD_TASK), task.task_id
                continue
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id} retries without backoff"
            assert on_task_failure in callbacks, task.task_id


def test_ingest_runs_at_two_utc_and_can_be_triggered_with_a_form(dagbag):
    dag = dagbag.dags["medilink_ingest"]
    assert dag.timetable.expression == "0 2 * * *" and str(dag.timetable.timezone) == "UTC"
    assert set(dag.params) == {"drop_type", "key", "dry_run", "full_refresh"}
    assert dag.catchup is False


def test_every_source_family_has_its_ingest_dag_on_its_declared_schedule(dagbag):
    families = _families()
    assert {"medilink", "nhs_beds"} <= set(families)
    for family in families.values():
        dag = dagbag.dags[family.ingest_dag_id]
        assert dag.timetable.expression == family.cron and str(dag.timetable.timezone) == "UTC"


def test_an_ingest_dag_takes_its_schedule_from_the_family_declaration(airflow_home, tmp_path, monkeypatch):
    """Moving a family's daily_at moves its DAG: the schedule is written once, in elt/families."""
    from airflow.dag_processing.dagbag import DagBag

    from elt.config import REPO_ROOT, get_settings

    families = shutil.copytree(REPO_ROOT / "elt" / "families", tmp_path / "families")
    declared = (families / "medilink.yml").read_text()
    (families / "medilink.yml").write_text(declared.replace('daily_at: "02:00"', 'daily_at: "04:45"'))
    monkeypatch.setenv("FAMILIES_DIR", str(families))
    get_settings.cache_clear()
    try:
        moved = DagBag(str(DAGS / "medilink_ingest.py"))
    finally:
        get_settings.cache_clear()
    assert moved.import_errors == {}
    assert moved.dags["medilink_ingest"].timetable.expression == "45 4 * * *"


def test_the_marts_rebuild_when_ingest_publishes_new_raw_data(dagbag):
    from airflow.sdk import Asset

    ingest, marts = dagbag.dags["medilink_ingest"], dagbag.dags["medilink_marts"]
    published = [o for o in ingest.get_task("publish").outlets if isinstance(o, Asset)]
    assert [a.uri for a in published] == ["warehouse://raw/medilink"]
    # By name (elt.orchestration.medilink_raw_ref): the asset ingest publishes.
    assert [ref.name for ref in marts.timetable.asset_condition.objects] == [a.name for a in published]
    assert set(marts.params) == {"full_refresh"}


def test_every_dbt_model_is_its_own_run_and_test_task(dagbag, dbt_manifest):
    import json

    from elt.dbt_plan import in_paths

    manifest = json.loads(dbt_manifest.read_text())
    models = {node["name"] for node in manifest["nodes"].values()
              if node["resource_type"] == "model" and node["config"]["materialized"] != "ephemeral"
              and in_paths(node, _families()["medilink"].dbt_paths)}
    assert len(models) >= 12
    task_ids = set(dagbag.dags["medilink_marts"].task_ids)
    # A model with tests is a group of `run` and `test`; one without is a single `<model>_run` task.
    assert all(f"dbt.{m}.run" in task_ids or f"dbt.{m}_run" in task_ids for m in models), sorted(task_ids)
    assert {f"dbt.{m}.test" for m in models if m.startswith("stg_medilink")} <= task_ids
    assert "dbt_source_tests" in task_ids


def test_medilink_marts_builds_its_familys_dbt_paths(dagbag):
    """medilink_marts's one `dbt build` selects its family's dbt folders and the shared ones, as the family declares
    them (nhs_beds_ingest's build: tests/e2e/test_beds_e2e.py)."""
    from elt.dbt_watch import BUILD_TASK

    medilink = _families()["medilink"]
    assert dagbag.dags["medilink_marts"].get_task(BUILD_TASK).select == medilink.dbt_select() == [
        "path:models/staging/medilink", "path:models/core/medilink", "path:models/clinical/medilink",
        "path:models/analytics/medilink", "path:tests/medilink", "path:models/staging/ops"]


def test_the_dbt_tasks_follow_one_build_from_the_start_of_the_run(dagbag):
    """One task runs dbt (`dbt_build`); every other dbt task starts with the run, in the triggerer (no worker),
    whatever its upstream tasks' states; the closing task sits after all of them (docs/decisions/0015)."""
    from elt.dbt_watch import BUILD_TASK, GATE_TASK, DbtBuild, DbtNodeTask

    dag = dagbag.dags["medilink_marts"]
    followers = [task for task in dag.tasks if task.task_id not in {BUILD_TASK, GATE_TASK}]
    assert isinstance(dag.get_task(BUILD_TASK), DbtBuild) and not dag.get_task(BUILD_TASK).upstream_task_ids
    assert len(followers) >= 40
    for task in [*followers, dag.get_task(GATE_TASK)]:
        assert isinstance(task, DbtNodeTask) and task.start_from_trigger, task.task_id
        assert task.trigger_rule == "always", task.task_id
    assert dag.get_task(GATE_TASK).upstream_task_ids == {task.task_id for task in followers}


def test_bed_models_are_built_by_nhs_beds_ingest_only(dagbag, dbt_manifest):
    import json

    from elt.dbt_plan import in_paths

    manifest = json.loads(dbt_manifest.read_text())
    beds = {node["name"] for node in manifest["nodes"].values()
            if node["resource_type"] == "model" and in_paths(node, _families()["nhs_beds"].marts.dbt_paths)}
    assert {"fct_bed_occupancy", "bed_occupancy_trends", "bed_occupancy_national", "stg_nhs__kh03_specialty"} <= beds
    marts_tasks = " ".join(dagbag.dags["medilink_marts"].task_ids)
    assert not [model for model in beds if f"dbt.{model}" in marts_tasks]

    dag = dagbag.dags["nhs_beds_ingest"]
    assert dag.timetable.expression == "30 2 * * *" and dag.catchup is False
    assert set(dag.params) == {"key", "dry_run", "rebuild_marts"}
    assert [t.task_id for t in dag.topological_sort()][:2] == ["discover", "load"]
    assert set(dag.task_ids) == {"discover", "load", "build_marts", "all_loads_succeeded"}


@pytest.mark.parametrize(("dag_id", "after_loads"), [("medilink_ingest", "publish"), ("nhs_beds_ingest", "build_marts")])
def test_a_failed_load_holds_back_neither_the_good_files_nor_the_runs_failure(dagbag, dag_id, after_loads):
    """The task after the loads runs once they are all done, failed ones included (so the files that loaded are
    published); a leaf with the default rule then fails the run when any load failed."""
    dag = dagbag.dags[dag_id]
    assert dag.get_task(after_loads).trigger_rule == "all_done"
    assert dag.get_task(after_loads).upstream_task_ids == {"load"}
    gate = dag.get_task("all_loads_succeeded")
    assert gate.trigger_rule == "all_success" and gate.upstream_task_ids == {"load"} and not gate.downstream_task_ids
