"""The benchmarks' load generator (benchmarks/api.py: run_clients): every client thread measures from a stop time set
before any of them is released. (Issue 14: a thread could pass the start barrier before the stop time was set, stop
at once and record nothing, so a scenario could end with no requests at all.) No timing is asserted: only that
every thread measured at least one request."""

from __future__ import annotations

import importlib.util
import threading
from collections import Counter
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "api.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_api_under_test", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("attempt", range(5))
def test_every_client_thread_measures_requests(bench, attempt):
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def request(_client) -> None:
        with lock:
            calls[threading.get_ident()] += 1

    rps, latencies = bench.run_clients(8, 0.02, lambda: None, request)
    assert len(calls) == 8
    warm_up = 3
    assert all(count > warm_up for count in calls.values()), calls  # each thread measured at least one request
    assert len(latencies) == sum(calls.values()) - 8 * warm_up and rps > 0


def test_a_failing_client_is_reported_not_hidden(bench):
    def request(_client) -> None:
        raise ConnectionRefusedError("no server")

    with pytest.raises(RuntimeError, match="a client failed"):
        bench.run_clients(4, 0.02, lambda: None, request)


def test_bench_api_loads_the_dbt_bench_generator(bench):
    """bench api generates its data with benchmarks/dbt.py, loaded by path; that module declares dataclasses, which
    look their module up in sys.modules while the class is made (loading it unregistered crashed bench api)."""
    dbt_bench = bench.load_dbt_bench()
    assert callable(dbt_bench.make_patients) and callable(dbt_bench.write_day)
    assert dbt_bench.History.__dataclass_fields__["factor"].type == "int"
