"""backend/fetch.py against a real HTTP server on loopback: what it fetches, and everything it refuses."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.fetch import FetchPolicy, FetchRefused, fetch

WORKBOOK = b"PK\x03\x04" + b"x" * 5000  # the first bytes of a zip (xlsx) and some body


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        routes = {
            "/kh03.xlsx": lambda: self._send(200, WORKBOOK, length=True),
            "/big.xlsx": lambda: self._send(200, b"x" * 20_000, length=True),
            "/big-unannounced.xlsx": lambda: self._send(200, b"x" * 20_000, length=False),
            "/moved": lambda: self._redirect("/kh03.xlsx"),
            "/moved-off-list": lambda: self._redirect(f"http://127.0.0.1:{self.server.server_port}/kh03.xlsx"),
            "/moved-to-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data/"),
            "/loop": lambda: self._redirect("/loop"),
            "/trickle.xlsx": self._trickle,
        }
        if self.path.startswith("/slow-hop/"):  # each hop answers after 0.4 s; /slow-hop/0 is the file
            time.sleep(0.4)
            left = int(self.path.rsplit("/", 1)[1])
            return self._redirect(f"/slow-hop/{left - 1}") if left else self._send(200, WORKBOOK, length=True)
        routes.get(self.path, lambda: self._send(404, b"not here", length=True))()

    def _trickle(self) -> None:
        """A byte every 0.1 s: each read returns quickly, the whole body takes 4 s."""
        body = WORKBOOK[:40]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the fetch gave up and shut the connection
            pass

    def _send(self, status: int, body: bytes, *, length: bool) -> None:
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.send_header("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_port}"
    httpd.shutdown()


# The test server is on loopback: these tests allow private addresses and http; the refusals below do not.
LOCAL = FetchPolicy(allowed_hosts=("localhost",), max_bytes=10_000, allow_http=True, allow_private_addresses=True)


def test_an_allowed_file_is_fetched_whole(server):
    fetched = fetch(f"{server}/kh03.xlsx", LOCAL)
    assert fetched.data == WORKBOOK and fetched.content_type.startswith("application/vnd.openxmlformats")


def test_a_redirect_on_the_allowed_host_is_followed(server):
    fetched = fetch(f"{server}/moved", LOCAL)
    assert fetched.data == WORKBOOK and fetched.url.endswith("/kh03.xlsx")


@pytest.mark.parametrize(("path", "code", "status"), [
    ("/big.xlsx", "too_large", 413),                 # Content-Length over the limit: refused before reading
    ("/big-unannounced.xlsx", "too_large", 413),     # no Content-Length: reading stops at the limit
    ("/moved-off-list", "host_not_allowed", 400),    # 127.0.0.1 is not "localhost" on the list
    ("/moved-to-metadata", "host_not_allowed", 400),
    ("/loop", "too_many_redirects", 400),
    ("/missing.xlsx", "fetch_failed", 502),
])
def test_what_the_server_answers_can_be_refused(server, path, code, status):
    with pytest.raises(FetchRefused) as refused:
        fetch(server + path, LOCAL)
    assert (refused.value.code, refused.value.status) == (code, status)
    assert refused.value.message


@pytest.mark.parametrize(("url", "policy", "code"), [
    ("http://localhost/x.xlsx", FetchPolicy(allowed_hosts=("localhost",), allow_http=True), "private_address"),
    ("http://169.254.169.254/latest/meta-data/", FetchPolicy(allowed_hosts=("169.254.169.254",), allow_http=True),
     "private_address"),
    ("http://10.0.0.7/kh03.xlsx", FetchPolicy(allowed_hosts=("10.0.0.7",), allow_http=True), "private_address"),
    ("http://www.england.nhs.uk/kh03.xlsx", FetchPolicy(), "scheme_not_allowed"),
    ("ftp://www.england.nhs.uk/kh03.xlsx", FetchPolicy(allow_http=True), "scheme_not_allowed"),
    ("https://evil.example/kh03.xlsx", FetchPolicy(), "host_not_allowed"),
    ("https://www.england.nhs.uk.evil.example/kh03.xlsx", FetchPolicy(), "host_not_allowed"),
    ("https://user@/kh03.xlsx", FetchPolicy(), "host_not_allowed"),
])
def test_urls_that_could_reach_what_they_should_not_are_refused_before_any_request(url, policy, code):
    with pytest.raises(FetchRefused) as refused:
        fetch(url, policy)
    assert refused.value.code == code


# Not globally reachable (ipaddress's is_global), or carrying such an IPv4 address: shared address space
# (carrier-grade NAT), documentation, benchmarking, reserved, multicast, IPv4-mapped loopback, NAT64 and 6to4
# spellings of 127.0.0.1, unique-local and link-local IPv6.
NOT_GLOBAL = ["100.64.0.1", "100.127.255.254", "192.0.2.1", "198.18.0.1", "240.0.0.1", "224.0.0.1",
              "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "fd00::1", "fe80::1"]


@pytest.mark.parametrize("address", NOT_GLOBAL)
def test_addresses_that_are_not_globally_reachable_are_never_fetched(address):
    host = f"[{address}]" if ":" in address else address
    policy = FetchPolicy(allowed_hosts=(address,), timeout_seconds=2)  # on the list: only the address refuses it
    with pytest.raises(FetchRefused) as refused:
        fetch(f"https://{host}/kh03.xlsx", policy)
    assert (refused.value.code, refused.value.status) == ("private_address", 400)


def test_global_addresses_are_public_including_their_ipv6_spellings():
    import ipaddress

    from backend.fetch import is_public

    for address in ("8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"):
        assert is_public(ipaddress.ip_address(address)), address
    assert not any(is_public(ipaddress.ip_address(address)) for address in NOT_GLOBAL)


@pytest.mark.parametrize("url", ["https://www.england.nhs.uk:0/kh03.xlsx", "https://www.england.nhs.uk:99999/kh03.xlsx",
                                 "https://www.england.nhs.uk:x/kh03.xlsx", "https://www.england.nhs.uk:-1/kh03.xlsx",
                                 "https://[www.england.nhs.uk/kh03.xlsx"])
def test_a_url_with_a_bad_port_or_host_is_refused_as_invalid(url):
    with pytest.raises(FetchRefused) as refused:
        fetch(url, FetchPolicy(timeout_seconds=2))
    assert (refused.value.code, refused.value.status) == ("invalid_url", 400)


def test_the_timeout_bounds_the_whole_fetch_not_each_read(server):
    """Each byte of the body comes within the timeout; the whole body does not."""
    with pytest.raises(FetchRefused) as refused:
        fetch(f"{server}/trickle.xlsx", FetchPolicy(allowed_hosts=("localhost",), allow_http=True,
                                                    allow_private_addresses=True, timeout_seconds=1))
    assert (refused.value.code, refused.value.status) == ("fetch_timeout", 504)


def test_the_timeout_bounds_every_redirect_together(server):
    """Four hops of 0.4 s each (three redirects, then the file): every hop within a 1 s timeout, the chain not."""
    policy = FetchPolicy(allowed_hosts=("localhost",), allow_http=True, allow_private_addresses=True,
                         timeout_seconds=1)
    with pytest.raises(FetchRefused) as refused:
        fetch(f"{server}/slow-hop/3", policy)
    assert refused.value.code == "fetch_timeout"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An https server on loopback with a certificate for `localhost` from a CA made here."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port, str(folder / "ca.pem")
    httpd.shutdown()


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_name(tls_server):
    port, ca = tls_server
    policy = FetchPolicy(allowed_hosts=("localhost",), allow_private_addresses=True, ca_certs=ca)
    assert fetch(f"https://localhost:{port}/kh03.xlsx", policy).data == WORKBOOK
    # The same server under a name its certificate does not carry, or without trusting its CA: refused.
    other_name = FetchPolicy(allowed_hosts=("127.0.0.1",), allow_private_addresses=True, ca_certs=ca)
    for url, policy_used in ((f"https://127.0.0.1:{port}/kh03.xlsx", other_name),
                             (f"https://localhost:{port}/kh03.xlsx",
                              FetchPolicy(allowed_hosts=("localhost",), allow_private_addresses=True))):
        with pytest.raises(FetchRefused) as refused:
            fetch(url, policy_used)
        assert refused.value.code == "fetch_failed"
