"""medilink_marts's one `dbt build` and the tasks that follow it (elt.dbt_watch), under dag.test() with real dbt on
the test's Postgres, on a tiny dbt project rendered by the real DAG file: a -> b -> c (a tested), and d apart, in
models/tiny, which the medilink family declares as its dbt path here (FAMILIES_DIR).

dag.test() has no triggerer: each task decides in its own process and reschedules itself while it waits. The
real scheduler's path, through the triggerer, is the last test here.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "airflow" / "dags" / "family_marts.py"
PROFILES = Path(__file__).resolve().parents[2] / "dbt" / "profiles.yml"

TINY_PROJECT = {
    "dbt_project.yml": 'name: tiny\nversion: "1.0"\nconfig-version: 2\nprofile: health_warehouse\n'
                       'model-paths: ["models"]\nmodels:\n  tiny:\n    +materialized: table\n',
    "models/tiny/sources.yml": "version: 2\nsources:\n  - name: fx\n    schema: raw\n    tables:\n"
                               "      - name: tiny_items\n      - name: tiny_people\n",
    "models/tiny/a.sql": "select id, label, clock_timestamp() as built_at from {{ source('fx', 'tiny_items') }}",
    "models/tiny/b.sql": "select id, label, clock_timestamp() as built_at from {{ ref('a') }}",
    "models/tiny/c.sql": "select id, clock_timestamp() as built_at from {{ ref('b') }}",
    "models/tiny/d.sql": "select 1 as id, clock_timestamp() as built_at",
    # Another family's folder: never a task of medilink_marts, never in its build.
    "models/beds/beds.sql": "select 1 as id, clock_timestamp() as built_at",
    # A contract Postgres enforces: a refused row comes back on Postgres's DETAIL line, values and all.
    "models/tiny/people.sql": "select name, phone from {{ source('fx', 'tiny_people') }}",
    "models/tiny/schema.yml": "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: label\n"
                              "        data_tests: [not_null]\n  - name: d\n    columns:\n      - name: id\n"
                              "        data_tests: [unique]\n  - name: people\n    config:\n"
                              "      contract: {enforced: true}\n    columns:\n      - name: name\n"
                              "        data_type: text\n      - name: phone\n        data_type: text\n"
                              "        constraints: [{type: not_null}]\n",
}
# The families the DAG file reads: medilink's marts are the tiny project's models/tiny, nhs_beds's its models/beds.
TINY_PATHS = {"medilink": ["models/tiny"], "nhs_beds": ["models/beds"]}


def _tiny_families(directory: Path) -> Path:
    """Copies of the repository's families, with the tiny project's folders as their dbt paths."""
    import yaml

    from elt.config import REPO_ROOT

    directory.mkdir()
    for name, paths in TINY_PATHS.items():
        declared = yaml.safe_load((REPO_ROOT / "elt" / "families" / f"{name}.yml").read_text())
        declared["marts"]["dbt_paths"] = paths
        (directory / f"{name}.yml").write_text(yaml.safe_dump(declared))
    return directory


@pytest.fixture
def tiny(settings, db, tmp_path, airflow_home, monkeypatch):
    """The tiny project parsed, its source table made, and the environment the DAG's tasks read."""
    from elt.config import get_settings
    from elt.transform import parse

    project = tmp_path / "tiny"
    for name, text in TINY_PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    shutil.copy(PROFILES, project / "profiles.yml")
    db.execute("create table raw.tiny_items (id int, label text)")
    db.execute("create table raw.tiny_people (name text, phone text)")
    db.execute("insert into raw.tiny_people values ('Ada', '0800')")
    tiny_settings = settings.model_copy(update={"dbt_project_dir": project})
    parse(settings=tiny_settings)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("FAMILIES_DIR", str(_tiny_families(tmp_path / "families")))
    get_settings.cache_clear()
    yield tiny_settings
    get_settings.cache_clear()


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["medilink_marts"]


def _states(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def _stored_states(run_id: str) -> dict[str, tuple[str, int]]:
    """The run's task states and tries as the metadata database holds them now (not a session's cached rows)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {task_id: (state, tries) for task_id, state, tries in session.execute(
            select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number).where(
                TaskInstance.run_id == run_id))}


def _run_state(run_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))


def _built_at(db, table: str):
    if not db.execute("select to_regclass(%s)", (f"analytics.{table}",)).fetchone()[0]:
        return None
    return db.execute(f"select max(built_at) from analytics.{table}").fetchone()[0]  # noqa: S608 - fixed names


def test_the_tiny_project_renders_one_task_per_model_and_one_for_its_tests(tiny):
    dag = _dag()
    assert set(dag.task_ids) == {"dbt_build", "dbt.a.run", "dbt.a.test", "dbt.b_run", "dbt.c_run", "dbt.d.run",
                                 "dbt.d.test", "dbt.people_run", "all_dbt_tasks_succeeded"}
    assert dag.get_task("dbt.b_run").upstream_task_ids == {"dbt.a.test"}
    assert dag.get_task("dbt.c_run").upstream_task_ids == {"dbt.b_run"}
    assert dag.get_task("dbt_build").upstream_task_ids == set()


def test_without_a_manifest_the_dag_is_one_build_task_of_the_same_selection(tiny, db):
    """No manifest to render the model tasks from (`elt parse` not run): one `build_marts` task builds what
    `dbt_build` would, the bed models left to nhs_beds_ingest as there."""
    from elt.transform import manifest_path

    manifest_path(tiny).unlink()
    db.execute("insert into raw.tiny_items values (1, 'one')")
    dag = _dag()
    assert set(dag.task_ids) == {"build_marts"}

    assert dag.test().state == "success"

    assert all(_built_at(db, table) for table in "abcd")
    assert _built_at(db, "beds") is None


def test_a_failing_test_fails_its_own_task_and_skips_only_the_models_downstream(tiny, db):
    db.execute("insert into raw.tiny_items values (1, 'one'), (2, null)")  # a's not_null test fails

    run = _dag().test()

    states = _states(run)
    assert states["dbt_build"] == ("success", 1)  # dbt ran to the end: the failure is the test's
    assert states["dbt.a.run"] == ("success", 1)
    assert states["dbt.a.test"] == ("failed", 1)  # at once: a test is never retried
    assert states["dbt.b_run"][0] == states["dbt.c_run"][0] == "skipped"  # downstream of it: not built
    assert states["dbt.d.run"] == states["dbt.d.test"] == states["dbt.people_run"] == ("success", 1)  # not downstream
    assert states["all_dbt_tasks_succeeded"][0] == "failed"
    assert run.state == "failed"
    assert _built_at(db, "a") and _built_at(db, "d")
    assert _built_at(db, "b") is None and _built_at(db, "c") is None
    assert _built_at(db, "beds") is None  # nhs_beds_ingest's, not in this build
    failed_tasks, detail = db.execute("select failed_tasks, detail from ops.pipeline_runs "
                                      "where dag_id = 'medilink_marts' and run_id = %s", (run.run_id,)).fetchone()
    assert failed_tasks == ["dbt.a.test"]
    assert "not_null_a_label" in detail


def test_when_the_build_dies_each_task_builds_its_own_model_in_dbts_order(tiny, db):
    db.execute("insert into raw.tiny_items values (1, 'one'), (2, 'two')")
    dag = _dag()
    dag.get_task("dbt_build").select = ["no_such_method:x"]  # dbt refuses to start: no result for any node

    run = dag.test()

    states = _states(run)
    assert states["dbt_build"] == ("failed", 1)  # never retried: the model tasks take over
    assert {task: state for task, state in states.items() if task != "dbt_build"} == {
        task: ("success", 1) for task in states if task != "dbt_build"}
    assert _built_at(db, "a") < _built_at(db, "b") < _built_at(db, "c")  # each after its upstream tasks
    assert _built_at(db, "d")
    assert run.state == "failed"  # the build failed: the run says so, although every model was built


def _task(dag, task_id: str):
    task = dag.get_task(task_id)
    task.dag = dag
    return task


def _clear_and_resume(dag, run_id: str, task_ids: tuple[str, ...]) -> None:
    """What "Clear" on those tasks in the UI does: the scheduler's clear of just them in the run (every other
    task, `dbt_build` and its results among them, stays as it is), which puts the run back to running; then the
    run is driven to its end as dag.test() drives one (dag.test() itself always deletes the run and starts a
    new one): the scheduler's own dependency check picks the tasks to run, Airflow's in-process runner runs
    them, a rescheduled task is picked again when its time comes."""
    import time

    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    from airflow import settings

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    scheduler_dag.on_success_callback = dag.on_success_callback  # as dag.test() does: the run's record
    scheduler_dag.on_failure_callback = dag.on_failure_callback
    assert scheduler_dag.clear(task_ids=list(task_ids), run_id=run_id, dag_run_state=DagRunState.RUNNING) \
        == len(task_ids)
    session = settings.Session()
    dag_run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
    dag_run.dag = scheduler_dag
    while dag_run.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dag_run.update_state(session=session)
        for ti in schedulable:
            if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
            ti.scheduled_dttm = timezone.utcnow()
        session.commit()
        scheduled = [ti for ti in dag_run.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]
        for ti in scheduled:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        if not scheduled:
            time.sleep(0.5)


@pytest.mark.parametrize("cleared", [("dbt.b_run",), ("dbt.b_run", "dbt.c_run")])
def test_a_model_task_cleared_rebuilds_that_model_alone_after_its_upstream_tasks(tiny, db, cleared):
    """Clearing a model's task (alone, or with its downstream task) gives it a new try in the same run while every
    other task keeps its state: the cleared models are rebuilt, in dbt's order, by themselves; no `dbt build`
    again, and no other model touched."""
    db.execute("insert into raw.tiny_items values (1, 'one')")
    dag = _dag()
    first = dag.test()
    assert first.state == "success"
    before = {table: _built_at(db, table) for table in "abcd"}

    _clear_and_resume(dag, first.run_id, cleared)

    assert _run_state(first.run_id) == "success"
    assert _stored_states(first.run_id) == {task: ("success", 2 if task in cleared else 1) for task in dag.task_ids}
    after = {table: _built_at(db, table) for table in "abcd"}
    rebuilt = {task.removeprefix("dbt.").removesuffix("_run") for task in cleared}
    assert {t for t in "abcd" if after[t] != before[t]} == rebuilt
    assert all(after[t] > before[t] for t in rebuilt)
    if "c" in rebuilt:
        assert after["b"] < after["c"]  # c after b, its upstream task


def test_a_killed_build_leaves_its_finished_models_and_the_tasks_build_the_rest_alone(tiny, db, monkeypatch):
    """`dbt_build` dies after dbt finished `a` and its test (a worker killed: the task ends failed, never retried).
    a's tasks end with the build's results (a is not built twice); every other model task builds its own model,
    after its upstream tasks; the run ends failed, as the build did."""
    from elt.dbt_watch import DbtBuild

    db.execute("insert into raw.tiny_items values (1, 'one')")
    build = DbtBuild.execute
    built_by_the_build = {}

    def dies_after_a(self, context):
        self.select = ["a"]  # the build got as far as a and its test
        build(self, context)
        built_by_the_build.update({table: _built_at(db, table) for table in "abcd"})
        raise SystemExit("killed")  # what a killed worker leaves: the task failed, the results published so far

    monkeypatch.setattr(DbtBuild, "execute", dies_after_a)

    run = _dag().test()

    states = _states(run)
    assert states["dbt_build"] == ("failed", 1)
    assert {task: state for task, state in states.items() if task != "dbt_build"} == {
        task: ("success", 1) for task in states if task != "dbt_build"}
    assert built_by_the_build["a"] and not any(built_by_the_build[table] for table in "bcd")
    assert _built_at(db, "a") == built_by_the_build["a"]  # from the build: not rebuilt
    assert built_by_the_build["a"] < _built_at(db, "b") < _built_at(db, "c")
    assert _built_at(db, "d")
    assert db.execute("select name from analytics.people").fetchall() == [("Ada",)]
    assert run.state == "failed"


def test_a_test_re_run_alone_fails_without_a_retry_and_names_the_test(tiny, db):
    from airflow.sdk.exceptions import AirflowFailException

    db.execute("insert into raw.tiny_items values (1, 'one')")
    dag = _dag()
    assert dag.test().state == "success"
    db.execute("insert into analytics.a values (2, null, now())")  # bad data in the built model

    with pytest.raises(AirflowFailException, match=r"not_null_a_label fail.*\n\(not retried: a test failed"):
        _task(dag, "dbt.a.test")._run_alone({"params": {"full_refresh": False}})


def test_a_model_that_fails_for_a_reason_other_than_its_connection_is_not_retried(tiny, db):
    from airflow.sdk.exceptions import AirflowFailException

    db.execute("insert into raw.tiny_items values (1, 'one')")
    dag = _dag()
    db.execute("drop table raw.tiny_items")  # a broken warehouse, not a flaky one

    with pytest.raises(AirflowFailException, match=r"(?s)dbt model failed: a error.*tiny_items.*\n\(not retried: not a conn"):
        _task(dag, "dbt.a.run")._run_alone({"params": {"full_refresh": False}})


def test_a_refused_rows_values_reach_neither_the_log_nor_xcom_nor_the_run_record(tiny, db, capfd):
    """A model whose insert Postgres refuses fails its task (at once: not a connection failure); Postgres's DETAIL
    line repeats the row, and neither the build's nor the task's output, the XComs, the run record nor dbt's own
    log file carries it."""
    db.execute("insert into raw.tiny_items values (1, 'one')")
    db.execute("insert into raw.tiny_people values ('Zebediah Quarrington', null)")

    run = _dag().test()

    assert _states(run)["dbt.people_run"] == ("failed", 1)
    printed = "".join(capfd.readouterr())  # dag.test() runs the tasks in this process: their log is its output
    xcoms = _xcom_values(run.run_id)
    detail = db.execute("select detail from ops.pipeline_runs where run_id = %s", (run.run_id,)).fetchone()[0]
    dbt_log = (tiny.dbt_project_dir / "logs" / "dbt.log").read_text()
    assert "dbt.people_run" in detail and "Database Error in model people" in detail  # its first line
    for text in (printed, xcoms, dbt_log):
        assert "violates not-null constraint" in text  # the failure is there: the search below is not vacuous
    for text in (printed, xcoms, detail, dbt_log):
        assert "Zebediah" not in text and "Quarrington" not in text


def _xcom_values(run_id: str) -> str:
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return "\n".join(json.dumps(xcom.value, default=str) for xcom in
                         session.scalars(select(XComModel).where(XComModel.run_id == run_id)))


class _Server:
    """The session's Postgres as benchmarks.airflow_stack wants it: databases made on it, their URLs."""

    def __init__(self, server_url: str):
        self.server_url = server_url

    def create_database(self, name: str) -> str:
        from tests.conftest import create_database

        return create_database(self.server_url, name)

    def url(self, name: str) -> str:
        return self.server_url.rsplit("/", 1)[0] + "/" + name


@pytest.mark.e2e
def test_under_the_scheduler_the_tasks_follow_the_build_from_the_triggerer(tiny, db, pg_server_url, tmp_path):
    """The path the product runs at night: Airflow's scheduler, LocalExecutor and triggerer (as ./start.sh runs
    them) on the real DAG file. The followers start in the triggerer and end there; a failing test fails its
    task, skips only what is downstream, and fails the run."""
    from benchmarks.airflow_stack import AirflowStack, python_path

    db.execute("insert into raw.tiny_items values (1, 'one'), (2, null)")  # a's not_null test fails
    root = tmp_path / "stack"
    stack = AirflowStack(root, _Server(pg_server_url), [DAG_FILE],
                         {"DATABASE_URL": tiny.database_url, "DBT_PROJECT_DIR": str(tiny.dbt_project_dir),
                          "FAMILIES_DIR": os.environ["FAMILIES_DIR"], "PYTHONPATH": python_path()})
    stack.start()
    try:
        stack.wait_for_dag("medilink_marts")
        run = stack.run("medilink_marts", timeout=600)
    finally:
        stack.stop()

    states = {task: state for task, (state, *_) in run.tasks.items()}
    assert run.state == "failed"
    assert states == {"dbt_build": "success", "dbt.a.run": "success", "dbt.a.test": "failed",
                      "dbt.b_run": "skipped", "dbt.c_run": "skipped", "dbt.d.run": "success",
                      "dbt.d.test": "success", "dbt.people_run": "success", "all_dbt_tasks_succeeded": "failed"}
    assert _built_at(db, "a") and _built_at(db, "d") and _built_at(db, "b") is None
    # Only dbt and the two failures took a worker: every other task started and ended in the triggerer.
    scheduler_log = (stack.stack.logs / "airflow-scheduler.log").read_text()
    enqueued = {match for line in scheduler_log.splitlines() if "Trying to enqueue tasks" in line
                for match in re.findall(r"<TaskInstance: medilink_marts\.(\S+) ", line)}
    assert enqueued == {"dbt_build", "dbt.a.test", "all_dbt_tasks_succeeded"}
