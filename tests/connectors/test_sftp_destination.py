"""The SFTP destination against a real SFTP server on loopback (asyncssh, tests/connectors/servers.py)."""

from __future__ import annotations

import hashlib
import logging

import asyncssh
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from elt.connectors.base import ConnectorError, Credentials, DestinationRefused, DestinationUnavailable
from elt.connectors.destinations import sftp
from tests.connectors.rows import SCHEMA, SECRET, assert_no_row_values, batches, context, rows
from tests.connectors.servers import SFTP_LOGIN, SFTP_PASSWORD, free_port

NAME = "beds_weekly-20260105T020000.csv"


@pytest.fixture
def outbox(sftp_server):
    folder = sftp_server.root / "outbox"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def secrets(monkeypatch, sftp_server):
    monkeypatch.setenv("SFTP_LOGIN", SFTP_LOGIN)
    monkeypatch.setenv("SFTP_KEY", sftp_server.client_key_text)
    monkeypatch.setenv("SFTP_PASSWORD", SFTP_PASSWORD)
    monkeypatch.setenv("SFTP_WRONG_PASSWORD", "not-the-password")


def options(server, **changes) -> sftp.Options:
    values = {"kind": "sftp", "host": "127.0.0.1", "port": server.port, "folder": "outbox",
              "credentials": Credentials(env={"login": "SFTP_LOGIN", "private_key": "SFTP_KEY"}),
              "host_key_sha256": server.fingerprint, "timeout_seconds": 10}
    return sftp.Options(**{**values, **changes})


def read_back(path) -> pa.Table:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=SCHEMA, strings_can_be_null=True, quoted_strings_can_be_null=False))


def test_a_run_arrives_whole_row_for_row_with_its_checksum(sftp_server, outbox):
    values = rows(250)
    destination = sftp.open(options(sftp_server))

    assert destination.delivered(context()) is None
    delivered = destination.deliver(context(), batches(values, [100, 0, 120, 30]))

    final = outbox / NAME
    data = final.read_bytes()
    assert read_back(final).equals(pa.Table.from_pylist(values, schema=SCHEMA))
    assert sorted(p.name for p in outbox.iterdir()) == [NAME, f"{NAME}.sha256"]  # no .part left
    assert (delivered.rows, delivered.bytes, delivered.sha256) == (250, len(data), hashlib.sha256(data).hexdigest())
    assert (outbox / f"{NAME}.sha256").read_text() == f"{hashlib.sha256(data).hexdigest()}  {NAME}\n"
    assert delivered.location == f"sftp://127.0.0.1:{sftp_server.port}/outbox/{NAME}"
    again = destination.delivered(context())
    assert (again.location, again.rows, again.bytes, again.sha256) == (
        delivered.location, delivered.rows, delivered.bytes, delivered.sha256)


def test_the_csv_quotes_strings_and_leaves_nulls_empty(sftp_server, outbox):
    values = rows(2, name="Ann")
    values[0]["patient_name"] = ""  # an empty string is "", a null nothing
    sftp.open(options(sftp_server)).deliver(context(), batches(values, [1, 1]))

    assert (outbox / NAME).read_text() == (
        '"facility_id","patient_name","admitted_on","occupancy","measured_at","note"\n'
        '0,"",2026-01-01,0.25,2026-01-01 02:00:00.000000Z,\n'
        '1,"Ann 1",2026-01-02,1.25,2026-01-01 02:01:00.000000Z,"bed ""1"", ward\nB"\n')


def test_a_run_with_no_rows_is_a_header(sftp_server, outbox):
    delivered = sftp.open(options(sftp_server)).deliver(context(), [])

    assert (outbox / NAME).read_text() == ",".join(f'"{name}"' for name in SCHEMA.names) + "\n"
    assert delivered.rows == 0


def test_password_login_with_a_known_hosts_file(sftp_server, outbox, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp_server.known_hosts_line())
    destination = sftp.open(options(
        sftp_server, host_key_sha256=None, known_hosts=known_hosts,
        credentials=Credentials(env={"login": "SFTP_LOGIN", "password": "SFTP_PASSWORD"})))

    delivered = destination.deliver(context(), batches(rows(7), [7]))

    assert read_back(outbox / NAME).num_rows == delivered.rows == 7


def test_a_run_killed_mid_write_shows_no_file_and_the_rerun_delivers_once(sftp_server, outbox):
    values = rows(90)
    destination = sftp.open(options(sftp_server))

    def killed():
        yield from batches(values[:30], [30])
        raise RuntimeError("the source died")

    with pytest.raises(RuntimeError, match="the source died"):
        destination.deliver(context(), killed())
    assert list(outbox.iterdir()) == []
    # A process killed outright cannot remove its .part: the next attempt overwrites it.
    (outbox / f".{NAME}.part").write_bytes(b"half a file from a killed run\n" * 1000)
    assert destination.delivered(context()) is None

    delivered = destination.deliver(context(), batches(values, [40, 50]))

    assert read_back(outbox / NAME).equals(pa.Table.from_pylist(values, schema=SCHEMA))
    assert sorted(p.name for p in outbox.iterdir()) == [NAME, f"{NAME}.sha256"]
    assert destination.delivered(context()).sha256 == delivered.sha256
    before = (outbox / NAME).read_bytes()
    with pytest.raises(DestinationRefused, match="already exists") as refused:
        destination.deliver(context(), batches(values, [90]))
    assert (outbox / NAME).read_bytes() == before
    assert sorted(p.name for p in outbox.iterdir()) == [NAME, f"{NAME}.sha256"]
    assert_no_row_values(str(refused.value))


def test_a_missing_sidecar_is_restored_and_a_changed_file_is_reported(sftp_server, outbox):
    destination = sftp.open(options(sftp_server))
    delivered = destination.deliver(context(), batches(rows(20), [20]))
    (outbox / f"{NAME}.sha256").unlink()  # the attempt died between its rename and its sidecar

    assert destination.delivered(context()).sha256 == delivered.sha256
    assert (outbox / f"{NAME}.sha256").read_text() == f"{delivered.sha256}  {NAME}\n"

    (outbox / NAME).write_bytes((outbox / NAME).read_bytes().replace(b"ward", b"WARD"))
    with pytest.raises(DestinationRefused, match="no longer matches") as changed:
        destination.delivered(context())
    assert_no_row_values(str(changed.value))


def other_key_fingerprint() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")


def other_key_known_hosts(server, path):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    path.write_text(f"[127.0.0.1]:{server.port} {other}\n")
    return path


@pytest.mark.parametrize("trust, advice", [
    ("pinned other key", "not the pinned host_key_sha256"),
    ("known_hosts with another key", "not the one known_hosts holds"),
    ("empty known_hosts", "host_key_sha256: SHA256:"),
    ("no option, nothing in ~/.ssh", "~/.ssh/known_hosts"),
])
def test_an_unknown_or_changed_host_key_is_refused(sftp_server, outbox, tmp_path, monkeypatch, trust, advice):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "empty").write_text("")
    changes = {
        "pinned other key": {"host_key_sha256": other_key_fingerprint()},
        "known_hosts with another key": {"host_key_sha256": None,
                                         "known_hosts": other_key_known_hosts(sftp_server, tmp_path / "kh")},
        "empty known_hosts": {"host_key_sha256": None, "known_hosts": tmp_path / "empty"},
        "no option, nothing in ~/.ssh": {"host_key_sha256": None},
    }[trust]

    with pytest.raises(DestinationRefused, match="host key") as refused:
        sftp.open(options(sftp_server, **changes)).deliver(context(), batches(rows(5), [5]))

    message = str(refused.value)
    assert f"127.0.0.1:{sftp_server.port}" in message and advice in message
    assert list(outbox.iterdir()) == []
    assert_no_row_values(message)


def test_a_refused_login_is_refused(sftp_server, outbox):
    destination = sftp.open(options(
        sftp_server, credentials=Credentials(env={"login": "SFTP_LOGIN", "password": "SFTP_WRONG_PASSWORD"})))

    with pytest.raises(DestinationRefused, match="refused the login") as refused:
        destination.deliver(context(), batches(rows(5), [5]))
    assert "not-the-password" not in str(refused.value)


def test_a_folder_it_may_not_write_or_that_is_missing_is_refused(sftp_server, outbox, caplog):
    caplog.set_level(logging.DEBUG)
    sftp_server.read_only = True
    with pytest.raises(DestinationRefused, match="permission denied") as denied:
        sftp.open(options(sftp_server)).deliver(context(), batches(rows(5), [5]))
    sftp_server.read_only = False
    with pytest.raises(DestinationRefused, match="no such folder") as missing:
        sftp.open(options(sftp_server, folder="nowhere")).deliver(context(), batches(rows(5), [5]))

    assert "outbox" in str(denied.value) and "nowhere" in str(missing.value)
    assert list(outbox.iterdir()) == []
    assert_no_row_values(str(denied.value), str(missing.value), caplog.text)


def test_a_server_that_is_down_or_hangs_is_unavailable(sftp_server, silent_port, caplog):
    caplog.set_level(logging.DEBUG)
    down = sftp.open(options(sftp_server, port=free_port()))
    hung = sftp.open(options(sftp_server, port=silent_port, timeout_seconds=0.5))

    with pytest.raises(DestinationUnavailable, match="connection refused") as refused:
        down.deliver(context(), batches(rows(5), [5]))
    with pytest.raises(DestinationUnavailable, match="retried") as timed_out:
        hung.delivered(context())

    assert f"127.0.0.1:{silent_port}" in str(timed_out.value)
    assert_no_row_values(str(refused.value), str(timed_out.value), caplog.text)


def test_a_dry_run_counts_and_writes_nothing(sftp_server, outbox):
    delivered = sftp.open(options(sftp_server)).deliver(context(dry_run=True), batches(rows(12), [5, 7]))

    assert delivered.rows == 12 and delivered.detail == {"dry_run": True}
    assert list(outbox.iterdir()) == []


def test_options_are_checked(sftp_server, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        options(sftp_server, known_hosts=tmp_path / "kh")
    with pytest.raises(ValueError, match="SHA-256 fingerprint"):
        options(sftp_server, host_key_sha256="MD5:aa:bb")
    with pytest.raises(ValueError, match="Extra inputs"):
        options(sftp_server, password="inline")


def test_a_run_key_that_cannot_be_a_file_name_is_refused(sftp_server, outbox):
    with pytest.raises(ConnectorError, match="cannot make a file name") as bad:
        sftp.open(options(sftp_server)).deliver(context(run_key="beds_weekly-../../etc"), [])
    assert list(outbox.iterdir()) == [] and SECRET not in str(bad.value)


def test_a_known_hosts_file_that_is_not_there_is_named(sftp_server, outbox, tmp_path):
    destination = sftp.open(options(sftp_server, host_key_sha256=None, known_hosts=tmp_path / "absent"))

    with pytest.raises(ConnectorError, match="known_hosts file .*absent does not exist"):
        destination.deliver(context(), batches(rows(5), [5]))
    assert list(outbox.iterdir()) == []


def test_a_server_that_goes_down_mid_write_is_unavailable_and_shows_no_file(sftp_server, outbox, caplog):
    caplog.set_level(logging.DEBUG)
    values = rows(3000)

    def server_dies_after_the_first_batch():
        yield from batches(values[:1000], [1000])
        sftp_server.stop()
        yield from batches(values[1000:], [1000, 1000])

    with pytest.raises(DestinationUnavailable, match="retried") as down:
        sftp.open(options(sftp_server)).deliver(context(), server_dies_after_the_first_batch())

    assert f"writing sftp server 127.0.0.1:{sftp_server.port} outbox/.{NAME}.part" in str(down.value)
    assert not (outbox / NAME).exists()
    assert [p.name for p in outbox.iterdir()] in ([], [f".{NAME}.part"])  # a dead .part at most: overwritten next time
    assert_no_row_values(str(down.value), caplog.text)
