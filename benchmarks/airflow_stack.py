"""Airflow 3 as `./start.sh` runs it, for benchmarks that time a DAG run: api-server, scheduler, dag-processor and
triggerer with the LocalExecutor (elt.devstack.Stack's settings), on a metadata database of a Postgres the
benchmark already started, reading the DAG files it is given.

Runs are triggered with the `airflow` command and followed in the metadata database; what a run took is what
Airflow recorded (the run's start and end), so the command's own start-up is not counted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import psycopg

from elt.devstack.__main__ import Stack
from elt.devstack.servers import EmbeddedPostgres, free_port, stop_process, wait_for


@dataclass
class DagRunTimes:
    """A finished run as Airflow recorded it; times in seconds from the moment the run was queued (triggered)."""

    run_id: str
    state: str
    started: float  # the scheduler started the run
    ended: float
    tasks: dict[str, tuple[str, int, float | None, float | None]]  # task_id -> (state, try_number, start, end)
    cpu: dict[str, float] | None = None  # CPU seconds per Airflow service from the trigger to the end

    @property
    def seconds(self) -> float:
        """From the trigger to the run's end: what a user waits for."""
        return self.ended

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state, *_ in self.tasks.values():
            counts[str(state)] = counts.get(str(state), 0) + 1
        return counts


class AirflowStack:
    def __init__(self, root: Path, postgres: EmbeddedPostgres, dag_files: list[Path], env: dict[str, str]):
        self.root = root
        self.postgres = postgres
        self.dags = root / "dags"
        self.dags.mkdir(parents=True, exist_ok=True)
        for dag_file in dag_files:  # the real files, linked: what runs is what ./start.sh runs
            (self.dags / dag_file.name).symlink_to(dag_file)
        postgres.create_database("airflow")
        self.stack = Stack()
        self.stack.data_dir = root
        self.stack.logs = root / "logs"
        self.stack.airflow_port = free_port()
        self.stack.env = {**os.environ, **env, "AIRFLOW_DATABASE_URL": postgres.url("airflow")}
        # As deployed (the image runs compileall; ./start.sh sets nothing): bytecode is cached, so the processes
        # that parse the DAG files and run the tasks do not compile `elt` again every time.
        self.stack.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.stack.airflow_env()
        self.stack.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags)
        # Only the DAGs a benchmark triggers run: an ingest DAG unpaused here would start on its schedule.
        self.stack.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
        self.meta_url = postgres.url("airflow")

    def start(self) -> None:
        self.stack.start_airflow()
        port = self.stack.airflow_port
        wait_for(lambda: urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=3),  # noqa: S310
                 timeout=300, what="Airflow api-server", log_file=self.stack.logs / "airflow-api-server.log")

    def stop(self) -> None:
        for service in reversed(self.stack.services):
            stop_process(service.process)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each Airflow service with all its processes (the scheduler's include the task
        processes its LocalExecutor started), for where a run's cost goes."""
        import psutil

        used = {}
        for service in self.stack.services:
            try:
                root = psutil.Process(service.process.pid)
                total = sum(root.cpu_times()[:4])  # user, system and those of its finished children
                for child in root.children(recursive=True):
                    try:
                        total += sum(child.cpu_times()[:4])  # a live child: its own and its finished children's
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                total = 0.0
            used[service.name.removeprefix("airflow-")] = total
        return used

    def airflow(self, *args: str) -> str:
        result = self.stack.airflow(*args)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        """Until the dag-processor has parsed the file (the DAG is in the metadata database), then unpause it."""
        def parsed():
            with psycopg.connect(self.meta_url) as conn:
                return conn.execute("select 1 from dag where dag_id = %s", (dag_id,)).fetchone()

        wait_for(parsed, timeout=timeout, what=f"DAG {dag_id} to be parsed",
                 log_file=self.stack.logs / "airflow-dag-processor.log")
        self.airflow("dags", "unpause", dag_id)

    def run(self, dag_id: str, conf: dict | None = None, timeout: float = 1800) -> DagRunTimes:
        """Trigger `dag_id` and wait until its run has finished."""
        with psycopg.connect(self.meta_url) as conn:
            before = conn.execute("select coalesce(max(id), 0) from dag_run where dag_id = %s", (dag_id,)).fetchone()[0]
        cpu_before = self.cpu_seconds()
        self.airflow("dags", "trigger", dag_id, "--conf", json.dumps(conf or {}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.meta_url) as conn:
                row = conn.execute(
                    "select run_id, state, extract(epoch from start_date - queued_at), "
                    "extract(epoch from end_date - queued_at) from dag_run "
                    "where dag_id = %s and id > %s and state in ('success', 'failed') order by id limit 1",
                    (dag_id, before)).fetchone()
                if row:
                    tasks = {task_id: (state, tries, _seconds(start), _seconds(end))
                             for task_id, state, tries, start, end in conn.execute(
                        "select ti.task_id, ti.state, ti.try_number, extract(epoch from ti.start_date - run.queued_at), "
                        "extract(epoch from ti.end_date - run.queued_at) from task_instance as ti "
                        "join dag_run as run using (dag_id, run_id) where ti.dag_id = %s and ti.run_id = %s",
                        (dag_id, row[0]))}
                    cpu = {name: used - cpu_before.get(name, 0.0) for name, used in self.cpu_seconds().items()}
                    return DagRunTimes(row[0], row[1], _seconds(row[2]), _seconds(row[3]), tasks, cpu)
            time.sleep(0.5)
        raise TimeoutError(f"{dag_id} did not finish within {timeout:.0f} s; logs in {self.stack.logs}")


def _seconds(value) -> float | None:
    return None if value is None else float(value)


def python_path(*extra: Path) -> str:
    """PYTHONPATH for the Airflow processes: the extra folders, then this checkout (its `elt`), then what was set."""
    parts = [str(p) for p in extra] + [str(Path(__file__).resolve().parents[1])]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


if __name__ == "__main__":  # a smoke run: python benchmarks/airflow_stack.py DAG_FILE DAG_ID [EXTRA_PYTHONPATH]
    import tempfile

    dag_file, dag_id = Path(sys.argv[1]).resolve(), sys.argv[2]
    extra = [Path(p).resolve() for p in sys.argv[3:]]
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        pg = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
        pg.start()
        stack = AirflowStack(root / "airflow", pg, [dag_file], {"PYTHONPATH": python_path(*extra)})
        try:
            stack.start()
            stack.wait_for_dag(dag_id)
            for _ in range(3):
                result = stack.run(dag_id)
                print(result.state, f"{result.seconds:.2f} s", flush=True)
        finally:
            stack.stop()
            pg.stop()
