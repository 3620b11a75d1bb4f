"""The API's production server: granian serving `backend.wsgi:app` over WSGI (docs/decisions/0018).

    python -m backend.serve [--host 127.0.0.1] [--port 5000]

./start.sh (elt/devstack), the Docker image, the tests and benchmarks/api.py all start the API this way, so that
the server's settings are declared here once, from ApiSettings. Only the address differs between them (the image
listens on every interface of its container, ./start.sh on loopback at API_PORT, a test on a free port), so it is
the one thing given on the command line.

* API_WORKERS processes of API_THREADS blocking threads each. A request, and a CSV download for as long as its
  client reads it, holds one thread (backend/api/listing.py caps a worker's downloads at API_CSV_STREAMS, below
  API_THREADS, so downloads always leave threads for other calls). granian has no worker timeout: a download to
  a slow client is never killed half-way.
* A failure after the first byte of a download makes the body iterator raise; granian then drops the connection
  without the chunked body's last chunk, so the client sees a cut-off download, never a complete-looking one.
* A worker that dies is started again; one that dies again within seconds stops the server rather than loop
  (./start.sh and Docker then start it again).
* SIGTERM: the server stops accepting, lets requests in progress finish for up to API_SHUTDOWN_GRACE_SECONDS,
  then kills the workers (a download still going is cut off, visibly) and exits.
* The access log names the path but never the query string: filters such as `patient_id` or `last_name` name a
  patient, and no log line may carry personal data. Its time is until the response started: a streamed
  download goes on after its line is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from backend.config import ApiSettings

APP = "backend.wsgi:app"
# remote address, time, method, path (granian's `path` atom has no query string), protocol, status, milliseconds
ACCESS_LOG_FORMAT = '%(addr)s [%(time)s] "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1f'


def granian_options(settings: ApiSettings, host: str, port: int) -> dict[str, Any]:
    """The keyword arguments of granian's server for the API: everything but the address comes from `settings`."""
    from granian.constants import Interfaces

    return {
        "target": APP,
        "address": host,
        "port": port,
        "interface": Interfaces.WSGI,
        "workers": settings.workers,
        "blocking_threads": settings.threads,
        "websockets": False,  # not served over WSGI; said here so granian does not log that it ignores them
        "log_access": settings.access_log,
        "log_access_format": ACCESS_LOG_FORMAT,
        "respawn_failed_workers": True,
        "workers_kill_timeout": settings.shutdown_grace_seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m backend.serve", description=(
        "Serve the API under granian with the settings of the environment (API_WORKERS, API_THREADS, ...)."))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Runs until SIGTERM or SIGINT. Reads the settings before any worker starts, so that a wrong one (API_THREADS
    not above API_CSV_STREAMS, say) stops the server at once with pydantic's message."""
    from granian import Granian

    args = parse_args(argv)
    Granian(**granian_options(ApiSettings(), args.host, args.port)).serve()


if __name__ == "__main__":
    main()
