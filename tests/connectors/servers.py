"""Real servers on loopback for the remote destinations' tests: an SFTP server (asyncssh) and an HTTP receiver.

Both run in a thread of the test process and keep what they received where a test can read it: the SFTP server
writes into a folder (its chroot) of tmp_path; the receiver keeps each stored batch's raw body by Idempotency-Key.
Each can be told to misbehave (refuse writes; answer 5xx, 4xx or too late), which is how the failure paths are
driven without mocks. conftest.py imports the fixtures from here (kept apart so other connector fixtures merge
cleanly beside them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncssh
import pytest

SFTP_LOGIN = "partner"
SFTP_PASSWORD = "partner-password"


class _Sftp(asyncssh.SFTPServer):
    """asyncssh's SFTP server on a chroot folder; with `read_only` set, every write or rename is denied."""

    def __init__(self, chan, *, root: Path, owner: SftpServer):
        super().__init__(chan, chroot=str(root).encode())
        self.owner = owner

    def open(self, path, pflags, attrs):
        if self.owner.read_only and pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT):
            raise asyncssh.SFTPPermissionDenied("read-only for this test")
        return super().open(path, pflags, attrs)

    def rename(self, oldpath, newpath):
        if self.owner.read_only:
            raise asyncssh.SFTPPermissionDenied("read-only for this test")
        return super().rename(oldpath, newpath)


class _PasswordOrKey(asyncssh.SSHServer):
    def __init__(self, owner: SftpServer):
        self.owner = owner

    def connection_made(self, conn):
        self.owner.connections.append(conn)

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        return username == SFTP_LOGIN and password == SFTP_PASSWORD


class SftpServer:
    """An SFTP server on 127.0.0.1 with a host key and an authorized client key made for the test."""

    def __init__(self, root: Path, keys: Path):
        self.root = root
        self.read_only = False
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_text = self.client_key.export_private_key("openssh").decode()
        self.authorized_keys = keys / "authorized_keys"
        self.authorized_keys.write_bytes(self.client_key.export_public_key("openssh"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listener = None
        self.connections: list[asyncssh.SSHServerConnection] = []
        self.port = 0

    @property
    def fingerprint(self) -> str:
        """'SHA256:...' as `ssh-keygen -lf` prints it."""
        return self.host_key.get_fingerprint("sha256")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.export_public_key('openssh').decode().strip()}\n"

    def start(self) -> SftpServer:
        self._thread.start()
        async def listen():
            return await asyncssh.listen(
                "127.0.0.1", 0, server_host_keys=[self.host_key], authorized_client_keys=str(self.authorized_keys),
                server_factory=lambda: _PasswordOrKey(self), sftp_factory=lambda chan: _Sftp(chan, root=self.root, owner=self),
                allow_scp=False)

        self._listener = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(timeout=30)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and drop every session (a server going down mid-transfer); again: nothing."""
        if self._loop.is_closed():
            return

        async def close():
            self._listener.close()
            await self._listener.wait_closed()
            for conn in self.connections:
                conn.abort()
            sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@dataclass
class Received:
    key: str | None
    authorization: str | None
    status: int


@dataclass
class HttpReceiver:
    """Stores each POSTed body once per Idempotency-Key; `plan` says how to answer the next requests."""

    token: str | None = None
    stored: dict[str, bytes] = field(default_factory=dict)       # key -> raw body, in the order first stored
    requests: list[Received] = field(default_factory=list)       # every request, with the status answered
    plan: deque = field(default_factory=deque)  # per request: ("pass", 0), ("status", code), ("delay", s), ("busy", s)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _in_flight: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition)

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no request is being answered (a delayed one finishes after its client gave up)."""
        with self._idle:
            assert self._idle.wait_for(lambda: self._in_flight == 0, timeout), "a request never finished"

    def answer_next(self, *steps: tuple[str, float]) -> None:
        """E.g. answer_next(("pass", 0), ("pass", 0), *[("status", 503)] * 3): the next two requests are handled
        normally, the three after them get a 503."""
        self.plan.extend(steps)

    def rows(self) -> list[dict]:
        """Every stored row, batches in batch-number order."""
        bodies = sorted((json.loads(body) for body in self.stored.values()), key=lambda body: body["batch"])
        return [row for body in bodies for row in body["rows"]]

    def _next_step(self) -> tuple[str, float]:
        with self.lock:
            return self.plan.popleft() if self.plan else ("pass", 0)

    def handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes, dict[str, str]]:
        with self._idle:
            self._in_flight += 1
        try:
            return self._handle(handler)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes, dict[str, str]]:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        key, authorization = handler.headers.get("Idempotency-Key"), handler.headers.get("Authorization")
        step, value = self._next_step()
        if step == "delay":
            time.sleep(value)  # the client has given up by now; the batch is stored all the same, as a slow server does
        headers = {}
        if step == "status":
            status = int(value)
        elif step == "busy":  # 429 Too Many Requests, asking for `value` seconds
            status, headers = 429, {"Retry-After": str(int(value))}
        elif self.token and authorization != f"Bearer {self.token}":
            status = 401
        else:
            with self.lock:
                status = 200 if key in self.stored else 201
                self.stored.setdefault(key, body)
        with self.lock:
            self.requests.append(Received(key, authorization, status))
        return status, body, headers


class _Handler(BaseHTTPRequestHandler):
    receiver: HttpReceiver

    def do_POST(self):  # noqa: N802 - http.server's name
        status, body, headers = self.receiver.handle(self)
        # A refusal echoes the request, as some endpoints do: the client must not repeat it in its errors.
        answer = json.dumps({"status": status, "request": body.decode() if status >= 400 else ""}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass  # the client timed out and left

    def log_message(self, format, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sftp_server(tmp_path):
    root, keys = tmp_path / "sftp-root", tmp_path / "sftp-keys"
    root.mkdir()
    keys.mkdir()
    server = SftpServer(root, keys).start()
    yield server
    server.stop()


@pytest.fixture
def http_receiver():
    receiver = HttpReceiver()
    handler = type("Handler", (_Handler,), {"receiver": receiver})
    server = _QuietServer(("127.0.0.1", 0), handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/v1/batches"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word: a hung server, for the timeout paths."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
