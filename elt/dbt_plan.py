"""What a family's `dbt build` runs and how its marts DAG shows it: one Airflow task per model, read from
dbt/target/manifest.json, and the rule by which each task follows the one `dbt build` (docs/decisions/0015).

The build selects the family's dbt folders (elt.families.Family.dbt_select(): `--select path:<folder> ...`); the
tasks are for the nodes dbt selects that way (`select_paths`), as dbt selects them: a node whose file is in one of
the folders, and every test on such a node (dbt's default, eager, indirect selection).

The tasks, inside the `dbt` task group:
* `<model>.run`: the model (and its unit tests, when they run: dbt builds it after them); `<model>_run` when
  the model has no tests of its own;
* `<model>.test`: the data tests on that model alone;
* `<test>_test`: a test on several models (a relationship, a reconciliation), after all of them;
and `dbt_source_tests`, the tests on sources. A task's upstream tasks are the ones `dbt build` finishes before
it: a model waits for its parents' tests, and for a test on several models when it reads all of those models.

Each task follows its nodes' results in the build (`follow`); when the build has no result for them (a retry,
a cleared task, a build that died), the task waits for its upstream tasks and then runs its node alone.

Pure: neither Airflow nor dbt is imported here. The DAG file renders from it; the tests call it directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

GROUP = "dbt"
SOURCE_TESTS_TASK = "dbt_source_tests"

# dbt's node statuses, by what they mean to the task that follows the node.
PASSED = frozenset({"success", "pass", "warn"})  # dbt build lets a warning through to the next model too
FAILED = frozenset({"error", "fail", "runtime error", "partial success"})  # partial: a microbatch model
SKIPPED = frozenset({"skipped"})  # dbt did not run it: something it depends on failed

# Airflow task states after which a task does not change unless someone clears it.
FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class WatchTask:
    """One Airflow task: the dbt nodes whose results decide it, and the command that re-runs it alone."""

    group: tuple[str, ...]  # task groups it sits in: ("dbt", "<model>"), ("dbt",) or ()
    name: str
    kind: str  # "model" or "tests"
    watched: tuple[str, ...]  # dbt unique ids: the model (after its unit tests), or the tests
    rerun: tuple[str, ...]  # dbt arguments that build or test these nodes alone
    upstream: tuple[str, ...] = ()  # task ids

    @property
    def task_id(self) -> str:
        return ".".join((*self.group, self.name))


@dataclass(frozen=True)
class Decision:
    action: str  # "wait", "success", "failed", "run_alone" or "skip"
    reason: str = ""


def _node_names(manifest: dict) -> dict[str, str]:
    names = {uid: node["name"] for uid, node in manifest["nodes"].items()}
    names.update({uid: test["name"] for uid, test in manifest.get("unit_tests", {}).items()})
    return names


def in_paths(node: dict, paths: Iterable[str]) -> bool:
    """Whether dbt's `path:` method selects `node` (a manifest entry) by one of `paths` (folders or files relative
    to the project): its file is one of them or under one, or its properties file is one of them (as
    dbt.graph.selector_methods.PathSelectorMethod)."""
    file = node["original_file_path"]
    patch = (node.get("patch_path") or "").partition("://")[2]
    return any(file == path or file.startswith(path.rstrip("/") + "/") or patch == path for path in paths)


def selected_by_paths(manifest: dict, paths: Iterable[str]) -> set[str]:
    """The unique ids `dbt build --select path:<p> ...` selects: the nodes, sources and unit tests in `paths`, and
    every test and unit test on one of them (dbt's default indirect selection, eager: a test is in when any node
    it tests is)."""
    paths = tuple(paths)
    entries = {**manifest["nodes"], **manifest["sources"], **manifest.get("unit_tests", {})}
    direct = {uid for uid, node in entries.items() if node["resource_type"] != "operation" and in_paths(node, paths)}
    tests = {uid for uid, node in entries.items() if node["resource_type"] in ("test", "unit_test")
             and direct.intersection(node["depends_on"]["nodes"])}
    return direct | tests


class _Graph:
    """The manifest's models, tests and sources, with the family's selection applied."""

    def __init__(self, manifest: dict, *, select_paths: Iterable[str], unit_tests: bool):
        nodes = manifest["nodes"]
        self.names = _node_names(manifest)
        self.parents = {uid: tuple(node["depends_on"]["nodes"]) for uid, node in nodes.items()}
        self.ephemeral = {uid for uid, node in nodes.items()
                          if node["resource_type"] == "model" and node["config"]["materialized"] == "ephemeral"}
        selected = selected_by_paths(manifest, select_paths)
        self.models = sorted(uid for uid in selected
                             if uid in nodes and nodes[uid]["resource_type"] == "model" and uid not in self.ephemeral)
        self.tests = sorted(uid for uid in selected if uid in nodes and nodes[uid]["resource_type"] == "test")
        self.unit_tests = {uid: test["depends_on"]["nodes"][0] for uid, test in manifest.get("unit_tests", {}).items()
                           if unit_tests and uid in selected}
        self._ancestors: dict[str, frozenset[str]] = {}

    def model_parents(self, uid: str) -> list[str]:
        """The selected models `uid` reads, looking through ephemeral models (dbt inlines those)."""
        found: list[str] = []
        for parent in self.parents.get(uid, ()):
            if parent in self.ephemeral:
                found += self.model_parents(parent)
            elif parent in self.models:
                found.append(parent)
        return sorted(set(found))

    def sources(self, uid: str) -> set[str]:
        found = {p for p in self.parents.get(uid, ()) if p.startswith("source.")}
        for parent in self.parents.get(uid, ()):
            if parent in self.ephemeral:
                found |= self.sources(parent)
        return found

    def ancestors(self, uid: str) -> frozenset[str]:
        """Every node upstream of `uid` (models of any kind and sources), not `uid` itself."""
        if uid not in self._ancestors:
            found: set[str] = set()
            for parent in self.parents.get(uid, ()):
                found |= {parent, *self.ancestors(parent)}
            self._ancestors[uid] = frozenset(found)
        return self._ancestors[uid]


@lru_cache(maxsize=2)
def _manifest(path: str, mtime_ns: int) -> dict:
    """The parsed manifest, read once per version: a parse of airflow/dags/family_marts.py renders every family's
    marts DAG from the same file (read only; _Graph does not change it)."""
    return json.loads(Path(path).read_text())


def watch_tasks(manifest_file: Path, *, select_paths: Iterable[str], unit_tests: bool = False) -> list[WatchTask]:
    """A marts DAG's tasks for the models and tests that `dbt build --select path:<p> ...` (`select_paths`: a
    family's dbt paths) runs, in an order in which every task comes after its upstream tasks."""
    path = Path(manifest_file)
    graph = _Graph(_manifest(str(path), path.stat().st_mtime_ns), select_paths=select_paths, unit_tests=unit_tests)
    single: dict[str, list[str]] = {}  # model -> the tests on it alone
    several: dict[str, list[str]] = {}  # test on several nodes -> its model parents
    on_sources: list[str] = []
    for test in graph.tests:
        parents = graph.parents[test]
        model_parents = [p for p in parents if p in graph.models]
        if len(parents) == 1 and model_parents:
            single.setdefault(model_parents[0], []).append(test)
        elif model_parents:
            several[test] = model_parents
        else:
            on_sources.append(test)
    tested_sources = {graph.parents[test][0] for test in on_sources}

    def last_task_of(model: str) -> str:
        name = graph.names[model]
        return f"{GROUP}.{name}.test" if model in single else f"{GROUP}.{name}_run"

    def run_task_of(model: str) -> str:
        name = graph.names[model]
        return f"{GROUP}.{name}.run" if model in single else f"{GROUP}.{name}_run"

    def blocking(model: str) -> list[str]:
        """Tests on several nodes that dbt build finishes before `model`: those whose nodes are all upstream of
        it, except where a parent model of `model` already waits for the test."""
        ancestors = graph.ancestors(model)
        parents = graph.model_parents(model)
        return [test for test in several
                if set(graph.parents[test]) <= ancestors
                and not any(set(graph.parents[test]) <= graph.ancestors(parent) for parent in parents)]

    tasks: list[WatchTask] = []
    if on_sources:
        tasks.append(WatchTask((), SOURCE_TESTS_TASK, "tests", tuple(on_sources),
                               ("test", "--select", *sorted(graph.names[t] for t in on_sources))))
    for model in graph.models:
        name = graph.names[model]
        upstream = [last_task_of(parent) for parent in graph.model_parents(model)]
        if graph.sources(model) & tested_sources:
            upstream.append(SOURCE_TESTS_TASK)
        upstream += [f"{GROUP}.{graph.names[test]}_test" for test in blocking(model)]
        units = tuple(sorted(uid for uid, tested in graph.unit_tests.items() if tested == model))
        group, run_name = ((GROUP, name), "run") if model in single else ((GROUP,), f"{name}_run")
        # The model alone, after its unit tests when those run (DBT_EXCLUDE_RESOURCE_TYPES leaves them out).
        tasks.append(WatchTask(group, run_name, "model", (*units, model),
                               ("build", "--select", name, "--resource-type", "model", "--resource-type", "unit_test"),
                               tuple(sorted(upstream))))
        if model in single:
            tests = tuple(single[model])
            tasks.append(WatchTask(group, "test", "tests", tests,
                                   ("test", "--select", *sorted(graph.names[t] for t in tests)),
                                   (run_task_of(model),)))
    for test, parents in several.items():
        tasks.append(WatchTask((GROUP,), f"{graph.names[test]}_test", "tests", (test,),
                               ("test", "--select", graph.names[test]),
                               tuple(sorted(last_task_of(parent) for parent in parents))))
    return _in_order(tasks)


def _in_order(tasks: list[WatchTask]) -> list[WatchTask]:
    by_id = {task.task_id: task for task in tasks}
    ordered: list[WatchTask] = []
    placed: set[str] = set()

    def place(task: WatchTask) -> None:
        if task.task_id in placed:
            return
        for upstream in task.upstream:
            place(by_id[upstream])
        placed.add(task.task_id)
        ordered.append(task)

    for task in tasks:
        place(task)
    return ordered


def follow(task: WatchTask, *, try_number: int, producer_state: str | None, results: dict[str, list],
           upstream_states: dict[str, str | None]) -> Decision:
    """What the task does now, given the build's results so far ({unique id: [status, message]}), the state of
    the task that runs the build, and the states of its upstream tasks.

    * First try, every watched node has a result: its outcome (success, or failed with dbt's messages); a node
      dbt skipped because something upstream failed is decided by the upstream tasks (a retried parent may still
      succeed).
    * First try, results missing: wait while the build runs; once it has finished without them, decide by the
      upstream tasks.
    * A later try (a retry, or a task cleared in the UI): decide by the upstream tasks; the build ran once.
    Deciding by the upstream tasks: wait until they have all finished; if they all succeeded, run the node
    alone; otherwise skip it (its inputs were not built).
    """
    if try_number <= 1:
        statuses = {uid: results[uid][0] for uid in task.watched if uid in results}
        if len(statuses) == len(task.watched):
            failed = [uid for uid, status in statuses.items() if status in FAILED]
            if failed:
                return Decision("failed", "; ".join(_failure(uid, results[uid]) for uid in failed))
            if not any(status in SKIPPED for status in statuses.values()):
                return Decision("success")
        elif producer_state not in FINISHED:
            return Decision("wait", "the build has not reached it yet")
    return _after_upstream(task, upstream_states)


def all_finished(task_ids: tuple[str, ...], states: dict[str, str | None]) -> Decision:
    """The run's last word on its dbt tasks: wait until every one has finished; failed if any failed."""
    waiting = [task for task in task_ids if states.get(task) not in FINISHED]
    if waiting:
        return Decision("wait", f"waiting for {len(waiting)} dbt tasks")
    failed = sorted(f"{task} {states[task]}" for task in task_ids if states[task] in ("failed", "upstream_failed"))
    if failed:
        return Decision("failed", "; ".join(failed))
    return Decision("success")


def node_name(uid: str) -> str:
    """A node's name from its unique id: model.<project>.<name>, test.<project>.<name>.<hash>,
    unit_test.<project>.<model>.<name>."""
    parts = uid.split(".")
    return parts[3] if parts[0] == "unit_test" and len(parts) > 3 else parts[2] if len(parts) > 2 else uid


def _failure(uid: str, result: list) -> str:
    status, message = result[0], (result[1] if len(result) > 1 else None) or ""
    return f"{node_name(uid)} {status}" + (f": {message}" if message else "")


def _after_upstream(task: WatchTask, upstream_states: dict[str, str | None]) -> Decision:
    states = {upstream: upstream_states.get(upstream) for upstream in task.upstream}
    waiting = sorted(upstream for upstream, state in states.items() if state not in FINISHED)
    if waiting:
        return Decision("wait", f"waiting for {', '.join(waiting)}")
    not_built = sorted(f"{upstream} {state}" for upstream, state in states.items() if state != "success")
    if not_built:
        return Decision("skip", f"not built: upstream {', '.join(not_built)}")
    return Decision("run_alone")
