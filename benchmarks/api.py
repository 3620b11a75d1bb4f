"""The API under its production server (granian through `python -m backend.serve`, as ./start.sh runs it) against
the API a user would otherwise write (benchmarks/api_peer.py: FastAPI under uvicorn with a psycopg pool, the same
number of workers, the same page queries), driven by the same client in the same run, on a fact table of 1,000,000
rows (issue 14).

Set-up: 100 days of 10,000 medical records and 1,000 triage visits (plus the facilities and patients files) go
through `elt`'s real ingest from the local S3 endpoint; dbt builds `core.fct_medical_records`,
`analytics.triage_trends` and what they need; `vacuum analyze`. granian serves `backend.wsgi:app` on loopback with
./start.sh's workers and threads (API_WORKERS and API_THREADS, by default 2 and 8), its access log on, rate limits
off (they would refuse a benchmark's rate, by design); uvicorn serves the peer with as many workers.

Scenarios, each CONCURRENCY client threads sending requests back to back on keep-alive connections for --seconds
after a warm-up, all of them once per round, --rounds rounds (throughput: the median of the rounds):
  * GET /health through the API's server: no database, no key, the ceiling of any endpoint of that server;
  * an analyst page: GET /api/v1/triage-trends?visit_date_from=...&limit=20 with an analyst key (key check, role,
    exact total, as_of, sources, ETag), and the peer's GET /triage-trends (the same page query, nothing else);
  * the audited clinician page: GET /api/v1/medical-records?record_date_from=...&limit=20 with a clinician key (the
    audit row too; the total is the planner's estimate: 990,000 rows match), and the peer's GET /medical-records;
  * the same clinician request with a cursor after 900,000 rows;
  * conditional GETs: the analyst page again with If-None-Match holding its ETag (a 304, no mart read), and the
    clinician page likewise (a 304 whose audit row is written);
  * the clinician page's SQL sent straight to Postgres by psycopg (context: the cost of the query itself).

Prints requests per second and p50/p99 latency of each, the CPU per request of the server called, of Postgres and of
the client threads (benchmarks/_cpu.py: who spends what), and the ratios of issue 14 with their targets:
analyst / peer >= 1.0; clinician / peer >= 0.7; list endpoint / GET /health >= 0.5; 304 / GET /health >= 0.8;
deep-page p99 / first-page p99 <= 1.2.

    ./start.sh bench api [--days N] [--records-per-day N] [--visits-per-day N] [--concurrency N] [--seconds S]
                         [--rounds N]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from backend.api.clinical import MEDICAL_RECORDS  # noqa: E402
from backend.api.listing import encode_cursor  # noqa: E402
from elt.config import Settings  # noqa: E402
from elt.devstack.servers import EmbeddedPostgres, LocalS3, free_port, pg_bin_dir  # noqa: E402
from elt.pipeline import prepare  # noqa: E402
from elt.transform import run_dbt  # noqa: E402

PAGE = 20
COLUMNS = ", ".join(c.name for c in MEDICAL_RECORDS.columns)


def sibling(stem: str, name: str):
    """benchmarks/<stem>.py as module `name`: loaded by path, because benchmarks/ cannot go on sys.path (dbt.py there
    would hide dbt's own package), and registered before it runs (dbt.py's dataclasses look their module up in
    sys.modules)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{stem}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def load_dbt_bench():
    """benchmarks/dbt.py, for its generator and ingest."""
    return sibling("dbt", "bench_dbt")


cpu_seconds, postmaster = sibling("_cpu", "bench_cpu").cpu_seconds, sibling("_cpu", "bench_cpu").postmaster


def generate_and_load(root: Path, settings: Settings, s3: LocalS3, days: int, per_day: int, visits: int) -> None:
    dbt_bench = load_dbt_bench()

    rng = random.Random(7)
    csvs = root / "csv"
    csvs.mkdir()
    patients = dbt_bench.make_patients(rng, 1000)
    first = dbt_bench.FIRST_DAY
    dbt_bench.write_csv(csvs / f"facilities_{first}.csv", ["name", "state", "lga", "lat", "lon", "type"],
                        ([n, s, lga, "9.0", "7.0", kind] for n, s, lga, kind in dbt_bench.FACILITIES))
    dbt_bench.write_csv(csvs / f"patients_{first}.csv", ["facility_name", "first_name", "last_name", "sex", "dob", "phone"],
                        ([*p, rng.choice("MF"), f"{rng.randint(1940, 2024)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                          f"080{rng.randint(10_000_000, 99_999_999)}"] for p in patients))
    files = [csvs / f"facilities_{first}.csv", csvs / f"patients_{first}.csv"]
    for offset in range(days):
        files += dbt_bench.write_day(csvs, first + timedelta(days=offset), patients, rng, per_day, visits)
    seconds = dbt_bench.ingest(s3, settings, files)
    print(f"ingested {len(files)} files in {seconds:.1f} s", flush=True)
    start = time.perf_counter()
    run_dbt(["run", "--select", "+fct_medical_records", "+triage_trends"], settings=settings)
    subprocess.run([str(pg_bin_dir() / "psql"), settings.database_url, "-qc", "vacuum analyze"], check=True)
    print(f"built core.fct_medical_records in {time.perf_counter() - start:.1f} s", flush=True)


def run_clients(concurrency: int, seconds: float, make_client, request) -> tuple[float, list[float]]:
    """`concurrency` threads, each with its own client, sending requests back to back for `seconds`; (requests per
    second, latencies in s). The clock starts when the last thread is ready: the barrier's action sets the stop
    time before it lets any thread go (a thread released before the stop time was set would stop at once and
    record nothing), and every thread measures at least one request."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []
    window: dict[str, float] = {}

    def open_window() -> None:  # run by the last thread to arrive, before any is released
        window["began"] = time.perf_counter()
        window["stop"] = window["began"] + seconds

    start_gate = threading.Barrier(concurrency, action=open_window)

    def worker(index: int) -> None:
        try:
            client = make_client()
            for _ in range(3):  # warm-up: connections open, caches filled
                request(client)
            start_gate.wait()
            mine, stop = latencies[index], window["stop"]
            while True:
                began = time.perf_counter()
                request(client)
                mine.append(time.perf_counter() - began)
                if began >= stop:
                    break
        except threading.BrokenBarrierError:
            pass  # another client failed first: its failure is the one reported
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            failures.append(exc)
            start_gate.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"a client failed: {failures[0]!r}")
    elapsed = time.perf_counter() - window["began"]
    every = [latency for mine in latencies for latency in mine]
    return len(every) / elapsed, every


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_for_http(port: int, log: Path, what: str) -> None:
    for _ in range(150):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health" if what != "peer" else "/docs")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")


def start_api(url: str, root: Path, workers: str) -> tuple[subprocess.Popen, int]:
    """The API as ./start.sh runs it (`python -m backend.serve`: granian with the settings of the environment)."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "API_RATE_LIMIT": "", "API_AUTH_FAILURE_LIMIT": "",
           "API_DBT_DOCS_DIR": str(root), "API_WORKERS": workers}
    command = [sys.executable, "-m", "backend.serve", "--host", "127.0.0.1", "--port", str(port)]
    log = root / "api.log"
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_for_http(port, log, "API")
    return process, port


def start_peer(url: str, root: Path, workers: str) -> tuple[subprocess.Popen, int]:
    """benchmarks/api_peer.py under uvicorn, as its users run it (access log on, like the API's)."""
    port = free_port()
    log = root / "peer.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("uvicorn")), "benchmarks.api_peer:app", "--workers", workers,
         "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PEER_DATABASE_URL": url, "PYTHONPATH": str(REPO)}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_for_http(port, log, "peer")
    return process, port


def http_request(port: int, path: str, headers: dict[str, str], expect: int = 200):
    def client():
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(connection) -> None:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != expect:
            raise RuntimeError(f"{path}: {response.status}, expected {expect}: {body[:300]!r}")
    return client, send


def etag_of(port: int, path: str, headers: dict[str, str]) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.getheader("ETag")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--records-per-day", type=int, default=10_000)
    parser.add_argument("--visits-per-day", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1",
                      DO_NOT_TRACK="1", AIRFLOW__COSMOS__ENABLE_TELEMETRY="False")
    workers = os.environ.get("API_WORKERS", "2")

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, loaded_warehouse(Path(tmp), args) as url:
        root = Path(tmp)
        servers: list[subprocess.Popen] = []
        try:
            facts, scenarios = set_up(url)
            api, api_port = start_api(url, root, workers)
            servers.append(api)
            peer, peer_port = start_peer(url, root, workers)
            servers.append(peer)
            runs = scenario_requests(scenarios, url, api_port, peer_port)
            results = measure(runs, args, {"API": api.pid, "peer": peer.pid, "postgres": postmaster(url)})
            with psycopg.connect(url) as conn:
                audited = conn.execute("select count(*) from ops.api_audit").fetchone()[0]
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=10)
    report(results, facts, audited, workers, args)
    return 0


@contextmanager
def loaded_warehouse(root: Path, args):
    """Postgres on loopback with the generated days (--days, --records-per-day, --visits-per-day) loaded through
    `elt` ingest from a local S3 endpoint (stopped once they are in) and the marts built; yields its URL.
    bench api and bench api_inprocess both start from it."""
    os.chmod(root, 0o755)
    postgres = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
    s3 = LocalS3(free_port(), root / "s3.log", bucket="bench")
    postgres.start()
    s3.start()
    try:
        postgres.create_database("bench")
        url = postgres.url("bench")
        settings = Settings(database_url=url, s3_endpoint_url=s3.endpoint_url, s3_bucket="bench",
                            dbt_project_dir=REPO / "dbt")
        prepare(settings)
        generate_and_load(root, settings, s3, args.days, args.records_per_day, args.visits_per_day)
        s3.stop()
        yield url
    finally:
        s3.stop()
        postgres.stop()


def set_up(url: str) -> tuple[dict, dict]:
    """Keys, the filter day, the cursor after 900,000 rows."""
    from backend.auth import create_key

    keys = {role: create_key(url, f"benchmark {role}", role) for role in ("analyst", "clinician")}
    with psycopg.connect(url) as conn:
        total = conn.execute("select count(*) from core.fct_medical_records").fetchone()[0]
        since = conn.execute("select min(record_date) + 1 from core.fct_medical_records").fetchone()[0]
        matching = conn.execute("select count(*) from core.fct_medical_records where record_date >= %s",
                                (since,)).fetchone()[0]
        deep_day, deep_id = conn.execute(
            "select record_date, medical_record_id from core.fct_medical_records where record_date >= %s "
            "order by record_date, medical_record_id offset 899999 limit 1", (since,)).fetchone()
        trends = conn.execute("select count(*), min(visit_date) + 1 from analytics.triage_trends").fetchone()
    facts = {"total": total, "since": since, "matching": matching, "trends_rows": trends[0]}
    return facts, {"keys": keys, "since": since, "trends_since": trends[1],
                   "cursor": encode_cursor(["record_date", str(deep_day), deep_id]), "deep": (deep_day, deep_id)}


def scenario_requests(s: dict, url: str, api_port: int, peer_port: int) -> dict:
    analyst = {"Authorization": f"Bearer {s['keys']['analyst']}"}
    clinician = {"Authorization": f"Bearer {s['keys']['clinician']}"}
    trends = urlencode({"visit_date_from": str(s["trends_since"]), "limit": PAGE})
    records = urlencode({"record_date_from": str(s["since"]), "limit": PAGE})
    analyst_path, first_path = f"/api/v1/triage-trends?{trends}", f"/api/v1/medical-records?{records}"
    deep_path = first_path + "&" + urlencode({"cursor": s["cursor"]})
    analyst_etag = etag_of(api_port, analyst_path, analyst)
    clinician_etag = etag_of(api_port, first_path, clinician)
    sql = (f"select {COLUMNS} from {MEDICAL_RECORDS.table} where record_date >= %s "  # noqa: S608
           "order by record_date, medical_record_id limit %s")

    def sql_client():
        return psycopg.connect(url, autocommit=True)

    def sql_request(conn) -> None:
        rows = conn.execute(sql, (s["since"], PAGE + 1)).fetchall()
        if len(rows) != PAGE + 1:
            raise RuntimeError(f"expected {PAGE + 1} rows, got {len(rows)}")

    return {
        "API, GET /health (no database)": http_request(api_port, "/health", {}),
        "API, analyst page (triage-trends)": http_request(api_port, analyst_path, analyst),
        "peer, the same page (triage-trends)": http_request(peer_port, f"/triage-trends?{trends}", {}),
        "API, clinician first page (audited)": http_request(api_port, first_path, clinician),
        "peer, the same page (medical-records)": http_request(peer_port, f"/medical-records?{records}", {}),
        "API, clinician page after 900,000 rows": http_request(api_port, deep_path, clinician),
        "API, analyst page, If-None-Match (304)": http_request(
            api_port, analyst_path, {**analyst, "If-None-Match": analyst_etag}, expect=304),
        "API, clinician page, If-None-Match (304)": http_request(
            api_port, first_path, {**clinician, "If-None-Match": clinician_etag}, expect=304),
        "direct SQL, clinician first page": (sql_client, sql_request),
    }


def measure(runs: dict, args, pids: dict[str, int]) -> dict[str, tuple[float, list[float]]]:
    """Every scenario once per round, in the same order: throughput is the median of the rounds, latencies are
    pooled. Beside each round: the CPU per request of the server it calls (`pids`: API, peer), of Postgres and of the
    client threads (this process), so that a ratio can be traced to who spends what."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    latencies: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(1, args.rounds + 1):
        for name, (make_client, request) in runs.items():
            server = pids.get(name.split(",")[0], 0)
            before = (cpu_seconds(server), cpu_seconds(pids["postgres"]), time.process_time())
            rps, measured = run_clients(args.concurrency, args.seconds, make_client, request)
            after = (cpu_seconds(server), cpu_seconds(pids["postgres"]), time.process_time())
            sent = len(measured) + 3 * args.concurrency  # and the warm-up's
            server_us, postgres_us, client_us = ((b - a) / sent * 1e6 for a, b in zip(before, after, strict=True))
            rates[name].append(rps)
            latencies[name] += measured
            print(f"round {round_number}  {name:<42} {rps:8.1f} req/s  p50 {percentile(measured, .5) * 1000:7.2f} ms  "
                  f"p99 {percentile(measured, .99) * 1000:7.2f} ms  ({len(measured)} requests; CPU µs/request: "
                  f"server {server_us:.0f}, Postgres {postgres_us:.0f}, client {client_us:.0f})", flush=True)
    return {name: (statistics.median(rates[name]), latencies[name]) for name in runs}


def report(results: dict, facts: dict, audited: int, workers: str, args) -> None:
    def figures(name: str) -> tuple[float, float, float]:
        rps, latencies = results[name]
        return rps, percentile(latencies, .5) * 1000, percentile(latencies, .99) * 1000

    rows = "\n".join(f"{name:<42} {rps:9.1f}  {p50:9.2f}  {p99:9.2f}"
                      for name in results for rps, p50, p99 in [figures(name)])
    health = figures("API, GET /health (no database)")[0]
    analyst, analyst_peer = figures("API, analyst page (triage-trends)"), figures("peer, the same page (triage-trends)")
    first, first_peer = figures("API, clinician first page (audited)"), figures("peer, the same page (medical-records)")
    deep = figures("API, clinician page after 900,000 rows")
    revalidated = figures("API, analyst page, If-None-Match (304)")[0]
    revalidated_audited = figures("API, clinician page, If-None-Match (304)")[0]

    def verdict(value: float, target: float, at_least: bool = True) -> str:
        met = value >= target if at_least else value <= target
        return f"(target {'>=' if at_least else '<='} {target}: {'met' if met else 'NOT met'})"

    ratios = [
        ("analyst page / peer, same page", analyst[0] / analyst_peer[0], 1.0, True),
        ("clinician page (audited) / peer, same page", first[0] / first_peer[0], 0.7, True),
        ("analyst page / GET /health", analyst[0] / health, 0.5, True),
        ("clinician page (audited) / GET /health", first[0] / health, 0.5, True),
        ("304, analyst page / GET /health", revalidated / health, 0.8, True),
        ("deep-page p99 / first-page p99 (clinician)", deep[2] / first[2], 1.2, False),
    ]
    print(f"""
fact table: {facts['total']:,} rows; filter record_date >= {facts['since']}: {facts['matching']:,} rows; \
analytics.triage_trends: {facts['trends_rows']:,} rows; {PAGE} per page.
API: granian, {workers} workers (python -m backend.serve), \
on loopback; peer: uvicorn, {workers} workers (benchmarks/api_peer.py); {audited:,} audit rows written.
concurrency {args.concurrency}, {args.seconds:.0f} s per scenario, {args.rounds} rounds (req/s: median of the \
rounds; latencies pooled). Clients are threads in this process.

                                               req/s     p50 ms     p99 ms
{rows}

""" + "\n".join(f"ratio {label:<44}: {value:6.3f}   {verdict(value, target, at_least)}"
                 for label, value, target, at_least in ratios)
          + f"\n(304, clinician page (audited) / GET /health: {revalidated_audited / health:.3f}; no target)")


if __name__ == "__main__":
    sys.exit(main())
