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
    assert {"medilink_ingest", "medilink_marts", "nhs_beds_ingest", "nhs_beds_marts"} <= set(dagbag.dags)


def test_every_family_has_an_ingest_and_a_marts_dag_and_there_are_no_others(dagbag):
    """The DAGs are the families' (elt/dag_factory.py): `<family>_ingest` made by family_ingest.py and
    `<family>_marts` by family_marts.py, one pair per declared family, and the connectors' (elt/connectors/dags.py):
    `connector_<name>` per declared connector, made by connectors.py; nothing written by hand."""
    from elt.config import REPO_ROOT
    from elt.connectors.spec import load_connectors

    families = _families()
    expected = {f.ingest_dag_id: "family_ingest.py" for f in families.values()} | {
        f.marts_dag_id: "family_marts.py" for f in families.values()} | {
        c.dag_id: "connectors.py" for c in load_connectors(REPO_ROOT / "airflow" / "connectors").values()}
    assert {dag_id: Path(dag.fileloc).name for dag_id, dag in dagbag.dags.items()} == expected
    assert sorted(p.name for p in DAGS.glob("*.py")) == ["connectors.py", "family_ingest.py", "family_marts.py"]


def test_every_dag_has_owner_tags_retries_callbacks_and_docs(dagbag):
    from elt.dbt_watch import BUILD_TASK, GATE_TASK
    from elt.orchestration import on_run_finished, on_task_failure

    # Never retried, on purpose (docs/decisions/0015): the nightly `dbt build` (its model tasks take over when it
    # fails) and the task that turns the dbt tasks' failures into the run's (its failure is theirs, recorded there).
    not_retried = {(f.marts_dag_id, task) for f in _families().values() for task in (BUILD_TASK, GATE_TASK)}
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
    assert set(dag.params) == {"drop_type", "key", "dry_run", "rebuild_marts", "full_refresh"}
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
        moved = DagBag(str(DAGS / "family_ingest.py"))
    finally:
        get_settings.cache_clear()
    assert moved.import_errors == {}
    assert moved.dags["medilink_ingest"].timetable.expression == "45 4 * * *"


@pytest.mark.parametrize("name", ["medilink", "nhs_beds"])
def test_the_marts_rebuild_when_ingest_publishes_new_raw_data(dagbag, name):
    from airflow.sdk import Asset

    family = _families()[name]
    ingest, marts = dagbag.dags[family.ingest_dag_id], dagbag.dags[family.marts_dag_id]
    published = [o for o in ingest.get_task("publish").outlets if isinstance(o, Asset)]
    assert [(a.name, a.uri) for a in published] == [(f"{name}_raw", f"warehouse://raw/{name}")]
    # By name (an Asset.ref): the asset ingest publishes.
    assert [ref.name for ref in marts.timetable.asset_condition.objects] == [a.name for a in published]
    assert set(marts.params) == {"full_refresh"}
    assert [t.task_id for t in ingest.topological_sort()][:2] == ["discover", "load"]
    assert set(ingest.task_ids) == {"discover", "load", "publish", "all_loads_succeeded"}


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


@pytest.mark.parametrize("name", ["medilink", "nhs_beds"])
def test_a_marts_dag_builds_its_familys_dbt_paths_in_the_one_slot_pool(dagbag, name):
    """<family>_marts's one `dbt build` selects its family's dbt folders and the shared ones, as the family declares
    them, in the dbt_build pool (one family's build at a time: each includes the shared ledger view)."""
    from elt.dag_factory import DBT_POOL
    from elt.dbt_watch import BUILD_TASK

    family = _families()[name]
    build = dagbag.dags[family.marts_dag_id].get_task(BUILD_TASK)
    assert build.select == family.dbt_select() == [f"path:{p}" for p in family.marts.dbt_paths] + [
        "path:models/staging/ops"]
    assert build.pool == DBT_POOL
    if name == "medilink":
        assert family.dbt_select()[:5] == ["path:models/staging/medilink", "path:models/core/medilink",
                                           "path:models/clinical/medilink", "path:models/analytics/medilink",
                                           "path:tests/medilink"]


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


def test_each_model_has_its_task_in_its_own_familys_marts_dag_only(dagbag, dbt_manifest):
    import json

    from elt.dbt_plan import in_paths

    manifest = json.loads(dbt_manifest.read_text())
    families = _families()
    models = [node for node in manifest["nodes"].values()
              if node["resource_type"] == "model" and node["config"]["materialized"] != "ephemeral"]
    beds = {node["name"] for node in models if in_paths(node, families["nhs_beds"].marts.dbt_paths)}
    assert {"fct_bed_occupancy", "bed_occupancy_trends", "bed_occupancy_national", "stg_nhs__kh03_specialty"} <= beds
    for node in models:
        owners = [f for f in families.values() if in_paths(node, f.dbt_paths)]  # the shared ledger view: all
        for family in families.values():
            task_ids = set(dagbag.dags[family.marts_dag_id].task_ids)
            has_task = f"dbt.{node['name']}.run" in task_ids or f"dbt.{node['name']}_run" in task_ids
            assert has_task is (family in owners), (node["name"], family.family)


@pytest.mark.parametrize("dag_id", ["medilink_ingest", "nhs_beds_ingest"])
def test_a_failed_load_holds_back_neither_the_good_files_nor_the_runs_failure(dagbag, dag_id):
    """The task after the loads runs once they are all done, failed ones included (so the files that loaded are
    published); a leaf with the default rule then fails the run when any load failed."""
    dag = dagbag.dags[dag_id]
    assert dag.get_task("publish").trigger_rule == "all_done"
    assert dag.get_task("publish").upstream_task_ids == {"load"}
    gate = dag.get_task("all_loads_succeeded")
    assert gate.trigger_rule == "all_success" and gate.upstream_task_ids == {"load"} and not gate.downstream_task_ids
