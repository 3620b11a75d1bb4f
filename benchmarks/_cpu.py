"""CPU time of processes on this machine, from /proc (Linux), for the benchmarks that report who spends what: a server
and its workers, Postgres and its backends. No import of the project, so that `bench api_inprocess`'s children, each
importing the code tree it measures, can use it too."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg


def postmaster(url: str) -> int:
    """The process id of the Postgres server at `url` (the parent of a backend)."""
    with psycopg.connect(url) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by process `root` and its descendants, from /proc (Linux): the living
    ones' own time and the time of those that ended, which their parent holds once it has waited for them (so a
    Postgres backend that closed is still counted); 0 for no process."""
    if not root:
        return 0.0
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        used[pid] = sum(map(int, fields[11:15]))  # utime, stime, cutime, cstime (fields 14-17 of proc(5))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")
