"""The API's own CPU per request, measured in-process: no HTTP server and no load-test client, so that a shared
machine's other work does not swing the figures the way it swings `bench api`'s requests per second (issue 14's
`304 / GET /health` target is a ratio of two such costs plus the server's own, which granian keeps near 0.1 ms).

Set-up as `bench api` does it, smaller: a few days of generated Medilink drops go through `elt`'s real ingest, dbt
builds `core.fct_medical_records` and `analytics.triage_trends`, keys are made for an analyst and a clinician. Then
the app (`create_app`, as `backend.wsgi` builds it) answers N requests of each kind, called as a WSGI server calls it
(`app(environ, start_response)`, the body read to its end), timed with `time.process_time`: this process's CPU only.
Postgres's share of each request is measured beside it, from /proc (the CPU of the server's processes over the same
requests): on two cores it is taken from the same budget. The kinds are `bench api`'s: `GET /health`, the analyst page
(triage-trends, 20 rows), its `If-None-Match` repeat (304) and the audited clinician page (medical-records).

Each code tree given with `--tree` (default: this one) is measured in a child process of its own, on the same
database, in turns (`--rounds`), so that a change can be compared with the code before it
(`git archive <commit> | tar -x -C /tmp/before` makes such a tree). `--limits` measures with the rate limits on
(API_RATE_LIMIT and API_AUTH_FAILURE_LIMIT at their defaults' shape, high enough never to refuse), as deployed;
without it they are off, as in `bench api`. `--profile KIND` prints cProfile's top functions for that kind.

    ./start.sh bench api_inprocess [--requests N] [--rounds N] [--tree DIR ...] [--limits] [--profile 304]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("health", "304", "analyst page", "clinician page")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--records-per-day", type=int, default=2_000)
    parser.add_argument("--visits-per-day", type=int, default=300)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", type=Path, help="a code tree to measure (repeatable)")
    parser.add_argument("--limits", action="store_true", help="rate limits on, as deployed")
    parser.add_argument("--profile", choices=KINDS, action="append", default=[])
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: a JSON of what to measure
    args = parser.parse_args()
    if args.measure:
        return child(json.loads(args.measure))
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1",
                      DO_NOT_TRACK="1", AIRFLOW__COSMOS__ENABLE_TELEMETRY="False")
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-api-inprocess-") as tmp:
        with warehouse(Path(tmp), args) as requests:
            results = {str(tree): [] for tree in (args.tree or [REPO])}
            for _ in range(args.rounds):
                for tree in results:
                    results[tree].append(run_child(Path(tree), {**requests, "n": args.requests,
                                                                "limits": args.limits, "profile": args.profile}))
    report(results, args)
    return 0


@contextmanager
def warehouse(root: Path, args):
    """Postgres with the marts built and the keys made (the S3 endpoint only while loading); yields what the
    children need to send their requests."""
    import psycopg
    from benchmarks_api import loaded_warehouse

    from backend.auth import create_key

    with loaded_warehouse(root, args) as url:
        keys = {role: create_key(url, f"benchmark {role}", role) for role in ("analyst", "clinician")}
        with psycopg.connect(url) as conn:
            since = conn.execute("select min(record_date) + 1 from core.fct_medical_records").fetchone()[0]
            trends_since = conn.execute("select min(visit_date) + 1 from analytics.triage_trends").fetchone()[0]
        yield {"url": url, "keys": keys, "trends_since": str(trends_since), "since": str(since)}


def run_child(tree: Path, what: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps({**what, "tree": str(tree)})],
                          env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{tree}: {done.stderr[-3000:]}")
    print(done.stderr, end="", file=sys.stderr)  # profiles
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the child: one code tree ------------------------------------------------------------------------------------
def child(what: dict) -> int:
    import logging

    sys.path.insert(0, what["tree"])
    from backend.app import create_app
    from backend.config import ApiSettings

    limits = {"rate_limit": "", "auth_failure_limit": ""}  # off, as in `bench api`
    if what["limits"]:  # on, as deployed, high enough never to refuse this benchmark
        limits = {"rate_limit": "100000000 per minute", "auth_failure_limit": "20 per minute"}
    app = create_app(ApiSettings(database_url=what["url"], **limits))
    logging.getLogger().setLevel(logging.WARNING)  # as under a server whose access log is its own
    requests = kinds(app, what)
    postgres = postgres_cpu(what["url"])
    figures = {kind: per_request(app, environ, status, what["n"], postgres)
               for kind, (environ, status) in requests.items()}
    for kind in what["profile"]:
        profile(app, *requests[kind], what["n"], kind)
    print(json.dumps(figures))
    return 0


def kinds(app, what: dict) -> dict[str, tuple[dict, str]]:
    """The WSGI environ and expected status of each kind of request."""
    from urllib.parse import urlencode

    from werkzeug.test import EnvironBuilder

    analyst = {"Authorization": f"Bearer {what['keys']['analyst']}"}
    clinician = {"Authorization": f"Bearer {what['keys']['clinician']}"}
    trends = "/api/v1/triage-trends?" + urlencode({"visit_date_from": what["trends_since"], "limit": 20})
    records = "/api/v1/medical-records?" + urlencode({"record_date_from": what["since"], "limit": 20})

    def environ(path: str, headers: dict) -> dict:
        return EnvironBuilder(path=path, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()

    first = app.test_client().get(trends, headers=analyst)
    assert first.status_code == 200, first.get_data()
    return {
        "health": (environ("/health", {}), "200 OK"),
        "304": (environ(trends, {**analyst, "If-None-Match": first.headers["ETag"]}), "304 NOT MODIFIED"),
        "analyst page": (environ(trends, analyst), "200 OK"),
        "clinician page": (environ(records, clinician), "200 OK"),
    }


def call(app, base: dict, status: str) -> None:
    """One request as a WSGI server makes it: a fresh environ, the body read to its end and closed."""
    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO()
    seen = []
    body = app(environ, lambda s, headers, exc_info=None: seen.append(s))
    try:
        for _ in body:
            pass
    finally:
        if hasattr(body, "close"):
            body.close()
    if seen[0] != status:
        raise RuntimeError(f"{environ['PATH_INFO']}: {seen[0]}, expected {status}")


def per_request(app, environ: dict, status: str, n: int, postgres) -> list[float]:
    """Microseconds of this process's CPU per request, after a warm-up, and of Postgres's (all its processes)."""
    import time

    for _ in range(200):
        call(app, environ, status)
    began, began_postgres = time.process_time(), postgres()
    for _ in range(n):
        call(app, environ, status)
    return [(time.process_time() - began) / n * 1e6, (postgres() - began_postgres) / n * 1e6]


def postgres_cpu(url: str):
    """A function giving the CPU seconds used so far by the Postgres server of `url` and its processes (/proc)."""
    from _cpu import cpu_seconds, postmaster  # benchmarks/: this file's own folder, first on sys.path

    server = postmaster(url)
    return lambda: cpu_seconds(server)


def profile(app, environ: dict, status: str, n: int, kind: str) -> None:
    import cProfile
    import pstats
    import time

    profiler = cProfile.Profile(time.process_time)  # CPU, as the figures are: time blocked on Postgres is not in it
    profiler.enable()
    for _ in range(n):
        call(app, environ, status)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("PROFILE_SORT", "tottime")).print_stats(int(os.environ.get("PROFILE_TOP", "30")))
    print(f"--- profile: {kind}, {n} requests, by own CPU time ---\n{out.getvalue()}", file=sys.stderr)


def report(results: dict[str, list[dict]], args) -> None:
    """Per tree, the fastest round and the median round of each kind: on a shared machine other work only ever adds
    to a round's CPU time (caches, frequency), so the fastest is the closest to the code's own cost."""
    print(f"\nµs of CPU per request ({args.rounds} rounds of {args.requests}; rate limits "
          f"{'on' if args.limits else 'off'}): the API process's, then Postgres's (all its processes). A ratio of "
          "costs is the inverse ratio of throughputs; the HTTP server's own cost per request is in neither.")
    print(f"{'tree':<34} {'':>6} " + " ".join(f"{kind:>14}" for kind in KINDS) + f" {'304/health':>11} "
          f"{'page/health':>12}")
    for tree, rounds in results.items():
        for label, pick in (("min", min), ("median", statistics.median)):
            cost = {kind: pick(r[kind][0] for r in rounds) for kind in KINDS}
            print(f"{tree[-34:]:<34} {label:>6} " + " ".join(f"{cost[kind]:14.1f}" for kind in KINDS)
                  + f" {cost['health'] / cost['304']:11.3f} {cost['health'] / cost['analyst page']:12.3f}")
        postgres = {kind: statistics.median(r[kind][1] for r in rounds) for kind in KINDS}
        print(f"{tree[-34:]:<34} {'pg med':>6} " + " ".join(f"{postgres[kind]:14.1f}" for kind in KINDS))


if __name__ == "__main__":
    if "--measure" not in sys.argv:
        import importlib.util

        spec = importlib.util.spec_from_file_location("benchmarks_api", REPO / "benchmarks" / "api.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks_api"] = module
        spec.loader.exec_module(module)
    sys.exit(main())
