"""Fetching a drop by URL without letting the URL reach anything it should not (server-side request forgery).

`fetch(url, policy)` downloads a file (for `POST /api/v1/drops/from-url`, issue 6: the endpoint that
stores it and starts the ingest comes next) only when:
* the scheme is https (http only if the policy allows it, e.g. for a test server);
* the host is on the policy's allow-list (default NHS England's site), the host itself or a subdomain of it;
* every address the host resolves to is public: no loopback, private, link-local (cloud metadata),
  multicast or reserved address, unless the policy allows private addresses (tests only). The connection
  goes to the address that was checked, so a second DNS answer cannot swap it (DNS rebinding);
* each redirect passes the same checks again (at most `max_redirects`);
* the body is at most `max_bytes`: a larger Content-Length is refused before reading, and reading stops
  at the limit when the server did not say.
Refusals raise FetchRefused with a code and a message that says what to do; nothing is returned partially.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

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


def _public_address(host: str, port: int, policy: FetchPolicy) -> str:
    """The address to connect to, after checking every address the name resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchRefused("unresolvable_host", f"{host} does not resolve: check the URL") from exc
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        public = not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                      or ip.is_unspecified)
        if not public and not policy.allow_private_addresses:
            raise FetchRefused("private_address", f"{host} resolves to {ip}, which is not a public address: "
                                                  "only files on public servers can be fetched")
    return sorted(addresses, key=lambda address: ":" in address)[0]  # IPv4 first


def fetch(url: str, policy: FetchPolicy | None = None) -> Fetched:
    policy = policy or FetchPolicy()
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in (("https", "http") if policy.allow_http else ("https",)):
            raise FetchRefused("scheme_not_allowed", f"{parts.scheme or 'no'} scheme in {url!r}: use an https:// URL")
        host = parts.hostname or ""
        if not host or not _host_allowed(host, policy.allowed_hosts):
            raise FetchRefused("host_not_allowed", f"{host or url!r} is not on the list of hosts drops may be fetched "
                                                   f"from ({', '.join(policy.allowed_hosts)})")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _public_address(host, port, policy)
        timeout = urllib3.Timeout(total=policy.timeout_seconds)
        if parts.scheme == "https":
            # Connect to the checked address, but verify the certificate for the name in the URL.
            pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=host, assert_hostname=host,
                                               cert_reqs="CERT_REQUIRED", ca_certs=policy.ca_certs,
                                               timeout=timeout, retries=False)
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            response = pool.urlopen("GET", path, headers={"Host": parts.netloc, "User-Agent": "health-warehouse/1"},
                                    redirect=False, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise FetchRefused("fetch_failed", f"could not fetch {url}: {type(exc).__name__}", status=502) from exc
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise FetchRefused("fetch_failed", f"{url} redirects nowhere", status=502)
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchRefused("fetch_failed", f"{url} answered HTTP {response.status}", status=502)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise FetchRefused("too_large", f"{url} is {int(declared):,} bytes; the limit is {policy.max_bytes:,}",
                                   status=413)
            chunks, size = [], 0
            for chunk in response.stream(64 * 1024):
                size += len(chunk)
                if size > policy.max_bytes:
                    raise FetchRefused("too_large", f"{url} is larger than the limit of {policy.max_bytes:,} bytes",
                                       status=413)
                chunks.append(chunk)
            return Fetched(url, b"".join(chunks), response.headers.get("Content-Type"))
        finally:
            response.release_conn()
            pool.close()
    raise FetchRefused("too_many_redirects", f"more than {policy.max_redirects} redirects from the URL given")
