"""Hostile CSV files through all three ways in: `elt validate`, the loader (`ingest_file`) and `POST /api/v1/drops`.

Every file is made here, in CORPUS, with the verdict each entry point must give it:

* `elt validate` exits 1 with the status (`unreadable`: the bytes cannot be read; `off_contract`: read, but a
  whole-file rule is broken) and the rule, and no traceback; or 0 for a file that loads;
* the loader quarantines it under that rule, keeping its bytes whole in quarantine beside a sidecar saying
  why, and leaves nothing in landing; or loads it;
* the API refuses it with a 4xx naming the rule and stores nothing; or stores it (202), and the load then
  decides, as `GET /api/v1/runs/<run_id>` tells.

No process dies: a case that raised (a 500, a traceback, a load that fails every night) fails here. The workbook
(.xlsx/.xls) corpus lives with the workbook readers' tests.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from io import BytesIO

import pytest

from elt.pipeline import ingest_file
from elt.readers.csv_header import MAX_HEADER_BYTES, UTF8_BOM

PREFIX = "medical_records/input/"
NAME = "patients_2026-11-14.csv"
HEADER = "facility_name,first_name,last_name,sex,dob,phone"
ROWS = ["General Hospital,Ada,Obi,F,1990-01-01,+2348012345678", "General Hospital,Bola,Ade,M,1985-06-30,"]


def csv_text(*lines: str, end: str = "\n") -> str:
    return "".join(line + end for line in lines)


def good(end: str = "\n") -> bytes:
    return csv_text(HEADER, *ROWS, end=end).encode()


@dataclass(frozen=True)
class Case:
    make: Callable[[], bytes]
    validate: tuple[str, str | None]  # (status, rule); rule None when the file loads
    load: tuple[str, str | None]  # (ledger status, rule)
    api: tuple[int, str | None]  # (HTTP status, the error's rule or code); 202: stored, then the load decides
    rows: int = 0  # rows a file that loads has


@cache
def header_of_100_mb() -> bytes:
    """A first line of 100 MB without a line end (a file that is one long line), then a row."""
    return b"facility_name," + b"x" * (100 * 1024 * 1024) + b"\n" + ROWS[0].encode() + b"\n"


def ten_thousand_columns() -> bytes:
    extra = [f"extra_{n}" for n in range(7, 10_001)]
    return csv_text(",".join([HEADER, *extra]), ",".join([ROWS[0], *("x" * len(extra))])).encode()


def mixed_encodings() -> bytes:
    return (HEADER + "\n").encode() + "General Hospital,Zoë,Obi,F,1990-01-01,1\n".encode() + \
        "General Hospital,Zoë,Ade,F,1991-01-01,2\n".encode("cp1252")


CORPUS: dict[str, Case] = {
    "empty": Case(lambda: b"", ("off_contract", "empty_file"), ("quarantined", "empty_file"), (400, "empty_file")),
    "a BOM only": Case(lambda: UTF8_BOM, ("off_contract", "empty_file"), ("quarantined", "empty_file"),
                       (422, "empty_file")),
    "line ends only": Case(lambda: b"\r\n\r\n\n", ("off_contract", "empty_file"), ("quarantined", "empty_file"),
                           (422, "empty_file")),
    "a header only": Case(lambda: (HEADER + "\r\n").encode(), ("off_contract", "no_rows"), ("quarantined", "no_rows"),
                          (422, "no_rows")),
    "binary": Case(lambda: random.Random(13).randbytes(64 * 1024), ("unreadable", "undecodable_text"),
                   ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "gzip-compressed CSV": Case(lambda: gzip.compress(good()), ("unreadable", "undecodable_text"),
                                ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "UTF-16 with a BOM": Case(lambda: good().decode().encode("utf-16"), ("unreadable", "undecodable_text"),
                              ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "UTF-16 without a BOM": Case(lambda: good().decode().encode("utf-16-le"), ("unreadable", "undecodable_text"),
                                 ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "NUL bytes in a row": Case(lambda: good().replace(b"Ada", b"A\x00da"), ("unreadable", "undecodable_text"),
                               ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "neither UTF-8 nor Windows-1252": Case(lambda: good().replace(b"Ada", b"A\x81da"), ("unreadable", "undecodable_text"),
                                           ("quarantined", "undecodable_text"), (415, "content_mismatch")),
    "UTF-8 and Windows-1252 mixed": Case(mixed_encodings, ("unreadable", "mixed_encodings"),
                                         ("quarantined", "mixed_encodings"), (422, "mixed_encodings")),
    "control characters in the header": Case(lambda: good().replace(b"sex", b"s\x1bex", 1),
                                             ("unreadable", "undecodable_text"), ("quarantined", "undecodable_text"),
                                             (422, "undecodable_text")),
    "10,000 columns": Case(ten_thousand_columns, ("off_contract", "unexpected_columns"),
                           ("quarantined", "unexpected_columns"), (422, "unexpected_columns")),
    "a header line of 100 MB": Case(header_of_100_mb, ("unreadable", "header_too_long"),
                                    ("quarantined", "header_too_long"), (422, "header_too_long")),
    "a header field over the csv module's limit": Case(
        lambda: good().replace(b"phone", b"phone" + b"e" * 200_000, 1), ("off_contract", "unexpected_columns"),
        ("quarantined", "unexpected_columns"), (422, "unexpected_columns")),
    "a quote left open in the header": Case(lambda: good().replace(b"first_name", b'"first_name', 1),
                                            ("unreadable", "malformed_csv"), ("quarantined", "malformed_csv"),
                                            (422, "malformed_csv")),
    "a lone quote in a row": Case(lambda: good().replace(b"Ada", b'"Ada'), ("unreadable", "malformed_csv"),
                                  ("quarantined", "malformed_csv"), (202, "malformed_csv")),
    "a row with a field too many": Case(lambda: good().replace(b"Obi", b"Obi,extra"), ("unreadable", "malformed_csv"),
                                        ("quarantined", "malformed_csv"), (202, "malformed_csv")),
    "line ends of two kinds (a CR header, LF rows)": Case(
        lambda: (HEADER + "\r" + csv_text(*ROWS)).encode(), ("unreadable", "malformed_csv"),
        ("quarantined", "malformed_csv"), (422, "malformed_csv")),
    "line ends of two kinds (LF, then a CRLF row)": Case(
        lambda: good().replace(b"\n", b"\r\n", 2).replace(b"\r\n", b"\n", 1), ("unreadable", "malformed_csv"),
        ("quarantined", "malformed_csv"), (422, "malformed_csv")),
    "no header row": Case(lambda: csv_text(*ROWS).encode(), ("off_contract", "unexpected_columns"),
                          ("quarantined", "unexpected_columns"), (422, "unexpected_columns")),
    "semicolon-delimited": Case(lambda: good().replace(b",", b";"), ("off_contract", "unexpected_columns"),
                                ("quarantined", "unexpected_columns"), (422, "unexpected_columns")),
    "a header that names a column twice": Case(lambda: good().replace(b"phone", b"first_name", 1),
                                               ("off_contract", "duplicate_columns"), ("quarantined", "duplicate_columns"),
                                               (422, "duplicate_columns")),
    # Files that look hostile but are data: they load, whole.
    "CR-only line ends (old Mac Excel)": Case(lambda: good(end="\r"), ("valid", None), ("loaded", None), (202, None),
                                              rows=2),
    "CRLF with a quoted LF in a cell": Case(lambda: good(end="\r\n").replace(b"General Hospital,Ada", b'"General\nHospital",Ada'),
                                            ("valid", None), ("loaded", None), (202, None), rows=2),
    "a cell of 1 MB": Case(lambda: good().replace(b"+2348012345678", b"9" * (1024 * 1024)), ("valid", None),
                           ("loaded", None), (202, None), rows=2),
}


def test_the_corpus_holds_every_case_the_issue_names():
    # empty, binary, UTF-16, 10,000 columns, a header line of 100 MB, NUL bytes, CR-only, a lone quote,
    # mixed encodings, a header only, a BOM only
    assert len(header_of_100_mb().split(b"\n", 1)[0]) > 100 * 1024 * 1024 > MAX_HEADER_BYTES
    assert ten_thousand_columns().split(b"\n", 1)[0].count(b",") == 9_999
    assert len(CORPUS) >= 20


def test_reading_a_header_pulls_no_more_than_the_limit_and_one_chunk_of_a_line_without_end():
    from elt.readers.csv_header import FileRejected, read_header

    chunk, pulled = 256 * 1024, []

    def stream():  # 100 MB without a line end, as S3 would stream it
        for _ in range(400):
            pulled.append(chunk)
            yield b"x" * chunk

    with pytest.raises(FileRejected) as refused:
        read_header(stream())
    assert refused.value.rule == "header_too_long"
    assert sum(pulled) <= MAX_HEADER_BYTES + chunk  # the rest of the stream is never read
    assert read_header(iter([b"a,b\rc,d\r"]))[1] == b"a,b"  # a lone CR ends the header (old Mac exports)
    assert read_header(iter([b"a,", b"b\r", b"\nc,d\r\n"]))[1] == b"a,b"


@pytest.mark.parametrize("name", list(CORPUS))
def test_elt_validate_gives_a_verdict_not_a_traceback(name, tmp_path, capsys):
    from elt.cli import main

    case = CORPUS[name]
    path = tmp_path / NAME
    path.write_bytes(case.make())
    code = main(["validate", str(path), "--drop-type", "medilink_patients", "--format", "json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    report = json.loads(captured.out)
    status, rule = case.validate
    assert (report["status"], [e["rule"] for e in report["errors"]]) == (status, [rule] if rule else [])
    assert code == (0 if status == "valid" else 1)
    assert report["rows_read"] == case.rows
    assert report["period"]["label"] == "2026-11-14"  # from the file name, whatever the content


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_loader_quarantines_it_whole_with_the_rule_or_loads_it(name, settings, store, db):
    case = CORPUS[name]
    data = case.make()
    store.put(PREFIX + NAME, data)

    outcome = ingest_file(PREFIX + NAME, settings=settings)

    status, rule = case.load
    ledger_status, error = db.execute("select status, error from ops.file_ledger").fetchone()
    assert (outcome.status, ledger_status) == (status, status)
    assert [obj.key for obj in store.list(PREFIX) if "/quarantine/" not in obj.key and "/archive/" not in obj.key] == []
    if rule is None:
        assert db.execute("select count(*) from raw.medilink_patients").fetchone()[0] == case.rows
        assert store.read(outcome.moved_to) == data
        return
    assert error.startswith(f"{rule}: ")
    assert "/quarantine/" in outcome.moved_to and store.read(outcome.moved_to) == data  # nothing lost
    sidecar = json.loads(store.read(outcome.moved_to + ".error.json"))
    assert (sidecar["rule"], sidecar["reason"]) == (rule, error)
    assert db.execute("select count(*) from raw.medilink_patients").fetchone()[0] == 0


@pytest.fixture
def api(settings):
    """A client of the API on this test's warehouse and bucket, with an admin key and a stand-in Airflow. The
    upload limit is raised above the 100 MB case, so that every file reaches the contract's checks."""
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings
    from tests.backend.fake_airflow import FakeAirflow

    airflow = FakeAirflow().start()
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="", airflow_url=airflow.url,
                                 upload_max_bytes=128 * 1024 * 1024), elt_settings=settings)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "hostile csv", "admin")
    yield client
    airflow.stop()


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_api_refuses_it_with_the_rule_or_stores_it_for_the_load(name, api, settings, store, db):
    case = CORPUS[name]
    data = case.make()
    response = api.post("/api/v1/drops", data={"drop_type": "medilink_patients", "file": (BytesIO(data), NAME)},
                        content_type="multipart/form-data")
    status, rule = case.api
    body = response.get_json()
    assert response.status_code == status, body
    if status != 202:
        assert body["error"].get("rule", body["error"]["code"]) == rule
        assert list(store.list("")) == [] and db.execute("select count(*) from ops.file_ledger").fetchone()[0] == 0
        return
    assert store.read(body["key"]) == data
    ingest_file(body["key"], settings=settings)  # what the run the drop started does
    drop = api.get(body["status_url"]).get_json()["drop"]
    assert drop["status"] == case.load[0]
    assert (drop["error"] or "").split(":")[0] == (rule or "")
