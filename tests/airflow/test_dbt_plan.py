"""A marts DAG's dbt tasks are what one `dbt build` of its family's dbt paths runs, in dbt's own order, and each
task follows the build by one rule (elt.dbt_plan). The expected sets come from dbt itself: `dbt ls` for what the
build selects, dbt's own test-edge code for which tests a model waits for."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from elt.config import REPO_ROOT
from elt.contracts import load_contracts
from elt.dbt_plan import SOURCE_TESTS_TASK, WatchTask, all_finished, follow, selected_by_paths, watch_tasks
from elt.families import load_families

FAMILIES = load_families(REPO_ROOT / "elt" / "families", load_contracts(REPO_ROOT / "elt" / "contracts"))
MEDILINK_PATHS = FAMILIES["medilink"].dbt_paths


def _dbt_ls(settings, tmp_path, *resource_types: str, select: list[str]) -> set[str]:
    from elt.transform import run_dbt

    args = ["ls", "--select", *select, "--output", "json", "--output-keys", "unique_id", "--quiet",
            "--target-path", str(tmp_path / "target")]
    for resource_type in resource_types:
        args += ["--resource-type", resource_type]
    return {json.loads(line)["unique_id"] for line in run_dbt(args, settings=settings) if line.startswith("{")}


@pytest.mark.parametrize("unit_tests", [False, True])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_tasks_follow_exactly_the_nodes_dbt_build_selects(settings, dbt_manifest, tmp_path, family, unit_tests):
    """For each family, the tasks follow what `dbt build --select <its dbt paths>` builds, as dbt selects it."""
    settings = settings.model_copy(update={"dbt_unit_tests": unit_tests})
    selected = _dbt_ls(settings, tmp_path, "model", "test", "unit_test", select=FAMILIES[family].dbt_select())
    tasks = watch_tasks(dbt_manifest, select_paths=FAMILIES[family].dbt_paths, unit_tests=unit_tests)
    watched = [uid for task in tasks for uid in task.watched]
    assert len(watched) == len(set(watched))  # every node is followed by one task only
    assert set(watched) == selected
    assert any(uid.startswith("unit_test.") for uid in selected) is unit_tests  # not vacuous either way
    models = {uid for uid in selected if uid.startswith("model.")}
    model_tasks = [task for task in tasks if task.kind == "model"]
    assert len(model_tasks) == len(models) >= 4  # one run task per model, whatever else it follows
    assert all(task.watched[-1] in models and not any(w.startswith("test.") for w in task.watched)
               for task in model_tasks)
    assert "model.health_warehouse.stg_ops__file_ledger" in models  # the shared view: in every family's build


def test_a_node_is_selected_by_its_file_or_by_a_test_on_it():
    """dbt's path method and eager indirect selection, on a hand-made manifest: a test is in when any node it tests
    is (also one in another folder, or on two families' models); a folder is not a prefix of its neighbour's name."""
    def node(kind, path, *parents, patch=None):
        return {"resource_type": kind, "original_file_path": path, "patch_path": patch,
                "depends_on": {"nodes": list(parents)}}

    manifest = {
        "nodes": {
            "model.p.a": node("model", "models/f/a.sql", "source.p.raw.t"),
            "model.p.b": node("model", "models/other/b.sql", patch="p://models/f/_b.yml"),
            "model.p.c": node("model", "models/ff/c.sql"),
            "test.p.on_a": node("test", "models/f/_a.yml", "model.p.a"),
            "test.p.a_and_c": node("test", "models/ff/_c.yml", "model.p.a", "model.p.c"),
            "test.p.on_c": node("test", "models/ff/_c.yml", "model.p.c"),
            "test.p.singular": node("test", "tests/f/check.sql", "model.p.c"),
            "test.p.on_source": node("test", "models/staging/_s.yml", "source.p.raw.t"),
            "operation.p.hook": node("operation", "./dbt_project.yml"),
        },
        "sources": {"source.p.raw.t": node("source", "models/f/_sources.yml")},
        "unit_tests": {"unit_test.p.a.u": node("unit_test", "models/other/_u.yml", "model.p.a")},
    }
    assert selected_by_paths(manifest, ["models/f", "tests/f"]) == {
        "model.p.a", "source.p.raw.t", "test.p.on_a", "test.p.a_and_c", "test.p.singular", "test.p.on_source",
        "unit_test.p.a.u"}
    assert selected_by_paths(manifest, ["models/f/_b.yml"]) == {"model.p.b"}  # a properties file names its model
    assert selected_by_paths(manifest, ["models/ff"]) == {"model.p.c", "test.p.a_and_c", "test.p.on_c",
                                                          "test.p.singular"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_model_waits_for_exactly_the_tests_dbt_build_runs_before_it(dbt_manifest, family):
    """dbt adds edges from tests to the nodes that must wait for them (dbt.compilation.Linker.add_test_edges_1,
    what `dbt build` uses unless DBT_USE_FAST_TEST_EDGES is set); the task graph's ancestors of each model's run
    task must hold exactly those tests."""
    import networkx as nx
    from dbt.compilation import Linker

    manifest = json.loads(dbt_manifest.read_text())
    graph = nx.DiGraph()
    for uid in [*manifest["nodes"], *manifest["sources"]]:
        graph.add_node(uid)
    for uid, node in manifest["nodes"].items():
        for parent in node["depends_on"]["nodes"]:
            graph.add_edge(parent, uid)
    duck = SimpleNamespace(
        nodes={uid: SimpleNamespace(resource_type=node["resource_type"], depends_on_nodes=node["depends_on"]["nodes"])
               for uid, node in manifest["nodes"].items()},
        child_map=manifest["child_map"])
    linker = Linker()
    linker.graph = graph
    linker.add_test_edges_1(duck)

    tasks = {task.task_id: task for task in watch_tasks(dbt_manifest, select_paths=FAMILIES[family].dbt_paths)}
    followed_tests = {uid for task in tasks.values() for uid in task.watched if uid.startswith("test.")}

    def tests_before(task_id: str) -> set[str]:
        found, todo = set(), list(tasks[task_id].upstream)
        while todo:
            upstream = tasks[todo.pop()]
            found |= {uid for uid in upstream.watched if uid.startswith("test.")}
            todo += upstream.upstream
        return found

    checked = 0
    for task in tasks.values():
        if task.kind != "model":
            continue
        model = task.watched[-1]
        assert tests_before(task.task_id) == nx.ancestors(graph, model) & followed_tests, model
        checked += bool(tests_before(task.task_id))
    assert checked >= 10


def test_the_tasks_keep_the_names_the_ui_and_the_runbook_use(dbt_manifest):
    ids = {task.task_id for task in watch_tasks(dbt_manifest, select_paths=MEDILINK_PATHS)}
    assert {"dbt.stg_medilink__facilities.run", "dbt.stg_medilink__facilities.test", "dbt.dim_facilities.run",
            "dbt.stg_ops__file_ledger_run", SOURCE_TESTS_TASK,
            "dbt.relationships_dim_patients_facility_id__facility_id__ref_dim_facilities__test"} <= ids
    assert not [task_id for task_id in ids if "kh03" in task_id or "bed_occupancy" in task_id]


# --- follow: what a task does with the build's results so far --------------------------------------------------

MODEL = WatchTask(("dbt", "b"), "run", "model", ("model.p.b",), ("build", "--select", "b"), ("dbt.a.test",))
TESTS = WatchTask(("dbt", "b"), "test", "tests", ("test.p.t1", "test.p.t2"), ("test", "--select", "t1", "t2"),
                  ("dbt.b.run",))


def _follow(task, *, try_number=1, producer="running", results=None, upstream=None):
    return follow(task, try_number=try_number, producer_state=producer, results=results or {},
                  upstream_states=upstream or {})


def test_a_task_ends_with_its_nodes_results_in_the_build():
    assert _follow(MODEL, results={"model.p.b": ["success", None]}).action == "success"
    assert _follow(TESTS, results={"test.p.t1": ["pass", None], "test.p.t2": ["warn", None]}).action == "success"
    failed = _follow(TESTS, producer="success",
                     results={"test.p.t1": ["pass", None], "test.p.t2": ["fail", "Got 3 results, configured to fail if != 0"]})
    assert (failed.action, failed.reason) == ("failed", "t2 fail: Got 3 results, configured to fail if != 0")
    assert _follow(MODEL, results={"model.p.b": ["error", 'relation "x" does not exist']}).action == "failed"


def test_a_task_waits_while_the_build_has_not_reached_all_its_nodes():
    assert _follow(MODEL, producer=None).action == "wait"  # the build has not started
    assert _follow(MODEL, producer="queued").action == "wait"
    assert _follow(TESTS, results={"test.p.t1": ["fail", "x"]}).action == "wait"  # t2 still to come
    assert _follow(MODEL, producer="up_for_retry").action == "wait"


@pytest.mark.parametrize("producer", ["failed", "success", "skipped"])
def test_a_task_the_build_left_without_a_result_runs_its_node_alone_after_its_upstream_tasks(producer):
    assert _follow(MODEL, producer=producer, upstream={"dbt.a.test": "deferred"}).action == "wait"
    assert _follow(MODEL, producer=producer, upstream={"dbt.a.test": "up_for_retry"}).action == "wait"
    assert _follow(MODEL, producer=producer, upstream={"dbt.a.test": "success"}).action == "run_alone"
    skipped = _follow(MODEL, producer=producer, upstream={"dbt.a.test": "failed"})
    assert (skipped.action, skipped.reason) == ("skip", "not built: upstream dbt.a.test failed")
    assert _follow(MODEL, producer=producer, upstream={"dbt.a.test": "skipped"}).action == "skip"


def test_a_node_dbt_skipped_follows_its_upstream_tasks_which_a_retry_may_still_turn_green():
    results = {"model.p.b": ["skipped", None]}
    assert _follow(MODEL, results=results, upstream={"dbt.a.test": "failed"}).action == "skip"
    assert _follow(MODEL, results=results, upstream={"dbt.a.test": "up_for_retry"}).action == "wait"
    assert _follow(MODEL, results=results, upstream={"dbt.a.test": "success"}).action == "run_alone"


def test_a_retried_or_cleared_task_runs_its_node_alone_whatever_the_build_said():
    results = {"model.p.b": ["success", None]}
    assert _follow(MODEL, try_number=2, producer="success", results=results,
                   upstream={"dbt.a.test": "success"}).action == "run_alone"
    assert _follow(MODEL, try_number=2, producer="success", results=results,
                   upstream={"dbt.a.test": "running"}).action == "wait"  # its upstream was cleared with it
    assert _follow(TESTS, try_number=3, producer="success", results={"test.p.t1": ["fail", "x"]},
                   upstream={"dbt.b.run": "success"}).action == "run_alone"


def test_the_closing_task_waits_for_every_dbt_task_and_fails_when_one_failed():
    tasks = ("a", "b", "c")
    assert all_finished(tasks, {"a": "success", "b": "skipped", "c": "deferred"}).action == "wait"
    assert all_finished(tasks, {"a": "success", "b": "skipped", "c": "up_for_retry"}).action == "wait"
    assert all_finished(tasks, {"a": "success", "b": "skipped", "c": "success"}).action == "success"
    failed = all_finished(tasks, {"a": "failed", "b": "upstream_failed", "c": "success"})
    assert (failed.action, failed.reason) == ("failed", "a failed; b upstream_failed")


def test_a_model_moved_to_another_folder_makes_the_manifest_stale(settings, tmp_path):
    """The DAGs select by folder, so a manifest written before a model moved folders must not be trusted; the move
    keeps the file's own time, its folders' times show it."""
    import os
    import time

    from elt.transform import manifest_path, manifest_problem

    project = tmp_path / "project"
    (project / "models" / "medilink").mkdir(parents=True)
    (project / "models" / "beds").mkdir()
    (project / "dbt_project.yml").write_text("name: p\n")
    (project / "models" / "medilink" / "x.sql").write_text("select 1 as id")
    settings = settings.model_copy(update={"dbt_project_dir": project})
    manifest_path(settings).parent.mkdir()
    manifest_path(settings).write_text("{}")
    then = time.time() - 100
    for path in [project / "dbt_project.yml", *(project / "models").rglob("*"), project / "models"]:
        os.utime(path, (then, then))
    os.utime(manifest_path(settings), (then + 10, then + 10))
    assert manifest_problem(settings) is None

    (project / "models" / "medilink" / "x.sql").rename(project / "models" / "beds" / "x.sql")

    assert (project / "models" / "beds" / "x.sql").stat().st_mtime == then  # the file's own time says nothing
    assert manifest_problem(settings) in {f"{manifest_path(settings)} is older than models/{folder} (a file added, "
                                          "moved or removed there)" for folder in ("medilink", "beds")}
