"""benchmarks/_cpu.py: the CPU time `bench api` reports per request for a server, Postgres and the client. A process's
descendants are counted while they run and after they end (their parent holds their time once it has waited for
them), so a Postgres backend that closed during a scenario is not lost."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("bench_cpu", Path(__file__).resolve().parents[2] / "benchmarks" / "_cpu.py")
cpu = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cpu)

BURN = "import time\nwhile time.process_time() < 0.4: pass\n"  # 0.4 s of CPU, however busy the machine


def test_the_cpu_of_a_child_is_counted_while_it_runs_and_after_it_ended():
    before = cpu.cpu_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdout.write('x'); sys.stdout.flush()\n"
                              "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.read(1) == b"x"  # it has burnt its 0.4 s and waits
    running = cpu.cpu_seconds(os.getpid())
    child.communicate(b"")  # it ends and is waited for: its time moves to this process's children's time
    ended = cpu.cpu_seconds(os.getpid())
    assert running - before >= 0.35
    assert ended - before >= 0.35


def test_no_process_has_no_cpu():
    assert cpu.cpu_seconds(0) == 0.0
