"""The executor ./start.sh and the image run: Airflow's LocalExecutor with dbt already imported in the processes
it forks (elt/executor.py, decision 0015)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_task_process_forked_after_start_finds_dbt_already_imported(airflow_home):
    """In a fresh interpreter (this one has imported dbt already): before start() dbt is not loaded; a process
    forked after it, as the executor's workers and their tasks are, has every preloaded module."""
    script = textwrap.dedent("""
        import os, sys
        from elt.executor import DBT_MODULES, LocalExecutorWithDbt
        assert "dbt.cli.main" not in sys.modules, "dbt was imported before the executor started"
        executor = LocalExecutorWithDbt(parallelism=1)
        executor.start()
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if all(name in sys.modules for name in DBT_MODULES) else 3)
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status))
        finally:
            executor.end()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "child 0" in result.stdout


def test_a_module_that_cannot_be_imported_is_reported_not_raised(airflow_home, caplog, capfd):
    # Airflow is imported only here, after the airflow_home fixture configured it: a module-level import would
    # configure Airflow with its defaults at collection, for every dag.test() of the session.
    from airflow.executors.local_executor import LocalExecutor

    from elt.executor import DBT_MODULES, LocalExecutorWithDbt, preload

    assert preload(("dbt.cli.main", "elt.no_such_module_here")) == ["elt.no_such_module_here"]
    out, err = capfd.readouterr()  # Airflow's logging (structlog) writes it, or the standard logging pytest captures
    assert "could not preload elt.no_such_module_here" in caplog.text + out + err
    assert "dbt.cli.main" in DBT_MODULES
    assert issubclass(LocalExecutorWithDbt, LocalExecutor)
