"""Embedded servers: Postgres from the `pgserver` wheel's binaries and moto's S3 server.

Both run as child processes on 127.0.0.1 in their own process group, so a supervisor (./start.sh, or the
pytest session) can stop them cleanly. Postgres refuses to run as root, so under root it runs as a
dedicated system user, as pgserver itself does. That user must reach the binaries (in .venv) and the
cluster's folder; a checkout under a folder other users cannot enter (root's home is 0700) hides both. Then
the binaries are copied once to a shared folder (SHARED_ROOT) and the cluster lives there too, behind a
symbolic link where it was asked for. Nothing of the user's is made readable to others.
"""

from __future__ import annotations

import hashlib
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
# Where binaries and clusters go when the system user cannot reach them in the checkout (only ever as root).
SHARED_ROOT = Path("/var/lib/health-warehouse")
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


def can_reach(path: Path, run_as: dict) -> bool:
    """Whether the user of `run_as` (subprocess's user/group arguments) may enter `path` (every folder on the
    way included): asked of the system itself, so ACLs and group rights count too."""
    if not run_as:
        return True
    return subprocess.run(["test", "-x", str(path)], capture_output=True, **run_as).returncode == 0


def reachable_bin_dir(bin_dir: Path, run_as: dict) -> Path:
    """`bin_dir`, or a copy that the user of `run_as` can run, made once per build of the binaries in SHARED_ROOT:
    the installation (bin, lib, share) and the libraries the wheel keeps beside its package (`pgserver.libs`,
    found through the binaries' rpath `$ORIGIN/../../../pgserver.libs`), 34 MB in all, in the same layout."""
    if can_reach(bin_dir / "initdb", run_as):
        return bin_dir
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    build = hashlib.sha256((bin_dir / "postgres").read_bytes()).hexdigest()[:16]
    copy = SHARED_ROOT / f"postgres-{build}"
    copied_bin = copy / install.parent.name / install.name / bin_dir.name
    if not (copied_bin / "postgres").exists():
        log.info("copying the Postgres binaries to %s: user %s cannot enter %s", copy, PG_RUN_AS, install)
        SHARED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        partial = SHARED_ROOT / f".{copy.name}.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / install.parent.name / install.name, symlinks=True)
        libs = install.parent.with_name(install.parent.name + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in (partial, partial / install.parent.name):
            folder.chmod(0o755)
        partial.rename(copy)  # atomic: a copy that is there is whole
    return copied_bin


def reachable_data_dir(data_dir: Path, run_as: dict) -> Path:
    """Where the cluster of `data_dir` lives: there, when the user of `run_as` can reach it; else in SHARED_ROOT,
    with `data_dir` a symbolic link to it (so `.data/postgres` still leads to the cluster)."""
    if data_dir.is_symlink():
        return data_dir.resolve()
    if can_reach(data_dir.parent, run_as):
        return data_dir
    if (data_dir / "PG_VERSION").exists():
        raise RuntimeError(f"user {PG_RUN_AS} cannot enter {data_dir.parent}, where the Postgres cluster is: "
                           f"run `chmod o+x` on the folders above it, or move the checkout")
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    # e.g. repo-data-postgres-<digest>: the checkout, the data folder and the cluster's name, then the full path's hash
    label = "-".join(part.strip(".") for part in data_dir.parts[-3:] if part.strip("./"))
    target = SHARED_ROOT / "clusters" / f"{label}-{digest}"
    target.mkdir(parents=True, exist_ok=True)
    SHARED_ROOT.chmod(0o755)
    (SHARED_ROOT / "clusters").chmod(0o755)
    if data_dir.exists():
        data_dir.rmdir()  # an empty folder made before the cluster was
    data_dir.symlink_to(target, target_is_directory=True)
    log.info("user %s cannot enter %s: the Postgres cluster lives in %s (%s links to it)", PG_RUN_AS,
             data_dir.parent, target, data_dir)
    return target


class EmbeddedPostgres:
    """A Postgres 16 cluster in `data_dir`, listening on 127.0.0.1:`port`: trust auth for the owner `postgres`,
    passwords (scram-sha-256) for every other login (PG_HBA)."""

    def __init__(self, data_dir: Path, port: int, log_file: Path, *, bin_dir: Path | None = None):
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.log_file = log_file
        self.bin_dir = bin_dir
        self.process: subprocess.Popen | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict:
        """subprocess arguments that run Postgres as the system user PG_RUN_AS under root; {} otherwise."""
        if os.geteuid() != 0:
            return {}
        from pgserver.utils import ensure_user_exists

        entry = ensure_user_exists(PG_RUN_AS)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _prepare(self) -> tuple[Path, dict]:
        """(the binaries to run, the subprocess arguments to run them with), the cluster's folder made and owned."""
        run_as = self._run_as()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = reachable_data_dir(self.data_dir, run_as)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = reachable_bin_dir(self.bin_dir or pg_bin_dir(), run_as)
        if run_as:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, run_as["user"], run_as["group"])
        return bin_dir, run_as

    def start(self, timeout: float = 60) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        bin_dir, run_as = self._prepare()
        # cwd: the cluster's folder, which the server's user can enter (the caller's may be private).
        run_as = {**run_as, "cwd": self.data_dir}
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("initialising Postgres cluster in %s", self.data_dir)
            result = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--locale=C"],
                capture_output=True, text=True, **run_as,
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed (exit {result.returncode}) in {self.data_dir}: "
                                   f"{(result.stderr or result.stdout).strip()[-1500:]}")
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
