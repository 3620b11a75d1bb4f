"""Airflow's LocalExecutor with dbt already imported in its workers (docs/decisions/0015).

The nightly's `dbt_build` task runs dbt in its own process (elt.dbt_watch). The LocalExecutor forks its worker
processes from the scheduler when it starts, and each worker forks the process of every task it runs. So a module
the scheduler has imported before that first fork is already in every task's process. Importing dbt there (about
1 s of CPU and 60 MB of memory, shared by the forks until written) takes dbt's import off every nightly build and
every model task that runs alone. The import happens once, when the scheduler starts.

Set `AIRFLOW__CORE__EXECUTOR=elt.executor.LocalExecutorWithDbt` (./start.sh and docker-compose.yaml do). Plain
`LocalExecutor` gives the same results, each dbt task just starts about a second later. If dbt cannot be imported
the executor logs why and carries on as the plain LocalExecutor: the task that needs dbt then fails with the
import error itself.
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What elt.transform.invoke_dbt loads before dbt runs a node: the command line, the adapter it registers, and the
# parser and task of `dbt build` and `dbt run`. A module missing from this list is imported by the task as before.
DBT_MODULES = (
    "dbt.cli.main",
    "dbt.adapters.postgres",
    "dbt.adapters.postgres.impl",
    "dbt.parser.manifest",
    "dbt.task.build",
    "agate",
)


def preload(modules: tuple[str, ...] = DBT_MODULES) -> list[str]:
    """Import `modules`; returns the ones that could not be imported (logged, never raised)."""
    started = time.perf_counter()
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - the executor must start whatever dbt's state
            missing.append(name)
            log.warning("could not preload %s for the task processes (%s: %s); dbt tasks import it themselves",
                        name, type(error).__name__, error)
    log.info("dbt preloaded for the task processes in %.1f s", time.perf_counter() - started)
    return missing


class LocalExecutorWithDbt(LocalExecutor):
    """LocalExecutor whose worker processes, and the task processes they fork, start with dbt imported."""

    def start(self) -> None:
        if self.is_mp_using_fork:  # with spawn, workers import afresh and a preload would be wasted
            preload()
        super().start()
