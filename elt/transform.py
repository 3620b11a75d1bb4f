"""Runs dbt against the warehouse that Settings points at.

dbt runs as a subprocess so its logging and global state stay out of the Airflow task process, and its
output is streamed line by line into our log (and so into the Airflow task log).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from elt.config import Settings, get_settings

log = logging.getLogger(__name__)


class DbtError(RuntimeError):
    """dbt exited non-zero. The message carries the failing lines of its output."""


def dbt_connection_env(settings: Settings) -> dict[str, str]:
    """The variables dbt/profiles.yml reads (DBT_PG_*, from `database_url`), the disclosure control of the
    de-identified marts (DBT_SDC_*, read by dbt/macros/disclosure_control.sql), dbt's tracking opt-out, and
    unless `dbt_unit_tests` is set, the exclusion of unit tests from `dbt build` and `dbt test`. Both ways dbt
    runs take them from here: `run_dbt` (elt build) and the Airflow tasks (elt/orchestration.py)."""
    parts = settings.pg_parts()
    env = {
        "DBT_PG_HOST": parts["host"], "DBT_PG_PORT": parts["port"], "DBT_PG_USER": parts["user"],
        "DBT_PG_PASSWORD": parts["password"], "DBT_PG_DBNAME": parts["dbname"],
        "DBT_SDC_THRESHOLD": str(settings.sdc_threshold), "DBT_SDC_ROUNDING_BASE": str(settings.sdc_rounding_base),
        "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    if not settings.dbt_unit_tests:
        env["DBT_EXCLUDE_RESOURCE_TYPES"] = "unit_test"
    return env


def dbt_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the warehouse connection for dbt (any DBT_PG_* or unit-test exclusion
    already set is replaced: `Settings` decides)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("DBT_PG_") and key != "DBT_EXCLUDE_RESOURCE_TYPES"}
    env.update(dbt_connection_env(settings))
    return env


def dbt_executable() -> str:
    """The dbt installed beside this Python (the virtualenv's), else `dbt` from PATH."""
    dbt = Path(sys.executable).with_name("dbt")
    return str(dbt) if dbt.exists() else "dbt"


_DETAIL_LINE = re.compile(r"^([ \t]*)(DETAIL|CONTEXT):.*$", re.MULTILINE)
_DETAIL_SHOWN = r"\1\2:  (the row's values are not shown: they may be personal data)"


def without_row_values(text: str) -> str:
    """Postgres's DETAIL line repeats the values of the row it refused ("Failing row contains (...)", "Key
    (...)=(...)"), and a CONTEXT line may quote the input ("JSON data, line 1: ..."); both may be personal
    data: they never reach a log line or an error message."""
    return _DETAIL_LINE.sub(_DETAIL_SHOWN, text)


class _RowValuesFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = without_row_values(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def keep_row_values_out_of_dbt_logs() -> None:
    """For dbt run in this process (dbtRunner, as the Airflow tasks run it): its console and file loggers drop
    Postgres's DETAIL lines. dbt replaces their handlers on every invocation; filters stay."""
    for name in ("stdout_log", "file_log"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _RowValuesFilter) for existing in logger.filters):
            logger.addFilter(_RowValuesFilter())


def invoke_dbt(args: list[str], *, target_path: Path, settings: Settings | None = None, callbacks=()):
    """`dbt <args>` in this process (dbtRunner), as the Airflow tasks run it: no second interpreter to start, and
    `callbacks` see each of dbt's events as it happens. Its logs drop the refused rows' values
    (keep_row_values_out_of_dbt_logs); the connection and disclosure settings (dbt_connection_env) are in the
    environment for the call only. Returns dbt's dbtRunnerResult: `success`, `exception` (dbt could not run at
    all) and `result` (the nodes' results)."""
    from dbt.cli.main import dbtRunner

    settings = settings or get_settings()
    project = Path(settings.dbt_project_dir)
    keep_row_values_out_of_dbt_logs()
    env = dbt_connection_env(settings)
    replaced = {key: os.environ.get(key) for key in [*env, "DBT_EXCLUDE_RESOURCE_TYPES"]}
    os.environ.pop("DBT_EXCLUDE_RESOURCE_TYPES", None)  # Settings decides, as in dbt_env
    os.environ.update(env)
    try:
        return dbtRunner(callbacks=list(callbacks)).invoke(
            [*args, "--project-dir", str(project), "--profiles-dir", str(project), "--target", settings.dbt_target,
             "--target-path", str(target_path)])
    finally:
        for key, value in replaced.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


FAILURE_LINES = 20  # failure lines a DbtError keeps (its message goes to task logs and run records)


def run_dbt(args: list[str], *, settings: Settings | None = None) -> list[str]:
    """Run `dbt <args>` on the project; returns the output lines, raises DbtError on failure."""
    settings = settings or get_settings()
    project = Path(settings.dbt_project_dir)
    command = [dbt_executable(), *args, "--project-dir", str(project),
               "--profiles-dir", str(project), "--target", settings.dbt_target]
    log.info("running %s", " ".join(command[:2 + len(args) - 1]))
    process = subprocess.Popen(command, env=dbt_env(settings), cwd=project, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        line = without_row_values(line.rstrip())
        lines.append(line)
        log.info("dbt | %s", line)
    if process.wait() != 0:
        raise DbtError(f"dbt {' '.join(args)} failed (exit {process.returncode}):\n" + failure_summary(lines))
    return lines


def failure_summary(lines: list[str], keep: int = FAILURE_LINES) -> str:
    """What a failed dbt run's error says: the summary lines, and after a "Database Error" the lines that say
    what Postgres refused (a broken constraint names itself there), after a "Compilation Error" what the project
    refused (a disclosure-control setting out of bounds says so there). The last `keep` of them, after a line
    that counts the ones left out: the log has them all."""
    failures = [ln for index, ln in enumerate(lines)
                if "ERROR" in ln or "FAIL" in ln or "Error" in ln
                or any("Database Error" in earlier or "Compilation Error" in earlier
                       for earlier in lines[max(0, index - 2):index])]
    left_out = len(failures) - keep
    kept = failures[-keep:]
    if left_out > 0:
        kept.insert(0, f"({left_out} earlier failure line{'s' if left_out != 1 else ''} left out: dbt's log has all)")
    return "\n".join(kept)


def build(*, full_refresh: bool = False, select: str | list[str] | None = None, exclude: str | None = None,
          settings: Settings | None = None) -> list[str]:
    """`dbt build`: models, then their tests; a failing test stops the models downstream of it. `select` is one
    selector or several (a family's `dbt_select()`: their union)."""
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", *([select] if isinstance(select, str) else select)]
    if exclude:
        args += ["--exclude", exclude]
    return run_dbt(args, settings=settings)


def generate_docs(*, target_path: Path | None = None, settings: Settings | None = None) -> Path:
    """`dbt docs generate`: the model and column documentation site, served by the API at /dbt-docs/.
    Written to dbt/target unless `target_path` says otherwise; returns the folder."""
    settings = settings or get_settings()
    target = Path(target_path) if target_path else Path(settings.dbt_project_dir) / "target"
    run_dbt(["docs", "generate", "--target-path", str(target)], settings=settings)
    return target


# What `dbt parse` reads: a change to any of these makes target/manifest.json stale.
_PROJECT_INPUTS = ("dbt_project.yml", "models", "macros", "tests", "seeds", "snapshots", "analyses")


def manifest_path(settings: Settings) -> Path:
    return Path(settings.dbt_project_dir) / "target" / "manifest.json"


def parse(*, settings: Settings | None = None) -> Path:
    """`dbt parse`: writes target/manifest.json (no database needed), which every `<family>_marts` DAG renders its dbt tasks from."""
    settings = settings or get_settings()
    run_dbt(["parse"], settings=settings)
    return manifest_path(settings)


def manifest_problem(settings: Settings) -> str | None:
    """Why target/manifest.json cannot be trusted to describe the project (missing, or older than a project file or
    folder); None when it is current. Only modification times are compared: cheap enough for Airflow's DAG parsing.
    A folder's time changes when a file is added to it, moved out of it or removed, which a moved model's own file
    time does not show (and the families select dbt nodes by their folders)."""
    manifest = manifest_path(settings)
    if not manifest.exists():
        return f"{manifest} does not exist"
    built = manifest.stat().st_mtime
    project = Path(settings.dbt_project_dir)
    for name in _PROJECT_INPUTS:
        top = project / name
        for path in [top] if top.is_file() else [top, *top.rglob("*")] if top.is_dir() else []:
            if path.stat().st_mtime > built:
                what = "" if path.is_file() else " (a file added, moved or removed there)"
                return f"{manifest} is older than {path.relative_to(project)}{what}"
    return None
