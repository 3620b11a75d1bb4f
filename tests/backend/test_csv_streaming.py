"""CSV downloads under the production server (granian through `python -m backend.serve`, as ./start.sh and the
image start it, on loopback) with clients that read at a few KB/s: every download arrives whole or visibly broken,
slow ones never keep the server from answering everyone else, and stopping the server cuts none off silently
(docs/decisions/0009, 0018).

The slow clients shrink their receive buffer so that the kernel cannot swallow the file for them; the server's
own send buffer still takes a few MB on loopback, so the mart here makes a CSV of several MB.
"""

from __future__ import annotations

import csv
import http.client
import io
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import psutil
import psycopg
import pytest

from backend.auth import create_key
from tests.backend.conftest import FACILITY_PERFORMANCE_DDL, serve_api, stop_api

ROWS = 30_000
SLOW_READS = 32  # reads of 2 KB every 0.25 s (8 KB/s): at least 8 s
GATE_ROW = 20_000  # the row the failing stream stops at (below)

# 30,000 facilities of about 180 bytes of CSV each: some 5 MB, more than loopback's buffers hold.
FILL = f"""
insert into analytics.facility_performance (facility_id, facility_name, state, lga, facility_type, patient_count,
    medical_record_count, triage_visit_count, urgent_visit_count, avg_triage_level, first_visit_date, last_visit_date,
    active_days, avg_daily_visits, volume_band, built_at)
select 'f' || lpad(n::text, 6, '0'), 'Facility ' || lpad(n::text, 6, '0') || ' of the streaming test', 'Oyo',
    'Ibadan North', 'Primary Health Center', n, n % 17, n % 101, n % 7, 2.5, date '2026-11-01', date '2026-11-14',
    14, 1.25, 'Low', now()
from generate_series(1, {ROWS}) as n;
analyze analytics.facility_performance;
"""  # noqa: S608 - the module's own constants


class SmallBuffer(http.client.HTTPConnection):
    """A client with a 4 KB receive buffer: it takes what it reads, and no more."""

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))


def start_server(database_url: str, passwords: dict[str, str], tmp_path, **env: str):
    """The production server as production starts it, one worker; the API logs in as its own login (health_api)."""
    return serve_api({"API_DATABASE_URL": database_url, "API_DB_PASSWORD": passwords["api_db_password"],
                      "API_DROPS_DB_PASSWORD": passwords["api_drops_db_password"], "API_WORKERS": "1",
                      "API_RATE_LIMIT": "", "API_AUTH_FAILURE_LIMIT": "", **env}, tmp_path / "server.log")


@pytest.fixture
def served(settings, db, tmp_path, login_passwords):
    db.execute(FACILITY_PERFORMANCE_DDL)
    db.execute(FILL)
    key = create_key(settings.database_url, "streaming", "analyst")
    server, port = start_server(settings.database_url, login_passwords, tmp_path)
    yield port, {"Authorization": f"Bearer {key}"}
    stop_api(server)


def slow_download(port: int, headers: dict, path: str, started: threading.Event, others_done: threading.Event,
                  results: dict, name: str) -> None:
    """Read 2 KB every 0.25 s, at least SLOW_READS times and until the other callers are answered, then the rest
    at full speed. http.client raises IncompleteRead when a chunked body ends without its last chunk."""
    conn = SmallBuffer("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        started.set()
        body, reads = bytearray(), 0
        while reads < SLOW_READS or not others_done.is_set():
            chunk = response.read(2048)
            if not chunk:
                break
            body += chunk
            reads += 1
            time.sleep(0.25)
        body += response.read()
        results[name] = (response.status, response.headers, bytes(body))
    except (http.client.HTTPException, OSError) as exc:
        results[name] = exc
    finally:
        started.set()
        conn.close()


def test_slow_downloads_arrive_whole_and_others_are_answered_meanwhile(served, db):
    port, headers = served
    expected_ids = [r[0] for r in db.execute("select facility_id from analytics.facility_performance "
                                             "order by facility_name, facility_id")]
    others_done, results, threads, started = threading.Event(), {}, [], []
    for name in ("slow-1", "slow-2"):
        started.append(threading.Event())
        threads.append(threading.Thread(target=slow_download, args=(
            port, headers, "/api/v1/facilities?format=csv", started[-1], others_done, results, name)))
        threads[-1].start()
    for event in started:
        event.wait(timeout=60)

    # While both slow downloads are in progress, other callers are answered (a generous socket timeout; no clock).
    answers = []
    for path in ("/health", "/api/v1/facilities?limit=5", "/api/v1/facilities?format=csv&state=Oyo&limit=10"):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                answers.append((response.status, len(response.read())))
        except OSError as exc:
            answers.append((type(exc).__name__, 0))
    in_progress = [name for name in ("slow-1", "slow-2") if name not in results]
    others_done.set()
    for thread in threads:
        thread.join(timeout=300)

    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert in_progress == ["slow-1", "slow-2"]  # they were answered while both downloads went on
    for name in ("slow-1", "slow-2"):
        result = results[name]
        assert not isinstance(result, Exception), f"{name}: {result!r}"
        status, response_headers, body = result
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert status == 200 and body.endswith(b"\r\n")
        assert int(response_headers["X-Total-Count"]) == len(rows) == ROWS
        assert [row["facility_id"] for row in rows] == expected_ids


# --- a stream that fails half-way --------------------------------------------------------------------------------
# The mart is a view whose row GATE_ROW waits for an advisory lock the test holds, but only inside a cursor (the
# download's rows, not its count): the download has sent thousands of rows when its connection is terminated.
# The gate is declared stable so that the view is merged into the query, and (a costly function, under a LIMIT)
# evaluated only for each row as it is fetched, after the sort.
GATED = f"""
create schema if not exists analytics;
create table analytics.facility_rows (like analytics.facility_performance);
insert into analytics.facility_rows select * from analytics.facility_performance;
create index on analytics.facility_rows (facility_name, facility_id);
drop table analytics.facility_performance;
create function analytics.gate(value text, facility_id text) returns text language plpgsql stable as $$
begin
    if facility_id = 'f{GATE_ROW:06d}' and exists (select 1 from pg_cursors) then
        perform pg_advisory_lock_shared(4242);
        perform pg_advisory_unlock_shared(4242);
    end if;
    return value;
end $$;
"""  # noqa: S608 - the module's own constants
# The view: every column of the mart as it is declared, lga through the gate.
GATED_VIEW = """
create view analytics.facility_performance as select {columns} from analytics.facility_rows;
grant select on analytics.facility_performance to api_reader;
"""  # noqa: S608 - the module's own constants


def gate_the_mart(db) -> None:
    db.execute(GATED)
    names = [row[0] for row in db.execute(
        "select column_name from information_schema.columns where table_schema = 'analytics' "
        "and table_name = 'facility_rows' order by ordinal_position")]
    columns = ", ".join("analytics.gate(lga, facility_id) as lga" if name == "lga" else name for name in names)
    db.execute(GATED_VIEW.format(columns=columns))


def test_a_stream_that_fails_half_way_ends_without_its_last_chunk(settings, db, tmp_path, login_passwords):
    db.execute(FACILITY_PERFORMANCE_DDL)
    db.execute(FILL)
    gate_the_mart(db)
    key = create_key(settings.database_url, "streaming", "analyst")
    server, port = start_server(settings.database_url, login_passwords, tmp_path, API_STATEMENT_TIMEOUT_MS="600000")
    holder = psycopg.connect(settings.database_url, autocommit=True)
    try:
        holder.execute("select pg_advisory_lock(4242)")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/api/v1/facilities?format=csv", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        assert response.status == 200 and int(response.headers["X-Total-Count"]) == ROWS
        pid = None
        for _ in range(600):  # until the download's query waits at the gate
            row = db.execute("select pid from pg_stat_activity where application_name = 'health-api' "
                             "and wait_event_type = 'Lock' and wait_event = 'advisory'").fetchone()
            if row:
                pid = row[0]
                break
            time.sleep(0.1)
        assert pid is not None, "the download never reached the gate row"
        assert db.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        received = cut.value.partial.decode()
        assert 0 < received.count("\r\n") - 1 < GATE_ROW  # rows were sent, but not all of them
        conn.close()

        holder.execute("select pg_advisory_unlock(4242)")
        # The worker carries on: the next download is whole.
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/facilities?format=csv",
                headers={"Authorization": f"Bearer {key}"}), timeout=120) as again:
            assert len(list(csv.DictReader(io.StringIO(again.read().decode())))) == ROWS
    finally:
        holder.close()
        stop_api(server)
    log = (tmp_path / "server.log").read_text()
    # Logged by the API and by granian (with the traceback), without a row's values.
    assert "CSV export stopped after" in log and "Application callable raised an exception" in log
    assert "ExportFailed" in log and "Facility 0" not in log


# --- the cap, a worker's death, and SIGTERM ------------------------------------------------------------------------
def stalled_download(port: int, headers: dict) -> tuple[SmallBuffer, http.client.HTTPResponse, bytes]:
    """A download whose client read its first 4 KB (returned) and then stopped reading: it holds a server thread."""
    conn = SmallBuffer("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/v1/facilities?format=csv", headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    first = response.read(4096)
    assert len(first) == 4096
    return conn, response, first


def get(port: int, path: str, headers: dict):
    """(status, headers): headers answer case-insensitively (granian sends them in lower case)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            response.read()
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_downloads_are_capped_below_the_threads_and_give_their_slot_back(settings, db, tmp_path, login_passwords):
    """Three threads, two download slots: with two downloads stalled, a third download is a 503 and every other call
    is still answered (by the thread the cap leaves free); once those clients go away their slots are free again."""
    db.execute(FACILITY_PERFORMANCE_DDL)
    db.execute(FILL)
    headers = {"Authorization": f"Bearer {create_key(settings.database_url, 'streaming', 'analyst')}"}
    server, port = start_server(settings.database_url, login_passwords, tmp_path, API_THREADS="3",
                                API_CSV_STREAMS="2")
    try:
        stalled = [stalled_download(port, headers) for _ in range(2)]
        third, third_headers = get(port, "/api/v1/facilities?format=csv", headers)
        others = [get(port, path, headers)[0] for path in ("/health", "/api/v1/facilities?limit=5", "/health")]
        assert (third, third_headers.get("Retry-After")) == (503, "5")
        assert others == [200, 200, 200]

        for conn, _, _ in stalled:
            conn.close()
        for _ in range(100):  # the server sees the clients gone at its next write
            status, _ = get(port, "/api/v1/facilities?format=csv&limit=10", headers)
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
        assert [get(port, "/api/v1/facilities?format=csv&limit=10", headers)[0] for _ in range(2)] == [200, 200]
    finally:
        stop_api(server)


def test_a_worker_that_dies_is_started_again(settings, tmp_path, login_passwords):
    server, port = start_server(settings.database_url, login_passwords, tmp_path)
    try:
        [worker] = psutil.Process(server.pid).children()
        worker.kill()
        worker.wait(timeout=10)
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.1)
        else:
            status = None
        assert status == 200 and server.poll() is None
        assert [child.pid for child in psutil.Process(server.pid).children()] != [worker.pid]
    finally:
        stop_api(server)


def test_sigterm_lets_downloads_finish_for_the_grace_then_cuts_the_rest_visibly(settings, db, tmp_path,
                                                                                login_passwords):
    """On SIGTERM a download whose client keeps reading arrives whole; one whose client stalls past
    API_SHUTDOWN_GRACE_SECONDS is cut off without its last chunk, and the server exits cleanly (status 0)."""
    db.execute(FACILITY_PERFORMANCE_DDL)
    db.execute(FILL)
    headers = {"Authorization": f"Bearer {create_key(settings.database_url, 'streaming', 'analyst')}"}
    server, port = start_server(settings.database_url, login_passwords, tmp_path, API_SHUTDOWN_GRACE_SECONDS="4")
    clients = []
    try:
        clients = [stalled_download(port, headers) for _ in range(2)]
        (_, reading, reading_first), (_, stalled, stalled_first) = clients
        server.send_signal(signal.SIGTERM)
        whole = reading_first + reading.read()  # at full speed: well within the grace
        assert server.wait(timeout=60) == 0
        with pytest.raises(http.client.IncompleteRead) as cut:
            stalled.read()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if server.poll() is None:
            stop_api(server)
        for conn, _, _ in clients:
            conn.close()
    assert len(list(csv.DictReader(io.StringIO(whole.decode())))) == ROWS and whole.endswith(b"\r\n")
    assert len(stalled_first + cut.value.partial) < len(whole)
    log = (tmp_path / "server.log").read_text()
    assert "refused to gracefully stop" in log and "Granian shutdown completed" in log
