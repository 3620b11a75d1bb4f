"""SFTP destination: one CSV file per run in a partner's remote folder, never visible half-written.

The rows go batch by batch (memory flat in the number of rows) to `.<name>.part` in the folder, which is renamed to
`<name>` (`<run_key>.csv`) when complete; then a `<name>.sha256` sidecar in sha256sum's format is written beside it,
so the partner can check the file with `sha256sum -c`. `delivered` finds the final file and reads it back (bytes,
SHA-256, rows): a re-run sends nothing, and a file that no longer matches its sidecar is reported. A `.part` left by
a killed run is overwritten by the next attempt. The server's host key must be known (a known_hosts file, or a
pinned fingerprint): an unknown or changed key is refused. Decision record 0031.
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from elt.connectors.base import (
    ConnectorError,
    Credentials,
    Delivered,
    DestinationRefused,
    DestinationUnavailable,
    RunContext,
    lazy_module,
)

if TYPE_CHECKING:
    import pyarrow

paramiko = lazy_module("paramiko")

READ_WINDOW = 8 * 1024 * 1024    # read back a delivered file 8 MiB at a time ...
READ_REQUEST = 32 * 1024         # ... in SFTP read requests of the size every server takes
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Options(BaseModel):
    """`host`/`port`/`folder` say where; `credentials` name the login and a password or a private key (fields
    `login`, `password`, `private_key` (the key's text) or `key_file` (a path), `private_key_passphrase`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sftp"]
    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    folder: str = Field(".", min_length=1)      # must exist on the server; relative to the login's home unless /...
    credentials: Credentials
    known_hosts: Path | None = None             # an OpenSSH known_hosts file holding the server's key
    host_key_sha256: str | None = None          # or the key's fingerprint, 'SHA256:...' as `ssh-keygen -lf` prints it
    timeout_seconds: float = Field(30, gt=0)    # connect, authenticate, and each read or write

    @field_validator("host_key_sha256")
    @classmethod
    def _fingerprint_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", value):
            raise ValueError("must be a SHA-256 fingerprint as `ssh-keygen -lf` prints it: 'SHA256:' and 43 base64 "
                             "characters")
        return value.rstrip("=") if value else value

    @model_validator(mode="after")
    def _one_way_to_trust(self) -> Options:
        if self.known_hosts and self.host_key_sha256:
            raise ValueError("set known_hosts or host_key_sha256, not both")
        return self


def open(options: Options) -> SftpDestination:  # the name every kind defines (base.py); shadows no use here
    return SftpDestination(options)


def fingerprint(key: paramiko.PKey) -> str:
    """A host key's fingerprint as OpenSSH prints it: 'SHA256:' and the unpadded base64 of its digest."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class _HostKeyRefused(Exception):
    def __init__(self, offered: str):
        super().__init__(offered)
        self.offered = offered


def _pinned_or_refused(pinned: str | None):
    """The host key policy paramiko asks about every key it does not find in the loaded known_hosts: accept only the
    pinned fingerprint (none pinned: refuse every unknown host, as `StrictHostKeyChecking yes` does). Made here, not
    at the module's top, because its base class is paramiko's (loaded when a delivery runs: base.lazy_module)."""

    class PinnedOrRefused(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            if pinned is None or fingerprint(key) != pinned:
                raise _HostKeyRefused(fingerprint(key))

    return PinnedOrRefused()


@dataclass
class _Tally:
    """Bytes, their SHA-256 and CSV records (newlines outside quoted values) of one file, as it is written or read."""

    bytes: int = 0
    records: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _quoted: bool = False

    def add(self, data: bytes) -> None:
        self.bytes += len(data)
        self.digest.update(data)
        parts = data.split(b'"')  # "" inside a quoted value toggles twice, so the state stays right
        outside = parts[1::2] if self._quoted else parts[0::2]
        self.records += sum(part.count(b"\n") for part in outside)
        self._quoted ^= (len(parts) - 1) % 2 == 1

    def delivered(self, location: str, **detail) -> Delivered:
        return Delivered(location=location, rows=max(self.records - 1, 0), bytes=self.bytes,
                         sha256=self.digest.hexdigest(), detail=detail)


class SftpDestination:
    def __init__(self, options: Options):
        self.options = options

    # -- the contract (base.Destination) --

    def delivered(self, ctx: RunContext) -> Delivered | None:
        final = self._path(_file_name(ctx))
        with self._sftp() as sftp, self._translated(f"reading {self._where(final)}"):
            try:
                size = sftp.stat(final).st_size
            except FileNotFoundError:
                return None
            tally = _Tally()
            with sftp.open(final, "rb") as handle:
                for chunk in _read_ahead(handle, size):
                    tally.add(chunk)
            self._check_sidecar(sftp, final, tally.digest.hexdigest())
        return tally.delivered(self._location(final), read_back=True)

    csv_bytes = True  # the engine hands deliver_bytes Postgres's own CSV (base.CsvBytesDestination)

    def deliver(self, ctx: RunContext, batches: Iterable[pyarrow.RecordBatch]) -> Delivered:
        return self.deliver_bytes(ctx, _csv_chunks(ctx, batches))

    def deliver_bytes(self, ctx: RunContext, chunks: Iterable[bytes]) -> Delivered:
        name = _file_name(ctx)
        final, part = self._path(name), self._path(f".{name}.part")
        if ctx.dry_run:
            tally = _Tally()
            for data in chunks:
                tally.add(data)
            return tally.delivered(self._location(final), dry_run=True)
        with self._sftp() as sftp:
            tally = self._write(sftp, part, iter(chunks))
            self._publish(sftp, part, final)
            self._write_sidecar(sftp, final, tally.digest.hexdigest())
        delivered = tally.delivered(self._location(final))
        ctx.log.info("connector %s: %d rows (%d bytes) delivered to %s", ctx.connector, delivered.rows,
                     delivered.bytes, self._where(final))
        return delivered

    # -- writing --

    def _write(self, sftp: paramiko.SFTPClient, part: str, chunks: Iterator[bytes]) -> _Tally:
        """Write the chunks to the .part file (truncating a dead one). An error of the rows' own iterator
        propagates as it is, after the .part is removed; the server's errors are translated."""
        tally = _Tally()
        where = f"writing {self._where(part)}"
        with self._translated(where):
            handle = sftp.open(part, "wb")
            handle.set_pipelined(True)
        try:
            for data in chunks:
                with self._translated(where):
                    handle.write(data)
                tally.add(data)
            with self._translated(where):
                handle.close()  # a pipelined write's error arrives here
        except BaseException:
            self._discard(sftp, handle, part)
            raise
        return tally

    def _discard(self, sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, part: str) -> None:
        try:
            handle.close()
            sftp.remove(part)
        except (OSError, paramiko.SSHException, EOFError):
            pass  # the next attempt truncates the dead .part anyway

    def _publish(self, sftp: paramiko.SFTPClient, part: str, final: str) -> None:
        """SFTP's own rename never replaces an existing file: a second copy of a delivered run is refused."""
        with self._translated(f"renaming {self._where(part)}"):
            try:
                sftp.rename(part, final)
                return
            except OSError:
                if not self._exists(sftp, final):
                    raise
            sftp.remove(part)
        raise DestinationRefused(
            f"{self._where(final)} already exists: an earlier attempt delivered this run. "
            "Nothing was replaced; remove it and its .sha256 to deliver the run again")

    def _write_sidecar(self, sftp: paramiko.SFTPClient, final: str, sha256: str) -> None:
        sidecar = f"{final}.sha256"
        part = self._path(f".{posixpath.basename(sidecar)}.part")
        with self._translated(f"writing {self._where(sidecar)}"):
            with sftp.open(part, "wb") as handle:
                handle.write(f"{sha256}  {posixpath.basename(final)}\n".encode())
            sftp.posix_rename(part, sidecar)

    def _check_sidecar(self, sftp: paramiko.SFTPClient, final: str, sha256: str) -> None:
        """The file read back must match its sidecar; a file without one was renamed by an attempt that died
        before its last step, which is done now."""
        try:
            with sftp.open(f"{final}.sha256", "rb") as handle:
                recorded = handle.read(4096).split(b" ", 1)[0].decode("ascii", "replace")
        except FileNotFoundError:
            self._write_sidecar(sftp, final, sha256)
            return
        if recorded != sha256:
            raise DestinationRefused(
                f"{self._where(final)} no longer matches its .sha256 sidecar: it was changed after delivery. Check "
                "with the partner, then remove both files to deliver the run again")

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    # -- connecting --

    @contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient]:
        client = paramiko.SSHClient()
        try:
            with self._translated(f"connecting to {self._where()}"):
                self._trust(client)
                self._connect(client)
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(self.options.timeout_seconds)
            yield sftp
        finally:
            client.close()

    def _trust(self, client: paramiko.SSHClient) -> None:
        if self.options.known_hosts:
            if not self.options.known_hosts.is_file():
                raise ConnectorError(f"known_hosts file {self.options.known_hosts} does not exist (option "
                                     "known_hosts of the sftp destination)")
            client.load_host_keys(str(self.options.known_hosts))
        elif not self.options.host_key_sha256:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(_pinned_or_refused(self.options.host_key_sha256))

    def _connect(self, client: paramiko.SSHClient) -> None:
        secrets = self.options.credentials.resolve()
        if not secrets.get("login"):
            raise ConnectorError(f"the credentials of the sftp destination {self._where()} have no login")
        key = _private_key(secrets)
        if key is None and not secrets.get("password"):
            raise ConnectorError(f"the credentials of the sftp destination {self._where()} have neither a "
                                 "password nor a private_key/key_file")
        timeout = self.options.timeout_seconds
        client.connect(self.options.host, self.options.port, username=secrets["login"],
                       password=secrets.get("password"), pkey=key, allow_agent=False, look_for_keys=False,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """paramiko's and the network's errors as the engine's two kinds, with a message that says what to do."""
        try:
            yield
        except ConnectorError:
            raise
        except _HostKeyRefused as exc:
            raise DestinationRefused(self._host_key_advice(doing, exc.offered)) from None
        except paramiko.BadHostKeyException as exc:
            raise DestinationRefused(
                f"{doing}: the server's host key ({fingerprint(exc.key)}) is not the one known_hosts holds for it. "
                "If the partner changed it, confirm the new fingerprint with them and update known_hosts") from None
        except paramiko.AuthenticationException:
            raise DestinationRefused(f"{doing}: the server refused the login: check the credentials (login, "
                                     "password or private key) and that the key is authorized there") from None
        except PermissionError:
            raise DestinationRefused(f"{doing}: permission denied: the login may not write there; ask the partner "
                                     "or change the folder option") from None
        except FileNotFoundError:
            raise DestinationRefused(f"{doing}: no such folder on the server: create it or change the folder "
                                     "option") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DestinationUnavailable(f"{doing}: {_network_reason(exc)}; the run can be retried") from None

    def _host_key_advice(self, doing: str, offered: str) -> str:
        o = self.options
        if o.host_key_sha256:
            return (f"{doing}: the server's host key is {offered}, not the pinned host_key_sha256. If the partner "
                    "changed it, confirm the new fingerprint with them and update the option")
        source = f"known_hosts file {o.known_hosts}" if o.known_hosts else "~/.ssh/known_hosts (no option set)"
        return (f"{doing}: the server's host key ({offered}) is not in {source}, and unknown hosts are refused. "
                f"Confirm the fingerprint with the partner, then set host_key_sha256: {offered} or add its line "
                f"(`ssh-keyscan -p {o.port} {o.host}`) to a known_hosts file named by the known_hosts option")

    # -- names --

    def _path(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self.options.folder, name))

    def _where(self, path: str | None = None) -> str:
        where = f"sftp server {self.options.host}:{self.options.port}"
        return f"{where} {path}" if path else where

    def _location(self, path: str) -> str:
        return f"sftp://{self.options.host}:{self.options.port}/{path.lstrip('/')}"


def _file_name(ctx: RunContext) -> str:
    """`<run_key>.csv`: the run_key starts with the connector's name (base.RunContext); one that does not is
    prefixed with it, so the name always says both."""
    stem = ctx.run_key if ctx.run_key.startswith(f"{ctx.connector}-") else f"{ctx.connector}-{ctx.run_key}"
    if not SAFE_NAME.fullmatch(stem):
        raise ConnectorError(f"connector {ctx.connector!r}: run key {ctx.run_key!r} cannot make a file name "
                             "(letters, digits, '.', '_' and '-' only)")
    return f"{stem}.csv"


def _csv_chunks(ctx: RunContext, batches: Iterable[pyarrow.RecordBatch]) -> Iterator[bytes]:
    """The CSV's bytes, one chunk per batch: a header of the first batch's columns (ctx.columns when there is no
    batch), then its rows. Values as pyarrow's CSV writer formats them; a null is an empty field. (Only for `deliver`
    called with batches: the engine hands deliver_bytes Postgres's own CSV, whose conventions docs/connectors-remote.md
    gives.)"""
    import pyarrow

    header: list[str] | None = None
    for number, batch in enumerate(batches, start=1):
        if header is None:
            header = batch.schema.names
        elif batch.schema.names != header:
            raise ConnectorError(f"connector {ctx.connector!r}: batch {number} has other columns than batch 1")
        yield _csv_bytes(batch, include_header=number == 1)
    if header is None:
        empty = pyarrow.schema([(name, pyarrow.string()) for name in ctx.columns]).empty_table()
        yield _csv_bytes(empty, include_header=True)


def _csv_bytes(data, *, include_header: bool) -> bytes:
    import pyarrow
    import pyarrow.csv as pacsv

    sink = pyarrow.BufferOutputStream()
    pacsv.write_csv(data, sink, pacsv.WriteOptions(include_header=include_header, quoting_style="needed"))
    return sink.getvalue().to_pybytes()


def _read_ahead(handle: paramiko.SFTPFile, size: int) -> Iterator[bytes]:
    """The file's bytes in order, READ_WINDOW at a time, each window's 32 KiB requests pipelined. (paramiko's
    prefetch of a whole file keeps whatever arrives before it is read: memory would grow with the file.)"""
    for start in range(0, size, READ_WINDOW):
        end = min(start + READ_WINDOW, size)
        yield from handle.readv([(offset, min(READ_REQUEST, end - offset))
                                 for offset in range(start, end, READ_REQUEST)])


def _private_key(secrets: dict[str, str]) -> paramiko.PKey | None:
    passphrase = secrets.get("private_key_passphrase")
    if secrets.get("key_file"):
        return paramiko.PKey.from_path(secrets["key_file"], passphrase=passphrase)
    if not secrets.get("private_key"):
        return None
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(secrets["private_key"]), password=passphrase)
        except paramiko.SSHException:
            continue
    raise ConnectorError("the private_key of the sftp destination's credentials is not an Ed25519, ECDSA or RSA "
                         "private key that its passphrase opens")


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | ConnectionRefusedError):
        return "connection refused: is the server up, and are host and port right?"
    if isinstance(exc, paramiko.SSHException):
        return "the SSH session failed (no SSH answer in time, or the connection dropped)"
    return f"the connection failed ({type(exc).__name__})"
