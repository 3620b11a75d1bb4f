"""Hostile workbooks (issue 13, defect 1): files of a few kilobytes that made a workbook engine allocate hundreds
of gigabytes (and abort the process), zip bombs, sheets too long or too wide, damaged containers. Each goes
through the three doors a workbook comes in by, and must get a clear refusal there, with nothing lost and no
process dying:

* `elt validate FILE` (a subprocess: exit code 1 and a message naming the rule, never a traceback or a crash);
* the loader: one discover -> load pass over every hostile file and a good KH03 workbook (`elt ingest`, a
  subprocess): each hostile file quarantined with its rule in the ledger and the `.error.json` sidecar, the good
  workbook loaded after them all;
* `POST /api/v1/drops` (the API in a subprocess): a 4xx naming the rule, nothing stored, nothing registered.

The readers run in child processes because on the code before the fix the engine aborted the process: a
regression must show up as a failing test, not as a dead test run. Every file is built here (no binary
fixtures): `CORPUS` is the list, each entry with the rule it must be refused by. No message anywhere may repeat
a cell's value (each hostile sheet holds a marker that is looked for).
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from psycopg import sql
from python_calamine import CalamineError

from tests.conftest import REPO, shared_data
from tests.elt.kh03_fixtures import as_xls, build_kh03

DROP_TYPE = "nhs_kh03_overnight"
PREFIX = "nhs/kh03/"
MARKER = "Jane Marker 1970-01-01 +447700900123"  # a patient-like value in the hostile sheets' cells
GOOD_NAME = "Beds-Open-Overnight-zz-good.xlsx"  # sorted after every hostile file: it loads after them all
CHILD_MEMORY = 4 * 1024**3  # address space a child may take: an engine asking for more fails there, not here
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


# --- building workbooks ---------------------------------------------------------------------------------------
def sheet_xml(rows: str, dimension: str | None = None) -> bytes:
    declared = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN}">{declared}'
            f"<sheetData>{rows}</sheetData></worksheet>").encode()


def text_cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


PACKAGE = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.openxmlformats.org/'
        'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package'
        '.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/'
        'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument'
        '.spreadsheetml.worksheet+xml"/></Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxml'
        'formats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
    "xl/workbook.xml": (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="{MAIN}" xmlns:r="http://'
        'schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="NHS Trust by Sector" '
        'sheetId="1" r:id="rId1"/></sheets></workbook>'),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxml'
        'formats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
}


def xlsx(sheet: bytes, more_parts: dict[str, bytes] | None = None) -> bytes:
    """A minimal .xlsx (what Excel needs, nothing more) whose one sheet, `NHS Trust by Sector`, is `sheet`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in PACKAGE.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
        for name, data in (more_parts or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def sparse_grid(*, declared: bool) -> bytes:
    """The defect as filed: one cell at A1 and one at XFD1048576, a 17-billion-cell grid between them."""
    rows = (f'<row r="1">{text_cell("A1", MARKER)}</row>'
            f'<row r="1048576">{text_cell("XFD1048576", MARKER)}</row>')
    return xlsx(sheet_xml(rows, "A1:XFD1048576" if declared else None))


def sparse_grid_without_addresses() -> bytes:
    """The far cell written without `r`: placed by counting rows and cells, as Excel's readers do."""
    rows = f'<row r="1">{text_cell("A1", MARKER)}</row><row r="1048576"><c t="inlineStr"><is><t>{MARKER}</t></is></c></row>'
    return xlsx(sheet_xml(rows))


def sheet_behind_junk() -> bytes:
    """Bytes before the sheet's XML: not XML by its first byte, yet the engine reads the cells after it."""
    rows = f'<row r="1">{text_cell("A1", MARKER)}</row><row r="1048576">{text_cell("XFD1048576", MARKER)}</row>'
    return xlsx(b"junk " + sheet_xml(rows))


def two_zip_directories() -> bytes:
    """A workbook whose zip comment holds a second end-of-directory record: zip readers may disagree on
    which parts it has, so what one checks is not what another reads."""
    whole = build_kh03()
    fake = b"PK\x05\x06" + bytes(18)
    return whole[:-2] + struct.pack("<H", len(fake)) + fake


def over_long_sheet(rows: int = 200_001) -> bytes:
    """More rows than WORKBOOK_MAX_ROWS allows by default, one short cell each."""
    body = "".join(f'<row r="{n}"><c r="B{n}"><v>{n}</v></c></row>' for n in range(2, rows + 1))
    return xlsx(sheet_xml(f'<row r="1">{text_cell("A1", MARKER)}</row>{body}'))


def wide_sheet(columns: int = 10_000) -> bytes:
    letters = [_column(n) for n in range(1, columns + 1)]
    row = "".join(f'<c r="{letter}1"><v>{n}</v></c>' for n, letter in enumerate(letters, start=1))
    return xlsx(sheet_xml(f'<row r="1">{row}</row><row r="2">{text_cell("A2", MARKER)}</row>'))


def _column(n: int) -> str:
    letters = ""
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def zip_bomb(*, honest_sizes: bool, gigabytes: int = 1) -> bytes:
    """A small .xlsx whose sheet inflates to `gigabytes` GiB of blanks inside one cell's text. The deflate stream
    is built from one compressed MiB repeated (each block ends with a full flush, so blocks concatenate). With
    `honest_sizes` its zip directory says how big the sheet is; otherwise it claims 2,000 bytes."""
    head = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN}"><sheetData>'
            f'<row r="1"><c r="A1" t="inlineStr"><is><t>{MARKER} ').encode()
    mib = b" " * (1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.compress(b"</t></is></c></row></sheetData></worksheet>") + packer.flush()
    repeats = gigabytes * 1024
    stream = start + block * repeats + end
    size = len(head) + repeats * len(mib) + len(b"</t></is></c></row></sheetData></worksheet>")
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(b"</t></is></c></row></sheetData></worksheet>", crc)
    base = xlsx(sheet_xml(""))
    return _with_part(base, "xl/worksheets/sheet1.xml", stream, size if honest_sizes else 2000, crc)


def _with_part(base: bytes, name: str, deflated: bytes, size: int, crc: int) -> bytes:
    """`base` with part `name` replaced by raw deflate bytes declaring `size` and `crc` (written by hand, as a
    zip writer would, so that the declared size can differ from the real one)."""
    source = zipfile.ZipFile(io.BytesIO(base))
    out, central = io.BytesIO(), io.BytesIO()
    for info in source.infolist():
        if info.filename == name:
            data, method, crc32, length = deflated, zipfile.ZIP_DEFLATED, crc, size
        else:
            raw = source.read(info.filename)
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            data, method, crc32, length = packer.compress(raw) + packer.flush(), zipfile.ZIP_DEFLATED, zlib.crc32(raw), len(raw)
        encoded = info.filename.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc32, len(data), length,
                              len(encoded), 0) + encoded + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc32, len(data),
                                  length, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    directory = central.getvalue()
    count = len(source.infolist())
    return out.getvalue() + directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory),
                                                    out.tell(), 0)


def many_parts(parts: int = 10_001) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, text in PACKAGE.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml", sheet_xml(f'<row r="1">{text_cell("A1", MARKER)}</row>'))
        for n in range(parts - len(PACKAGE) - 1):
            archive.writestr(f"x/{n}", b"")
    return out.getvalue()


def truncated() -> bytes:
    whole = build_kh03()
    return whole[: len(whole) // 2]


def xls_garbage() -> bytes:
    """The OLE2 signature, then noise: what a damaged download of an old .xls looks like."""
    noise = bytes((n * 7919 + 13) % 251 for n in range(8 * 1024))
    return bytes.fromhex("D0CF11E0A1B11AE1") + noise


def xls_declaring(rows: int, columns: int) -> bytes:
    """A real .xls (the KH03 fixture through xlwt) whose first sheet's DIMENSIONS record claims `rows` x `columns`:
    the reader reserved a cell for each of them when it opened the file."""
    data = bytearray(as_xls(build_kh03()))
    at = data.find(struct.pack("<HH", 0x0200, 14))  # DIMENSIONS, BIFF8: first row, last row + 1, first col, last col + 1
    assert at > 0
    struct.pack_into("<IIHH", data, at + 4, 0, rows, 0, columns)
    return bytes(data)


def xls_far_cell() -> bytes:
    """A real .xls whose first text cell (LABELSST) is moved to row 65,535, column 65,535 (IV is Excel 97's last)."""
    data = bytearray(as_xls(build_kh03()))
    at = data.find(struct.pack("<HH", 0x00FD, 10))
    assert at > 0
    struct.pack_into("<HH", data, at + 4, 65535, 65535)
    return bytes(data)


def xlsb_in_disguise() -> bytes:
    return xlsx(sheet_xml(""), {"xl/workbook.bin": b"\x83\x01\x00"})


@dataclass(frozen=True)
class Hostile:
    id: str
    build: Callable[[], bytes]
    rule: str  # the refusal's rule in elt validate, the ledger, the sidecar and the API
    words: str  # what the message must say
    extension: str = "xlsx"
    api: tuple[int, str] | None = None  # (status, code) when the API refuses before reading (else 422 + rule)

    @property
    def file_name(self) -> str:
        return f"Beds-Open-Overnight-{self.id}.{self.extension}"


CORPUS = [
    Hostile("sparse-grid", lambda: sparse_grid(declared=True), "sheet_too_large", "WORKBOOK_MAX_ROWS"),
    Hostile("sparse-grid-undeclared", lambda: sparse_grid(declared=False), "sheet_too_large", "row 1,048,576"),
    Hostile("sparse-grid-without-addresses", sparse_grid_without_addresses, "sheet_too_large", "row 1,048,576"),
    Hostile("zip-bomb", lambda: zip_bomb(honest_sizes=True), "zip_bomb", "WORKBOOK_MAX_COMPRESSION_RATIO"),
    Hostile("zip-bomb-lying-sizes", lambda: zip_bomb(honest_sizes=False), "zip_bomb", "compressed"),
    Hostile("sheet-behind-junk", sheet_behind_junk, "sheet_too_large", "row 1,048,576"),
    Hostile("two-zip-directories", two_zip_directories, "unreadable_workbook", "two zip directories"),
    Hostile("over-long-sheet", over_long_sheet, "sheet_too_large", "row 200,001"),
    Hostile("ten-thousand-columns", wide_sheet, "sheet_too_large", "WORKBOOK_MAX_COLUMNS"),
    Hostile("truncated", truncated, "unreadable_workbook", "download or export it again"),
    Hostile("many-parts", many_parts, "workbook_too_large", "WORKBOOK_MAX_PARTS"),
    Hostile("xlsb-in-disguise", xlsb_in_disguise, "unsupported_workbook", "save it as .xlsx"),
    Hostile("garbage-after-ole-magic", xls_garbage, "unreadable_workbook", "not a readable xls workbook", "xls"),
    Hostile("xls-huge-dimensions", lambda: xls_declaring(0xFFFFFFF0, 0xFFF0), "sheet_too_large", "WORKBOOK_MAX_ROWS",
            "xls"),
    Hostile("xls-far-cell", xls_far_cell, "sheet_too_large", "WORKBOOK_MAX_COLUMNS", "xls"),
    Hostile("empty", lambda: b"", "unreadable_workbook", "not a readable xlsx workbook", api=(400, "empty_file")),
    Hostile("binary-noise", lambda: bytes(range(256)) * 16, "unreadable_workbook", "not a readable xlsx workbook",
            api=(415, "content_mismatch")),
]
IDS = [case.id for case in CORPUS]


@cache
def built(case_id: str) -> bytes:
    return next(case for case in CORPUS if case.id == case_id).build()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for case in CORPUS:
        (folder / case.file_name).write_bytes(built(case.id))
    (folder / GOOD_NAME).write_bytes(build_kh03())
    return folder


def _small_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def child(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run python with `args` in a child process with this checkout first on the path and a bounded address
    space; its exit code tells a crash (negative: killed by a signal, e.g. SIGABRT) from an answer."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=environment,
                          timeout=timeout, preexec_fn=_small_address_space)


def crashed(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def test_the_corpus_is_small_files():
    """Each hostile file is what an attacker can send cheaply: kilobytes to a couple of megabytes."""
    sizes = {case.id: len(built(case.id)) for case in CORPUS}
    assert all(size <= 3 * 1024 * 1024 for size in sizes.values()), sizes
    assert sizes["sparse-grid"] < 5 * 1024 and sizes["sparse-grid-undeclared"] < 5 * 1024
    inflated = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(built("zip-bomb"))).infolist())
    assert inflated > 1024**3 and sizes["zip-bomb"] < inflated / 500  # a real bomb: over 500 times its size


# --- elt validate ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CORPUS, ids=IDS)
def test_elt_validate_refuses_with_the_rule_and_no_crash(case, corpus_dir):
    result = child(["-m", "elt.cli", "validate", str(corpus_dir / case.file_name), "--drop-type", DROP_TYPE])
    assert result.returncode == 1, crashed(result)
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr, crashed(result)
    assert f"[{case.rule}]" in result.stdout and case.words in result.stdout, result.stdout
    assert MARKER not in result.stdout


def test_elt_validate_takes_the_limits_from_the_environment(corpus_dir):
    """WORKBOOK_MAX_ROWS reaches the reader: the good workbook (row 20 is its last) is refused below 20 rows."""
    good = str(corpus_dir / GOOD_NAME)
    result = child(["-m", "elt.cli", "validate", good, "--drop-type", DROP_TYPE])
    assert result.returncode == 0 and ": valid" in result.stdout, crashed(result)
    result = child(["-m", "elt.cli", "validate", good, "--drop-type", DROP_TYPE], env={"WORKBOOK_MAX_ROWS": "10"})
    assert result.returncode == 1 and "[sheet_too_large]" in result.stdout, crashed(result)
    assert "the limit is 10 (WORKBOOK_MAX_ROWS)" in result.stdout


# --- the loader ------------------------------------------------------------------------------------------------
def test_one_load_pass_quarantines_every_hostile_workbook_and_loads_the_good_one(settings, store, db, corpus_dir):
    for case in CORPUS:
        store.put(PREFIX + case.file_name, built(case.id))
    store.put(PREFIX + GOOD_NAME, build_kh03())
    env = {"DATABASE_URL": settings.database_url, "S3_ENDPOINT_URL": settings.s3_endpoint_url,
           "S3_BUCKET": settings.s3_bucket}

    result = child(["-m", "elt.cli", "ingest", "--drop-type", DROP_TYPE, "--format", "json"], env=env)

    assert result.returncode in (0, 1) and result.stdout.strip().startswith("["), crashed(result)
    outcomes = {o["key"]: o for o in json.loads(result.stdout)}
    assert len(outcomes) == len(CORPUS) + 1
    good = outcomes[PREFIX + GOOD_NAME]
    assert good["status"] == "loaded" and good["rows_read"] > 0, good
    ledger = {key: (status, error) for key, status, error in
              db.execute("select key, status, error from ops.file_ledger").fetchall()}
    for case in CORPUS:
        outcome = outcomes[PREFIX + case.file_name]
        assert outcome["status"] == "quarantined", (case.id, outcome)
        assert outcome["error"].startswith(f"{case.rule}: ") and case.words in outcome["error"], (case.id, outcome)
        assert ledger[PREFIX + case.file_name] == ("quarantined", outcome["error"])
        assert outcome["moved_to"].startswith(PREFIX + "quarantine/")
        sidecar = json.loads(store.read(outcome["moved_to"] + ".error.json"))
        assert (sidecar["rule"], sidecar["reason"]) == (case.rule, outcome["error"])
        assert MARKER not in json.dumps(sidecar) and MARKER not in outcome["error"]
    assert [obj.key for obj in store.list(PREFIX) if "/quarantine/" not in obj.key and "/archive/" not in obj.key] == []
    for table in ("raw.nhs_kh03_trust_sector", "raw.nhs_kh03_region_sector", "raw.nhs_kh03_specialty"):
        file_ids = db.execute(sql.SQL("select distinct _file_id from {}").format(sql.SQL(table))).fetchall()
        assert file_ids == [(good["file_id"],)], table


# --- POST /api/v1/drops ----------------------------------------------------------------------------------------
API_CHILD = """
import json, sys
from io import BytesIO
from backend.app import create_app
from backend.config import ApiSettings
from elt.config import Settings

args = json.loads(sys.argv[1])
elt = Settings(database_url=args["db"], s3_endpoint_url=args["s3"], s3_bucket=args["bucket"])
app = create_app(ApiSettings(database_url=args["db"], rate_limit="", airflow_url="http://127.0.0.1:9"),
                 elt_settings=elt)
client = app.test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + args["key"]
for name in args["files"]:
    with open(args["folder"] + "/" + name, "rb") as handle:
        data = handle.read()
    response = client.post("/api/v1/drops", data={"drop_type": args["drop_type"], "file": (BytesIO(data), name)},
                           content_type="multipart/form-data")
    print(json.dumps({"name": name, "status": response.status_code, "body": response.get_json()}), flush=True)
"""


def test_the_api_answers_every_hostile_workbook_with_a_4xx_and_stores_nothing(settings, store, db, corpus_dir):
    from backend.auth import create_key

    key = create_key(settings.database_url, "hostile workbooks", "admin")
    args = {"db": settings.database_url, "s3": settings.s3_endpoint_url, "bucket": settings.s3_bucket, "key": key,
            "drop_type": DROP_TYPE, "folder": str(corpus_dir), "files": [case.file_name for case in CORPUS]}

    result = child(["-c", API_CHILD, json.dumps(args)])

    assert result.returncode == 0, crashed(result)
    answers = {a["name"]: a for a in map(json.loads, result.stdout.splitlines())}
    for case in CORPUS:
        answer = answers[case.file_name]
        error = answer["body"]["error"]
        if case.api:
            assert (answer["status"], error["code"]) == case.api, (case.id, answer)
        else:
            assert (answer["status"], error["code"], error["rule"]) == (422, "contract_violation", case.rule), answer
            assert case.words in error["message"], (case.id, error)
        assert MARKER not in json.dumps(answer)
    assert list(store.list("")) == []
    assert db.execute("select count(*) from ops.file_ledger").fetchone() == (0,)


# --- the checks themselves (in process: they only read bytes) ---------------------------------------------------
@pytest.mark.parametrize("copy", [False, True], ids=["no copy", "copying the parts"])
@pytest.mark.parametrize("case", CORPUS, ids=IDS)
def test_check_workbook_refuses_each_hostile_file_before_any_engine(case, copy):
    """The same refusal whether or not the check copies the parts it inflates for calamine (open_workbook asks
    for the copy), and the copy stops where the check does: never more than WORKBOOK_MAX_INFLATED_BYTES."""
    from elt.readers.csv_header import FileRejected
    from elt.readers.workbook_guard import DEFAULT_LIMITS, check_workbook

    out = io.BytesIO()
    with pytest.raises(FileRejected) as refused:
        check_workbook(built(case.id), case.file_name, copy_to=out if copy else None)
    assert refused.value.rule == case.rule and case.words in refused.value.message
    assert MARKER not in refused.value.message
    assert len(out.getvalue()) <= DEFAULT_LIMITS.max_inflated_bytes


def good_workbooks() -> dict[str, bytes]:
    return {"generated.xlsx": build_kh03(), "generated.xls": as_xls(build_kh03()),
            "a long sheet (199,999 rows).xlsx": over_long_sheet(199_999),
            "a sheet of 1,000 columns.xlsx": wide_sheet(1_000)}


@pytest.mark.parametrize("name", list(good_workbooks()))
def test_ordinary_workbooks_pass_the_default_limits(name):
    from elt.readers.workbook_guard import check_workbook

    check_workbook(good_workbooks()[name], name)


@pytest.mark.parametrize("name", ["Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx",
                                  "2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx",
                                  "Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx"])
def test_real_kh03_workbooks_pass_the_default_limits(name):
    from elt.readers.workbook_guard import check_workbook

    check_workbook(shared_data("kh03", name).read_bytes(), name)


CALAMINE_LAYOUTS = {
    "addresses on every cell": '<row r="2"><c r="B2"><v>1</v></c><c r="D2"><v>2</v></c></row><row r="5"><c r="C5"><v>3</v></c></row>',
    "addresses, rows out of order": '<row r="9"><c r="F9"><v>1</v></c></row><row r="2"><c r="A2"><v>2</v></c></row>',
    "no addresses at all": "<row><c><v>1</v></c><c><v>2</v></c></row><row><c><v>3</v></c></row>",
    "rows numbered, cells counted": '<row r="3"><c><v>1</v></c><c><v>2</v></c><c><v>3</v></c></row><row r="7"><c><v>4</v></c></row>',
    "a cell after an addressed one": '<row r="2"><c r="E2"><v>1</v></c><c><v>2</v></c></row><row><c><v>3</v></c></row>',
    "r not first, out of order": '<row r="9"><c s="0" r="F9"><v>1</v></c></row><row r="2"><c r="A2"><v>2</v></c></row>',
    "single quotes and spaces": "<row r='4'><c r = 'G4'><v>1</v></c></row>",
    "prefixed tags": '<x:row r="3"><x:c r="C3"><x:v>1</x:v></x:c><x:c><x:v>2</x:v></x:c></x:row>',
}


def layout_xml(layout: str) -> bytes:
    rows = CALAMINE_LAYOUTS[layout]
    return sheet_xml(rows) if layout != "prefixed tags" else sheet_xml(rows).replace(
        b"<worksheet xmlns=", b"<x:worksheet xmlns:x=").replace(b"sheetData>", b"x:sheetData>").replace(
        b"</worksheet>", b"</x:worksheet>")


def calamine_grid(data: bytes) -> list[list[object]]:
    from python_calamine import CalamineWorkbook

    return CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0).to_python(skip_empty_area=False)


@pytest.mark.parametrize("layout", list(CALAMINE_LAYOUTS))
def test_the_scan_places_cells_where_calamine_does(layout):
    """The extent the scan finds is the grid python-calamine builds from the same sheet, however the sheet is
    written: so no sheet can hide a larger grid from the limits."""
    from elt.readers.workbook_guard import sheet_extent

    xml = layout_xml(layout)
    grid = calamine_grid(xlsx(xml))
    cells = len(re.findall(r"<(?:x:)?c[ >]", CALAMINE_LAYOUTS[layout]))
    assert sheet_extent(xml) == (len(grid), max(len(row) for row in grid), cells)


# --- the stored copy of the parts that calamine reads -------------------------------------------------------------
def stored_copy(data: bytes) -> tuple[bool, bytes]:
    """(whether check_workbook made a copy, the bytes it wrote)."""
    from elt.readers.workbook_guard import check_workbook

    out = io.BytesIO()
    return check_workbook(data, "beds.xlsx", copy_to=out), out.getvalue()


def test_the_stored_copy_holds_every_part_as_the_original_inflates_it():
    data = build_kh03()
    made, copy = stored_copy(data)
    original, stored = zipfile.ZipFile(io.BytesIO(data)), zipfile.ZipFile(io.BytesIO(copy))
    assert made
    assert stored.testzip() is None  # every part matches the CRC-32 the original declares for it
    assert [info.filename for info in stored.infolist()] == original.namelist()
    assert {info.compress_type for info in stored.infolist()} == {zipfile.ZIP_STORED}
    assert {name: stored.read(name) for name in stored.namelist()} == {
        name: original.read(name) for name in original.namelist()}


@pytest.mark.parametrize("layout", list(CALAMINE_LAYOUTS))
def test_calamine_reads_the_stored_copy_as_it_reads_the_original(layout):
    """Sheets written unusually are scanned twice (the byte search gives up, the tag scan takes over): the copy
    still holds each part once, and calamine builds the same grid from it."""
    data = xlsx(layout_xml(layout))
    made, copy = stored_copy(data)
    assert made
    assert zipfile.ZipFile(io.BytesIO(copy)).read("xl/worksheets/sheet1.xml") == layout_xml(layout)
    assert calamine_grid(copy) == calamine_grid(data)


def with_part(data: bytes, name: str, payload: bytes) -> bytes:
    """`data`'s zip with one more part (a name zipfile warns about when it repeats one)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info))
        with pytest.warns(UserWarning) if name in source.namelist() else _nothing():
            archive.writestr(name, payload)
    return out.getvalue()


@contextmanager
def _nothing():
    yield


@pytest.mark.parametrize("name", ["xl/media/caf\u00e9.png", "xl/worksheets/sheet1.xml"], ids=["non-ASCII name",
                                                                                            "repeated name"])
def test_no_copy_of_a_zip_whose_parts_a_copy_could_name_differently(name):
    """A name zipfile decodes (cp437 or UTF-8) might not be written back as the same bytes, and of two parts
    with one name zip readers may pick either: calamine reads the original then, as before."""
    assert stored_copy(with_part(build_kh03(), name, b"\x89PNG not really")) == (False, b"")


def test_a_workbook_with_a_part_not_copied_is_read_from_the_original():
    from elt.readers.kh03 import read_kh03

    data = build_kh03()
    assert read_kh03(with_part(data, "xl/media/caf\u00e9.png", b"\x89PNG"), "beds.xlsx") == read_kh03(data, "beds.xlsx")


class FullDisk(io.BytesIO):
    """A temporary file on a disk that fills after `room` bytes."""

    room = 3000

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_copy_that_cannot_be_written_leaves_the_check_and_the_read_as_they_were(monkeypatch):
    import elt.readers.spreadsheet as spreadsheet
    from elt.readers.kh03 import read_kh03
    from elt.readers.workbook_guard import check_workbook

    data = build_kh03()
    expected = read_kh03(data, "beds.xlsx")
    assert check_workbook(data, "beds.xlsx", copy_to=FullDisk()) is False
    opened = []
    monkeypatch.setattr(spreadsheet.tempfile, "TemporaryFile", FullDisk)
    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_path", lambda path: opened.append(path))
    assert read_kh03(data, "beds.xlsx", copy_to_disk=True) == expected  # calamine read the original
    assert opened == []


def test_calamine_reads_an_xlsx_from_the_copy_and_the_original_when_the_copy_fails(monkeypatch):
    """open_workbook hands calamine the check's copy by its /proc path; were calamine to refuse the copy, it
    reads the original, so the copy can only save time, never change what is read or refused."""
    import elt.readers.spreadsheet as spreadsheet
    from elt.readers.kh03 import read_kh03

    data = build_kh03()
    from_path = spreadsheet.CalamineWorkbook.from_path
    seen: list[bytes] = []

    def spy(path: str):
        seen.append(Path(path).read_bytes())
        return from_path(path)

    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_path", spy)
    assert read_kh03(data, "beds.xlsx") is not None and seen == []  # no copy unless asked for
    via_copy = read_kh03(data, "beds.xlsx", copy_to_disk=True)
    assert seen == [stored_copy(data)[1]]

    def refuse(_):
        raise CalamineError("calamine cannot read this one")

    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_path", refuse)
    assert read_kh03(data, "beds.xlsx", copy_to_disk=True) == via_copy
    monkeypatch.setattr(spreadsheet, "_FD_PATHS", Path("/no/such/proc"))  # a system without /proc: no copy
    assert read_kh03(data, "beds.xlsx", copy_to_disk=True) == via_copy


def test_a_self_closing_cell_counts_though_calamine_skips_it():
    """`<c r="H30"/>` holds no value and calamine leaves it out; openpyxl reads it, so the scan counts it."""
    from elt.readers.workbook_guard import sheet_extent

    assert sheet_extent(sheet_xml('<row r="2"><c r="B2"><v>1</v></c><c r="H30"/></row>')) == (30, 8, 2)


def test_the_openpyxl_fallback_counts_rows_and_watches_the_clock(monkeypatch):
    import elt.readers.spreadsheet as spreadsheet
    from elt.readers.kh03 import Kh03Rejected, read_kh03
    from elt.readers.workbook_guard import WorkbookLimits

    def refuse(_):
        raise CalamineError("calamine cannot read this one")

    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_filelike", refuse)
    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_path", refuse)  # the check's copy of an .xlsx
    data = build_kh03()
    assert read_kh03(data, "beds.xlsx").trust_rows  # read by openpyxl within the default limits
    with pytest.raises(Kh03Rejected) as slow:
        read_kh03(data, "beds.xlsx", limits=WorkbookLimits(max_seconds=1e-9))
    assert slow.value.rule == "workbook_too_slow" and "WORKBOOK_MAX_SECONDS" in slow.value.message
    sheet = spreadsheet._OpenpyxlSheet(iter_rows_of([[1, 2]] * 5), "S", WorkbookLimits(max_rows=4), float("inf"))
    with pytest.raises(spreadsheet.FileRejected) as long:
        sheet.to_python()
    assert long.value.rule == "sheet_too_large" and "row 4" in long.value.message


def iter_rows_of(rows: list[list[object]]):
    class Worksheet:
        def iter_rows(self, values_only: bool = True):
            yield from (tuple(row) for row in rows)

    return Worksheet()


def test_a_panic_in_the_engine_is_a_refusal_not_a_crash(monkeypatch):
    """A Rust panic inside python-calamine reaches Python as pyo3's PanicException, a BaseException that
    `except Exception` lets through; the readers turn it into unreadable_workbook like any engine error."""
    import elt.readers.spreadsheet as spreadsheet
    from elt.readers.kh03 import Kh03Rejected, read_kh03

    PanicException = type("PanicException", (BaseException,), {})  # noqa: N806 - pyo3's name for it

    def panic(_):
        raise PanicException("index out of bounds: the len is 3 but the index is 7")

    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_filelike", panic)
    with pytest.raises(Kh03Rejected) as refused:
        read_kh03(as_xls(build_kh03()), "beds.xls")
    assert refused.value.rule == "unreadable_workbook" and "PanicException" in refused.value.message


def test_every_limit_is_a_setting_with_the_same_default_and_in_env_example():
    from elt.config import Settings
    from elt.readers.workbook_guard import DEFAULT_LIMITS, LIMIT_FIELDS, WorkbookLimits

    settings = Settings()
    assert settings.workbook_limits() == DEFAULT_LIMITS
    example = (REPO / ".env.example").read_text()
    for field in LIMIT_FIELDS:
        default = getattr(DEFAULT_LIMITS, field)
        assert getattr(settings, f"workbook_{field}") == default
        written = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"\n{WorkbookLimits.setting(field)}={written}\n" in example, field


def test_the_loader_holds_workbooks_to_its_settings_limits_before_reading_them(settings, store, db):
    """The settings' limits reach the loader: a workbook larger than WORKBOOK_MAX_FILE_BYTES is quarantined
    without being read, one reaching past WORKBOOK_MAX_ROWS with the row; both the good generated workbook."""
    from elt.pipeline import ingest_file

    good = build_kh03()
    store.put(PREFIX + "Beds-Open-Overnight-a.xlsx", good)
    small = settings.model_copy(update={"workbook_max_file_bytes": len(good) - 1})
    outcome = ingest_file(PREFIX + "Beds-Open-Overnight-a.xlsx", settings=small)
    assert outcome.status == "quarantined" and outcome.error.startswith("workbook_too_large: ")
    assert f"is {len(good):,} bytes; the limit is {len(good) - 1:,} (WORKBOOK_MAX_FILE_BYTES)" in outcome.error

    store.put(PREFIX + "Beds-Open-Overnight-b.xlsx", good)
    short = settings.model_copy(update={"workbook_max_rows": 10})
    outcome = ingest_file(PREFIX + "Beds-Open-Overnight-b.xlsx", settings=short)
    assert outcome.status == "quarantined" and outcome.error.startswith("sheet_too_large: ")
    assert "the limit is 10 (WORKBOOK_MAX_ROWS)" in outcome.error

    store.put(PREFIX + "Beds-Open-Overnight-c.xlsx", good)
    assert ingest_file(PREFIX + "Beds-Open-Overnight-c.xlsx", settings=settings).status == "loaded"
