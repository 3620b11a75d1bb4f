"""Every source family's two DAGs, made from its declaration (elt/families/<family>.yml; decision 0019, issue 15).

A family's DAGs are written nowhere else: airflow/dags/family_ingest.py and family_marts.py call `render`, so a new
family file gives a new pair of DAGs at the next parse, and moving `daily_at` moves its schedule.

* `<family>_ingest`: daily at the family's `ingest.daily_at` (UTC; none when it is null) and on demand. `discover`
  lists the family's waiting files (or the one `key` given), `load` runs once per file (ledger, COPY, rejects, then
  the archive or quarantine move), and `publish` emits the asset `<family>_raw` when a file loaded, or when
  `rebuild_marts` or `full_refresh` asks for a build without one. `publish` runs once every load has finished,
  failed ones included, and publishes what loaded; `all_loads_succeeded` then fails the run when a load failed, so
  one bad file holds back no other (decision 0005).
* `<family>_marts`: scheduled on `<family>_raw`. One `dbt build` of the family's dbt folders (`marts.dbt_paths`
  with the shared models/staging/ops), followed by a task per model and per test (decision 0015), or one
  `build_marts` task while the manifest is missing or stale. That build runs in the `dbt_build` pool of one slot:
  every family's selection includes the shared ledger view, so two families' builds never run at once.

Airflow is imported inside the functions: `elt` itself runs without it. A worker running one task sets Airflow's
parsing context to that task's DAG, and `render(only=...)` then makes just that DAG.
"""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger(__name__)

DBT_POOL = "dbt_build"  # one slot; created by the local stack, docker/airflow/init.sh and the test fixtures
DBT_POOL_DESCRIPTION = "One dbt build at a time: every family's marts build includes the shared ledger view."


def raw_asset_name(family) -> str:
    """The asset `<family>_ingest` emits when it loaded new raw data and `<family>_marts` is scheduled on."""
    return f"{family.family}_raw"


def raw_asset_uri(family) -> str:
    return f"warehouse://raw/{family.family}"


def _ingest_params(family) -> dict:
    from airflow.sdk import Param

    return {
        "drop_type": Param("", type="string", description="Only this drop type; empty for all of the family's "
                                                          f"({', '.join(family.drop_types)})."),
        "key": Param("", type="string", description="Only this object key; empty for every waiting file."),
        "dry_run": Param(False, type="boolean", description="Validate and count only; load and move nothing."),
        "rebuild_marts": Param(False, type="boolean", description="Rebuild the marts even if no file is new."),
        "full_refresh": Param(False, type="boolean", description="Rebuild incremental marts from scratch."),
    }


def ingest_dag(family):
    """The `<family>_ingest` DAG: discover → load (one mapped task per file) → publish, and all_loads_succeeded."""
    import pendulum
    from airflow.sdk import Asset, dag, task

    from elt.orchestration import (
        AFTER_LOADS,
        DEFAULT_ARGS,
        fail_the_run_if_a_load_failed,
        on_run_finished,
        on_task_failure,
    )

    raw = Asset(name=raw_asset_name(family), uri=raw_asset_uri(family))
    drop_types = family.drop_types

    @dag(dag_id=family.ingest_dag_id, schedule=family.cron, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=1, default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
         on_success_callback=on_run_finished, on_failure_callback=on_run_finished, params=_ingest_params(family),
         doc_md=_INGEST_DOC.format(description=family.description, drop_types=", ".join(drop_types),
                                   when=family.schedule_text(), f=family.family),
         tags=[family.family, "ingest"])
    def ingest():
        @task
        def discover(params=None) -> list[str]:
            from elt.pipeline import discover_new_files, prepare

            prepare()
            if params["key"]:
                return [params["key"]]
            return discover_new_files(drop_types=drop_types, drop_type=params["drop_type"] or None)

        @task
        def load(key: str, params=None) -> dict:
            from elt.orchestration import load_file

            return load_file(key, dry_run=params["dry_run"])

        @task(outlets=[raw], trigger_rule=AFTER_LOADS)
        def publish(outcomes: list[dict], **context) -> dict:
            """Logs what the loads did and emits the family's raw asset when there is something new for dbt."""
            from elt.orchestration import publish_loads

            return publish_loads(context, list(outcomes or []), raw, family.marts_dag_id)

        loads = load.expand(key=discover())
        publish(loads)
        fail_the_run_if_a_load_failed(loads)

    return ingest()


_INGEST_DOC = """{description}

Loads the family's drops ({drop_types}) from S3 into raw tables, one mapped task per new file. Runs daily at
{when} (`ingest.daily_at` in elt/families/{f}.yml) and on demand: `POST /api/v1/drops` triggers it for the file
it stored, and "Trigger DAG w/ config" takes:

* `drop_type` - only this drop type; empty means all of the family's.
* `key` - only this object key; empty means every waiting file.
* `dry_run` - validate and count rows, then roll back; nothing is loaded or moved, nothing is published.
* `rebuild_marts` - publish even when no file is new, so `{f}_marts` rebuilds the marts.
* `full_refresh` - the same, and the marts' incremental models are rebuilt from scratch.

`discover` lists the waiting files, `load` runs once per file (ledger, COPY, rejects, then the archive move after
the commit), and `publish` emits the `{f}_raw` asset when at least one file was loaded: `{f}_marts` is scheduled
on that asset, so the marts rebuild when, and only when, new raw data is published.

One file's failed load never holds back the others: `publish` runs once every load has finished, failed ones
included, and publishes what loaded; `all_loads_succeeded` then ends `upstream_failed`, so the run is marked failed
and the failed load shows in red. Re-running a day is safe: a file already in the ledger is not loaded again, and
bad files are moved to quarantine with a `.error.json` saying why (`elt files`). A load is retried with backoff only
when it failed on a connection or a timeout; each run's state and failed tasks are written to `ops.pipeline_runs`.
This DAG is made from the family's declaration by elt/dag_factory.py (decision 0019).
"""


def marts_dag(family, settings, problem: str | None):
    """The `<family>_marts` DAG: dbt_build and its per-model followers, or one build_marts task when the manifest
    has a `problem` (elt.transform.manifest_problem, checked once for all families by `render`)."""
    import pendulum
    from airflow.sdk import Asset, Param, dag

    from elt.orchestration import DEFAULT_ARGS, on_run_finished, on_task_failure

    @dag(dag_id=family.marts_dag_id, schedule=[Asset.ref(name=raw_asset_name(family))],
         start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
         default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
         on_success_callback=on_run_finished, on_failure_callback=on_run_finished,
         params={"full_refresh": Param(False, type="boolean", description="Rebuild incremental marts from scratch.")},
         doc_md=_MARTS_DOC.format(description=family.description, f=family.family,
                                  select=" ".join(family.dbt_select())),
         tags=[family.family, "dbt"])
    def marts():
        _marts_tasks(family, settings, problem)

    return marts()


def _marts_tasks(family, settings, problem: str | None) -> None:
    from airflow.sdk import task

    from elt.orchestration import dbt_tasks

    if problem is None:
        dbt_tasks(settings, family, pool=DBT_POOL)
        return
    log.warning("%s renders one dbt build task, not one task per model: %s (run `elt parse`)", family.marts_dag_id,
                problem)

    @task(pool=DBT_POOL, doc_md=f"`dbt build` in one task, because {problem}. Run `elt parse` to get one task per "
                                "model.")
    def build_marts(**context) -> None:
        from elt.orchestration import build_models, full_refresh_requested

        build_models(family.dbt_select(), full_refresh=full_refresh_requested(context))

    build_marts()


_MARTS_DOC = """{description}

Rebuilds the family's marts whenever new raw data is published: scheduled on the `{f}_raw` asset, which `{f}_ingest`
emits after a run that loaded a file (or was asked to rebuild). It can also be triggered by hand, with
`full_refresh` to rebuild the incremental marts from scratch.

`dbt_build` runs `dbt build --select {select}` once, in the `dbt_build` pool (one family's build at a time). The
`dbt` task group has a task per model, `<model>.run`, then `<model>.test` (its tests); a test on several models is a
task of its own, and `dbt_source_tests` holds the tests on sources. Those tasks follow the build: each ends as dbt
finishes its nodes. A failing test fails its task; the models downstream of it end skipped (they keep their last
published rows) and `all_dbt_tasks_succeeded` fails the run. A test is never retried, a model only when dbt lost its
connection; clearing a model's task re-runs that model alone. If `dbt_build` fails or dies, each task runs its own
model instead, in dbt's order (decision 0015).

The tasks are rendered from `dbt/target/manifest.json`, which `elt parse` writes. If it is missing or older than a
file of the dbt project, the DAG renders the single `build_marts` task (the same `dbt build`) instead and logs why.
This DAG is made from the family's declaration by elt/dag_factory.py (decision 0019).
"""


def render(kind: Literal["ingest", "marts"], *, only: str | None = None, settings=None) -> dict:
    """{dag_id: DAG} of every declared family's `kind` DAG; `only`: that DAG alone (a worker's parsing context)."""
    from elt.config import get_settings
    from elt.families import declared_families, family_files
    from elt.transform import manifest_problem

    settings = settings or get_settings()
    # The ingest DAGs check their families against the contracts (their drop types); the marts DAG file, which the
    # dag-processor parses about once a second while its tasks finish (decision 0015), reads the family files only.
    families = declared_families(settings) if kind == "ingest" else family_files(settings.families_dir)
    chosen = [f for f in families.values() if only in (None, f.ingest_dag_id if kind == "ingest" else f.marts_dag_id)]
    if kind == "ingest":
        return {family.ingest_dag_id: ingest_dag(family) for family in chosen}
    problem = manifest_problem(settings) if chosen else None  # walks the dbt project's files: once per parse
    return {family.marts_dag_id: marts_dag(family, settings, problem) for family in chosen}
