"""The API under its production server (gunicorn) against the same SQL sent straight to Postgres, on a fact
table of 1,000,000 rows, both at the same concurrency, in one run.

Set-up: 100 days of 10,000 medical records (plus the facilities and patients files) go through `elt`'s real
ingest from the local S3 endpoint, and dbt builds `core.fct_medical_records` and what it needs; `vacuum
analyze`. gunicorn serves `backend.wsgi:app` on loopback with the workers ./start.sh uses (API_WORKERS,
default 2) and rate limits off (they would refuse a benchmark's rate, by design).

The request: the medical records from the second day on (990,000 rows) in date order, 20 per page: the first
page, and the page reached by a cursor after 900,000 rows. Through the API that is
`GET /api/v1/medical-records?record_date_from=...&limit=20[&cursor=...]` with a clinician key (so each call
also checks the key, writes its audit row and reports total, as_of and sources); directly it is the page
query the API sends, by psycopg, one connection per client. Each scenario: CONCURRENCY client threads,
each sending requests back to back for --seconds after a warm-up.

Also `GET /health` through the same server: no database, no auth, the least work any request can cost,
so the ceiling of any endpoint's throughput on this machine.

Prints requests per second and p50/p99 latency of each, and the two ratios of the issue:
API throughput / direct throughput (target >= 0.5), and the API's deep-page p99 / first-page p99 (target
<= 1.5).

    ./start.sh bench api [--days N] [--records-per-day N] [--concurrency N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from backend.api.listing import encode_cursor  # noqa: E402
from elt.config import Settings  # noqa: E402
from elt.devstack.servers import EmbeddedPostgres, LocalS3, free_port, pg_bin_dir  # noqa: E402
from elt.pipeline import prepare  # noqa: E402
from elt.transform import run_dbt  # noqa: E402

PAGE = 20
COLUMNS = ("medical_record_id, facility_id, patient_id, record_date, record_type, diagnosis, treatment, "
           "medications, notes, file_id, source_row_number")


def generate_and_load(root: Path, settings: Settings, s3: LocalS3, days: int, per_day: int) -> None:
    # benchmarks/dbt.py: the same generator and ingest (loaded by path: its module name is dbt's own)
    spec = importlib.util.spec_from_file_location("bench_dbt", REPO / "benchmarks" / "dbt.py")
    dbt_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dbt_bench)

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
        day_files = dbt_bench.write_day(csvs, first + timedelta(days=offset), patients, rng, per_day, 1)
        files.append(next(f for f in day_files if f.name.startswith("medical_records")))
    seconds = dbt_bench.ingest(s3, settings, files)
    print(f"ingested {len(files)} files in {seconds:.1f} s", flush=True)
    start = time.perf_counter()
    run_dbt(["run", "--select", "+fct_medical_records"], settings=settings)
    subprocess.run([str(pg_bin_dir() / "psql"), settings.database_url, "-qc", "vacuum analyze"], check=True)
    print(f"built core.fct_medical_records in {time.perf_counter() - start:.1f} s", flush=True)


def run_clients(concurrency: int, seconds: float, make_client, request) -> tuple[float, list[float]]:
    """`concurrency` threads, each with its own client, sending requests back to back; (rps, latencies in s)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        client = make_client()
        try:
            for _ in range(3):  # warm-up: connections open, caches filled
                request(client)
            start_gate.wait()
            mine = latencies[index]
            while time.perf_counter() < stop_at[0]:
                began = time.perf_counter()
                request(client)
                mine.append(time.perf_counter() - began)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            failures.append(exc)
            start_gate.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"a client failed: {failures[0]!r}")
    every = [latency for mine in latencies for latency in mine]
    return len(every) / elapsed, every


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--records-per-day", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1",
                      DO_NOT_TRACK="1", AIRFLOW__COSMOS__ENABLE_TELEMETRY="False")

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        postgres = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
        s3 = LocalS3(free_port(), root / "s3.log", bucket="bench")
        postgres.start()
        s3.start()
        api = None
        try:
            postgres.create_database("bench")
            url = postgres.url("bench")
            settings = Settings(database_url=url, s3_endpoint_url=s3.endpoint_url, s3_bucket="bench",
                                dbt_project_dir=REPO / "dbt")
            prepare(settings)
            generate_and_load(root, settings, s3, args.days, args.records_per_day)
            s3.stop()

            from backend.auth import create_key

            key = create_key(url, "benchmark", "clinician")
            with psycopg.connect(url) as conn:
                total = conn.execute("select count(*) from core.fct_medical_records").fetchone()[0]
                since = conn.execute("select min(record_date) + 1 from core.fct_medical_records").fetchone()[0]
                matching = conn.execute("select count(*) from core.fct_medical_records where record_date >= %s",
                                        (since,)).fetchone()[0]
                deep_day, deep_id = conn.execute(
                    "select record_date, medical_record_id from core.fct_medical_records where record_date >= %s "
                    "order by record_date, medical_record_id offset 899999 limit 1", (since,)).fetchone()
            cursor = encode_cursor(["record_date", str(deep_day), deep_id])

            port = free_port()
            workers = os.environ.get("API_WORKERS", "2")
            env = {**os.environ, "DATABASE_URL": url, "API_RATE_LIMIT": "", "API_AUTH_FAILURE_LIMIT": "",
                   "API_DBT_DOCS_DIR": str(root), "API_WORKERS": workers}
            # As ./start.sh runs it: backend/gunicorn_conf.py sets the (threaded) workers from API_WORKERS/API_THREADS.
            api = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "python:backend.gunicorn_conf",
                                    "--bind", f"127.0.0.1:{port}", "backend.wsgi:app"], env=env, cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=open(root / "api.log", "w"))
            for _ in range(100):
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    connection.request("GET", "/health")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"gunicorn did not start: {(root / 'api.log').read_text()[-2000:]}")

            headers = {"Authorization": f"Bearer {key}"}
            first_path = "/api/v1/medical-records?" + urlencode({"record_date_from": str(since), "limit": PAGE})
            deep_path = first_path + "&" + urlencode({"cursor": cursor})

            def http_client():
                return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def api_request(path: str):
                def send(connection) -> None:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status}: {body[:300]!r}")
                return send

            first_sql = (f"select {COLUMNS} from core.fct_medical_records where record_date >= %s "  # noqa: S608
                         "order by record_date, medical_record_id limit %s")
            deep_sql = (f"select {COLUMNS} from core.fct_medical_records where record_date >= %s "  # noqa: S608
                        "and (record_date, medical_record_id) > (%s, %s) order by record_date, medical_record_id limit %s")

            def sql_client():
                return psycopg.connect(url, autocommit=True)

            def sql_request(query: str, params: tuple):
                def send(conn) -> None:
                    rows = conn.execute(query, params).fetchall()
                    if len(rows) != PAGE + 1:
                        raise RuntimeError(f"expected {PAGE + 1} rows, got {len(rows)}")
                return send

            # The API asks for one row more than it serves, to know whether a next page exists: so does the SQL.
            scenarios = {
                "API, GET /health (no database)": (http_client, api_request("/health")),
                "API, first page": (http_client, api_request(first_path)),
                "direct SQL, first page": (sql_client, sql_request(first_sql, (since, PAGE + 1))),
                "API, page after 900,000 rows": (http_client, api_request(deep_path)),
                "direct SQL, page after 900,000 rows": (sql_client, sql_request(deep_sql, (since, deep_day, deep_id, PAGE + 1))),
            }
            results = {}
            for name, (make_client, request) in scenarios.items():
                results[name] = run_clients(args.concurrency, args.seconds, make_client, request)
                rps, latencies = results[name]
                print(f"{name:<38} {rps:8.1f} req/s  p50 {percentile(latencies, .5) * 1000:7.2f} ms  "
                      f"p99 {percentile(latencies, .99) * 1000:7.2f} ms  ({len(latencies)} requests)", flush=True)
            with psycopg.connect(url) as conn:
                audited = conn.execute("select count(*) from ops.api_audit").fetchone()[0]
        finally:
            if api is not None:
                api.terminate()
                api.wait(timeout=10)
            s3.stop()
            postgres.stop()

    def figures(name: str) -> tuple[float, float, float]:
        rps, latencies = results[name]
        return rps, percentile(latencies, .5) * 1000, percentile(latencies, .99) * 1000

    health = figures("API, GET /health (no database)")
    api_first, sql_first = figures("API, first page"), figures("direct SQL, first page")
    api_deep, sql_deep = figures("API, page after 900,000 rows"), figures("direct SQL, page after 900,000 rows")
    throughput = min(api_first[0] / sql_first[0], api_deep[0] / sql_deep[0])
    deep_ratio = api_deep[2] / api_first[2]
    print(f"""
fact table: {total:,} rows; filter record_date >= {since}: {matching:,} rows; {PAGE} per page.
API: gunicorn, {workers} threaded workers (backend/gunicorn_conf.py), on loopback, clinician key (every call checked and audited: {audited:,} audit rows).
concurrency {args.concurrency}, {args.seconds:.0f} s per scenario. Clients are threads in this process.

                                        req/s      p50 ms     p99 ms
API, GET /health (no database)       {health[0]:8.1f}   {health[1]:8.2f}   {health[2]:8.2f}
API, first page                      {api_first[0]:8.1f}   {api_first[1]:8.2f}   {api_first[2]:8.2f}
direct SQL, first page               {sql_first[0]:8.1f}   {sql_first[1]:8.2f}   {sql_first[2]:8.2f}
API, page after 900,000 rows         {api_deep[0]:8.1f}   {api_deep[1]:8.2f}   {api_deep[2]:8.2f}
direct SQL, page after 900,000 rows  {sql_deep[0]:8.1f}   {sql_deep[1]:8.2f}   {sql_deep[2]:8.2f}

ratio API / direct SQL throughput, first page : {api_first[0] / sql_first[0]:6.3f}
ratio API / direct SQL throughput, deep page  : {api_deep[0] / sql_deep[0]:6.3f}   (target >= 0.5 for both: {'met' if throughput >= 0.5 else 'NOT met'})
ratio API deep-page p99 / first-page p99      : {deep_ratio:6.3f}   (target <= 1.5: {'met' if deep_ratio <= 1.5 else 'NOT met'})
ratio GET /health / direct SQL, first page    : {health[0] / sql_first[0]:6.3f}   (the most any endpoint of this server could reach)
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
