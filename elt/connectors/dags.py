"""One Airflow DAG per declared connector, `connector_<name>`, made from its declaration (CONNECTORS_DIR), so that a new
connector file is a new DAG at the next parse and its `schedule` is the DAG's.

The DAG has one task, `run`, which calls elt.connectors.engine.run_connector: everything it does runs without Airflow
too (`elt connectors run NAME`). Its trigger form takes `full_reload` and `dry_run` (and `since`, for a pull). A run
whose destination is down (DestinationUnavailable) or whose warehouse connection dropped is retried with backoff; one
the destination refused, or a declaration that does not check, fails at once: a retry would get the same answer. A
delivery already made is recorded `skipped` and the task is skipped, so the grid shows that nothing was sent.

Airflow is imported inside the functions: `elt` itself runs without it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _params(connector) -> dict:
    from airflow.sdk import Param

    params = {
        "full_reload": Param(False, type="boolean", description="Deliver again although this build was delivered "
                             "(onto the same object or table); for a pull, start from no cursor."),
        "dry_run": Param(False, type="boolean", description="Count what would move; write nothing."),
    }
    if connector.pull is not None:
        params["since"] = Param("", type="string", description="Start from this cursor value instead of the last "
                                                               "good run's; empty: the last good run's.")
    return params


def run_task(name: str, context: dict) -> dict:
    """The `run` task: one connector run, its outcome (ids and counts) as XCom."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from elt.connectors.base import ConnectorError, DestinationUnavailable
    from elt.connectors.engine import RunOptions, run_connector
    from elt.runs import describe_failure, is_transient

    params = context["params"]
    dag_run = context.get("dag_run")
    trigger = "schedule" if str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled") else "manual"
    options = RunOptions(trigger=trigger, full_reload=bool(params.get("full_reload")),
                         since=params.get("since") or None, dry_run=bool(params.get("dry_run")))
    try:
        outcome = run_connector(name, options)
    except DestinationUnavailable as exc:
        raise ConnectorRetry(str(exc)) from None
    except ConnectorError as exc:
        raise AirflowFailException(f"{exc} (not retried: the same run would get the same answer)") from None
    except Exception as exc:
        if is_transient(exc):
            raise ConnectorRetry(f"connector {name}: {describe_failure(exc)}") from None
        raise AirflowFailException(f"connector {name} failed: {describe_failure(exc)} (see ops.connector_runs)") \
            from None
    if outcome.status == "skipped":
        raise AirflowSkipException(f"{outcome.run_key} was delivered before (run {outcome.detail.get('delivered_by_run')}"
                                   "): nothing sent")
    return outcome.as_dict()


class ConnectorRetry(Exception):
    """A run that may succeed when retried (the destination or the warehouse was unreachable): Airflow retries it."""


def connector_dag(connector):
    import pendulum
    from airflow.sdk import dag, task

    from elt.orchestration import DEFAULT_ARGS, on_run_finished, on_task_failure

    name = connector.name

    @dag(dag_id=connector.dag_id, schedule=connector.schedule, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=1, default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
         on_success_callback=on_run_finished, on_failure_callback=on_run_finished, params=_params(connector),
         doc_md=_DOC.format(description=connector.description, what=connector.what(), name=name,
                            when=connector.schedule or "by hand only",
                            personal="yes: its runs are audited" if connector.personal_data else "no"),
         tags=["connector", connector.direction, connector.kind.name])
    def connector_run():
        @task(task_id="run")
        def run(**context) -> dict:
            return run_task(name, context)

        run()

    return connector_run()


_DOC = """{description}

Connector `{name}` ({what}), declared in CONNECTORS_DIR/{name}.yml. Runs: {when}. Personal data: {personal}.

"Trigger DAG w/ config" takes `full_reload` (deliver again although delivered; a pull starts from no cursor),
`dry_run` (count, write nothing) and, for a pull, `since` (the cursor to start from). Each run leaves a row in
`ops.connector_runs` (`elt connectors runs {name}`, `GET /api/v1/connectors/{name}/runs`). A delivery already made
for the mart's build ends `skipped`; a destination that is down is retried with backoff; one that refuses fails at once.
This DAG is made from the declaration by elt/connectors/dags.py.
"""


def render(*, only: str | None = None, settings=None) -> dict:
    """{dag_id: DAG} of every declared connector (`only`: that DAG alone). A declaration that does not load is logged
    and left out, so one bad file does not take the other connectors' DAGs down (`elt connectors check` names it)."""
    from elt.config import get_settings
    from elt.connectors.spec import load_declared

    connectors, problems = load_declared((settings or get_settings()).connectors_dir)
    for problem in problems:
        log.error("connector left out of the DAGs: %s", problem)
    return {c.dag_id: connector_dag(c) for c in connectors.values() if only is None or only == c.dag_id}
