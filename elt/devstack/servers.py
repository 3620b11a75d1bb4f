"""Embedded servers: Postgres from the `pgserver` wheel's binaries and moto's S3 server.

Both run as child processes on 127.0.0.1 in their own process group, so a supervisor (./start.sh, or the
pytest session) can stop them cleanly. Postgres refuses to run as root, so under root it runs as a
dedicated system user, as pgserver itself does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

PG_RUN_AS = "pgserver"
# Who may connect how, rewritten on every start. The owner is trusted on loopback: the server listens on 127.0.0.1
# only, for ./start.sh and the tests. Every other login (the API's and BI's: elt/warehouse/roles.py) must give its
# password, as on a production server, so that a wrong or missing password fails here as it would there.
PG_HBA = """# Written by elt/devstack/servers.py (EmbeddedPostgres) on every start: edits here are lost.
# TYPE  DATABASE  USER      ADDRESS        METHOD
host    all       postgres  127.0.0.1/32   trust
host    all       all       127.0.0.1/32   scram-sha-256
"""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, *, timeout: float, what: str, process: subprocess.Popen | None = None, log_file: Path | None = None):
    """Poll `check()` until it returns truthy; fail with the tail of the log if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting{_tail(log_file)}")
        try:
            result = check()
            if result:
                return result
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s{_tail(log_file)}")


def _tail(log_file: Path | None, lines: int = 15) -> str:
    if not log_file or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_file}:\n" + "\n".join(text)


def stop_process(process: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the child's whole process group, then kill it if it has not gone within `timeout`."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


def pg_bin_dir() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """A Postgres 16 cluster in `data_dir`, listening on 127.0.0.1:`port`: trust auth for the owner `postgres`,
    passwords (scram-sha-256) for every other login (PG_HBA)."""

    def __init__(self, data_dir: Path, port: int, log_file: Path):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None
        self._user = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_RUN_AS)
        ensure_prefix_permissions(self.data_dir)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = pg_bin_dir()
        run_as = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("initialising Postgres cluster in %s", self.data_dir)
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--locale=C"],
                check=True, capture_output=True, **run_as,
            )
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)  # also turns a cluster made before it away from trust-all
        if not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} is in use; set PG_PORT in .env to a free port")
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "max_connections=200"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **run_as,
            )
        wait_for(lambda: psycopg.connect(self.url(), connect_timeout=2).close() or True, timeout=timeout,
                 what="Postgres", process=self.process, log_file=self.log_file)

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'create database "{name}"')

    def stop(self) -> None:
        # SIGINT is Postgres's "fast" shutdown: roll back open transactions, checkpoint, exit.
        stop_process(self.process, sig=signal.SIGINT, timeout=30)

    def kill(self) -> None:
        """Crash it (SIGKILL), as a power cut would; the next start runs crash recovery."""
        stop_process(self.process, sig=signal.SIGKILL, timeout=5)


class LocalS3:
    """moto's S3 server on 127.0.0.1:`port`. With `persist_dir`, bucket contents survive restarts:
    objects are restored from that folder on start and written back every few seconds and on stop."""

    def __init__(self, port: int, log_file: Path, *, persist_dir: Path | None = None, bucket: str | None = None):
        self.port = port
        self.log_file = log_file
        self.persist_dir = Path(persist_dir) if persist_dir else None
        self.bucket = bucket
        self.process: subprocess.Popen | None = None
        self._synced: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")

    def start(self, timeout: float = 30) -> None:
        if not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} is in use; set S3_PORT in .env to a free port")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                [moto, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(lambda: self.client().list_buckets() is not None, timeout=timeout, what="S3 endpoint (moto)",
                 process=self.process, log_file=self.log_file)
        if self.bucket:
            self.client().create_bucket(Bucket=self.bucket)
        if self.persist_dir:
            self._restore()
            self._thread = threading.Thread(target=self._sync_loop, name="s3-persist", daemon=True)
            self._thread.start()

    def _object_path(self, key: str) -> Path:
        return self.persist_dir / "objects" / self.bucket / key

    def _restore(self) -> None:
        root = self.persist_dir / "objects" / self.bucket
        index_file = self.persist_dir / "index.json"
        index = json.loads(index_file.read_text()) if index_file.exists() else {}
        client = self.client()
        restored = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
            key = path.relative_to(root).as_posix()
            client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(),
                              ContentType=index.get(key, {}).get("content_type", "application/octet-stream"))
            restored += 1
        self._synced = {o["Key"]: o["ETag"] for o in self._list()}
        log.info("restored %d object(s) into s3://%s from %s", restored, self.bucket, root)

    def _list(self) -> list[dict]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [item for page in pages for item in page.get("Contents", [])]

    def sync(self) -> None:
        """Write new and changed objects to disk and remove files of deleted objects."""
        if not self.persist_dir or self.process is None or self.process.poll() is not None:
            return
        client = self.client()
        current = {o["Key"]: o["ETag"] for o in self._list() if not o["Key"].endswith("/")}
        self.persist_dir.mkdir(parents=True, exist_ok=True)
        index_file = self.persist_dir / "index.json"
        index = json.loads(index_file.read_text()) if index_file.exists() else {}
        for key, etag in current.items():
            if self._synced.get(key) != etag or not self._object_path(key).exists():
                response = client.get_object(Bucket=self.bucket, Key=key)
                path = self._object_path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".syncing")
                tmp.write_bytes(response["Body"].read())
                tmp.replace(path)
                index[key] = {"content_type": response.get("ContentType", "application/octet-stream")}
        for key in set(self._synced) - set(current):
            self._object_path(key).unlink(missing_ok=True)
            index.pop(key, None)
        index_file.write_text(json.dumps(index))
        self._synced = current

    def _sync_loop(self) -> None:
        while not self._stop.wait(5):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep persisting; the next pass retries
                log.warning("could not persist the local S3 bucket", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        try:
            self.sync()
        except Exception:  # noqa: BLE001
            log.warning("final S3 persist failed", exc_info=True)
        stop_process(self.process)
