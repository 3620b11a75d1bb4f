"""Fetching a drop by URL without letting the URL reach anything it should not (server-side request forgery).

`fetch(url, policy)` downloads a file (for `POST /api/v1/drops/from-url`, issue 6: the endpoint that
stores it and starts the ingest comes next) only when:
* the scheme is https (http only if the policy allows it, e.g. for a test server);
* the host is on the policy's allow-list (default NHS England's site), the host itself or a subdomain of it;
* the URL parses and its port is 1 to 65535 (anything else is a 400, never a server error);
* every address the host resolves to is globally reachable (`ipaddress`'s is_global, so no loopback, private,
  link-local (cloud metadata), shared (100.64.0.0/10, carrier-grade NAT), benchmarking, documentation or
  reserved address), and not multicast; an IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo,
  NAT64) is judged by that too. Unless the policy allows private addresses (tests only). The connection
  goes to the address that was checked, so a second DNS answer cannot swap it (DNS rebinding);
* each redirect passes the same checks again (at most `max_redirects`);
* the body is at most `max_bytes`: a larger Content-Length is refused before reading, and reading stops
  at the limit when the server did not say;
* the whole fetch, every redirect, the name lookups and the body included, ends within `timeout_seconds`:
  one deadline, not a timeout per step, so a server that trickles its body cannot hold an API thread.
Refusals raise FetchRefused with a code and a message that says what to do; nothing is returned partially.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.ssl_match_hostname import CertificateError

DEFAULT_ALLOWED_HOSTS = ("www.england.nhs.uk",)


class FetchRefused(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 3
    timeout_seconds: float = 30.0
    allow_http: bool = False
    allow_private_addresses: bool = False
    ca_certs: str | None = None  # a CA bundle instead of the system's (a private CA; the tests' own)


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    data: bytes
    content_type: str | None


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry or host.endswith("." + entry) for entry in (a.lower().rstrip(".") for a in allowed))


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally reachable and unicast, and so is any IPv4 address an IPv6 one carries."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None,
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None]
        return all(is_public(v4) for v4 in embedded if v4 is not None)
    return True


class _Deadline:
    """The one deadline of a whole fetch."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def left(self, url: str) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired(url)
        return left

    def expired(self, url: str) -> FetchRefused:
        return FetchRefused("fetch_timeout", f"fetching {url} took longer than {self.seconds:g} s in all "
                                             "(API_FETCH_TIMEOUT_SECONDS)", status=504)


_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch-dns")


def _resolve(host: str, port: int, deadline: _Deadline, url: str) -> list[str]:
    """getaddrinfo within the deadline (it has no timeout of its own; a late answer is abandoned)."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return [info[4][0] for info in future.result(timeout=deadline.left(url))]
    except FutureTimeout:
        raise deadline.expired(url) from None
    except (OSError, UnicodeError) as exc:
        raise FetchRefused("unresolvable_host", f"{host} does not resolve: check the URL") from exc


def _public_address(host: str, port: int, policy: FetchPolicy, deadline: _Deadline, url: str) -> str:
    """The address to connect to, after checking every address the name resolves to."""
    addresses = _resolve(host, port, deadline, url)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not is_public(ip) and not policy.allow_private_addresses:
            raise FetchRefused("private_address", f"{host} resolves to {ip}, which is not a public address: "
                                                  "only files on public servers can be fetched")
    return sorted(addresses, key=lambda address: ":" in address)[0]  # IPv4 first


def _parse(url: str, policy: FetchPolicy) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of a URL this policy may fetch from; FetchRefused (400) for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port (":99999", ":x") or a broken IPv6 literal
        raise FetchRefused("invalid_url", f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in (("https", "http") if policy.allow_http else ("https",)):
        raise FetchRefused("scheme_not_allowed", f"{parts.scheme or 'no'} scheme in {url!r}: use an https:// URL")
    host = parts.hostname or ""
    if not host or not _host_allowed(host, policy.allowed_hosts):
        raise FetchRefused("host_not_allowed", f"{host or url!r} is not on the list of hosts drops may be fetched "
                                               f"from ({', '.join(policy.allowed_hosts)})")
    if port == 0:
        raise FetchRefused("invalid_url", f"{url!r} names port 0, which no server listens on")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


def fetch(url: str, policy: FetchPolicy | None = None) -> Fetched:
    policy = policy or FetchPolicy()
    deadline = _Deadline(policy.timeout_seconds)
    for _ in range(policy.max_redirects + 1):
        parts, host, port = _parse(url, policy)
        address = _public_address(host, port, policy, deadline, url)
        fetched, url = _get(parts, host, address, port, url, policy, deadline)
        if fetched is not None:
            return fetched
    raise FetchRefused("too_many_redirects", f"more than {policy.max_redirects} redirects from the URL given")


def _get(parts: SplitResult, host: str, address: str, port: int, url: str, policy: FetchPolicy,
         deadline: _Deadline) -> tuple[Fetched | None, str]:
    """One hop: (the file, its URL), or (None, the URL a redirect points to)."""
    left = deadline.left(url)  # also the socket timeout of the connect and of each read: none outlives the deadline
    if parts.scheme == "https":
        # Connect to the checked address, but verify the certificate for the name in the URL.
        conn: HTTPConnection = HTTPSConnection(address, port, timeout=left, server_hostname=host,
                                               assert_hostname=host, cert_reqs="CERT_REQUIRED",
                                               ca_certs=policy.ca_certs)
    else:
        conn = HTTPConnection(address, port, timeout=left)
    # At the deadline the connection is shut: a read blocked on a server that trickles returns at once.
    expired = threading.Event()
    watchdog = threading.Timer(left, lambda: (expired.set(), _shut(conn.sock)))
    watchdog.daemon = True
    watchdog.start()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "health-warehouse/1"},
                     preload_content=False)
        response = conn.getresponse()
        return _read(response, url, policy, deadline, expired)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, CertificateError) as exc:
        if expired.is_set() or _timed_out(exc):
            raise deadline.expired(url) from exc
        raise FetchRefused("fetch_failed", f"could not fetch {url}: {type(exc).__name__}", status=502) from exc
    finally:
        watchdog.cancel()
        conn.close()


def _read(response: urllib3.BaseHTTPResponse, url: str, policy: FetchPolicy, deadline: _Deadline,
          expired: threading.Event) -> tuple[Fetched | None, str]:
    if response.status in (301, 302, 303, 307, 308):
        location = response.headers.get("Location")
        if not location:
            raise FetchRefused("fetch_failed", f"{url} redirects nowhere", status=502)
        return None, urljoin(url, location)
    if response.status != 200:
        raise FetchRefused("fetch_failed", f"{url} answered HTTP {response.status}", status=502)
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchRefused("too_large", f"{url} is {int(declared):,} bytes; the limit is {policy.max_bytes:,}",
                           status=413)
    chunks, size = [], 0
    for chunk in response.stream(64 * 1024):
        deadline.left(url)
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchRefused("too_large", f"{url} is larger than the limit of {policy.max_bytes:,} bytes",
                               status=413)
        chunks.append(chunk)
    if expired.is_set():  # the shut connection may read as a short, clean end
        raise deadline.expired(url)
    return Fetched(url, b"".join(chunks), response.headers.get("Content-Type")), url


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError | socket.timeout)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:  # still connecting: the connect timeout ends at the deadline
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
