"""The KH03 reader against NHS England's own workbooks, generated drift cases and broken files.

Expected numbers come from the fixture spec or from the real file read independently with openpyxl,
never from the reader's output.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from python_calamine import CalamineError

from elt.readers.kh03 import SECTORS, Kh03Rejected, Kh03Workbook, period_from_file_name, read_kh03
from tests.conftest import shared_data
from tests.elt.kh03_fixtures import (
    DEFAULT_TRUSTS,
    FIVE_CHARACTER_TRUST,
    REGION_NAMES,
    SPECIALTIES,
    Kh03Spec,
    Trust,
    build_kh03,
    dec,
    kept_trusts,
    openpyxl_row,
)

# ------------------------------------------------------------------------------------------- real files

Q1_FILE = "2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
Q2_FILE = "Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
Q3_2025_FILE = "Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx"


@pytest.fixture(scope="module")
def kh03_dir() -> Path:
    return shared_data("kh03")


def _real(kh03_dir: Path, name: str) -> Path:
    path = kh03_dir / name
    if not path.is_file():
        pytest.skip(f"../shared/data/kh03 not found: {path} is missing")
    return path


def _expected_pct(value: object) -> Decimal | None:
    return None if value == "-" else Decimal(repr(float(value)))


@pytest.mark.parametrize(
    ("name", "quarter", "start", "end", "published"),
    [
        (Q1_FILE, 1, date(2020, 4, 1), date(2020, 6, 30), date(2020, 8, 20)),
        (Q2_FILE, 2, date(2020, 7, 1), date(2020, 9, 30), date(2020, 11, 19)),
    ],
)
def test_real_2020_21_workbooks(kh03_dir: Path, name: str, quarter: int, start: date, end: date, published: date):
    path = _real(kh03_dir, name)
    workbook = read_kh03(path.read_bytes(), name)

    assert (workbook.financial_year, workbook.quarter) == ("2020-21", quarter)
    assert (workbook.period_start, workbook.period_end, workbook.published) == (start, end, published)

    england = openpyxl_row(path, "NHS Trust by Sector", "England")
    row = workbook.england("General & Acute")
    assert row.available == Decimal(repr(england[("Available", "General & Acute")]))
    assert row.occupied == Decimal(repr(england[("Occupied", "General & Acute")]))
    assert row.pct_occupied == _expected_pct(england[("% Occupied", "General & Acute")])

    barts = openpyxl_row(path, "NHS Trust by Sector", "R1H")
    by_sector = {trust.sector: trust for trust in workbook.trust_rows if trust.org_code == "R1H"}
    assert set(by_sector) == set(SECTORS)
    for sector, header in [("Total", "Total"), ("General & Acute", "General & Acute"),
                           ("Learning Disabilities", "Learning Disabilities")]:
        assert by_sector[sector].available == Decimal(repr(float(barts[("Available", header)])))
        assert by_sector[sector].occupied == Decimal(repr(float(barts[("Occupied", header)])))
        assert by_sector[sector].pct_occupied == _expected_pct(barts[("% Occupied", header)])
    assert by_sector["Learning Disabilities"].pct_occupied is None  # Barts has no LD beds: "-" in the file
    assert by_sector["Total"].org_name == "BARTS HEALTH NHS TRUST" and by_sector["Total"].region_code == "Y56"

    trusts_in_file = sum(
        1 for r in openpyxl.load_workbook(path, read_only=True)["NHS Trust by Sector"].iter_rows(min_row=18, values_only=True)
        if r[4]
    )
    assert len({trust.org_code for trust in workbook.trust_rows}) == trusts_in_file
    assert len(workbook.region_rows) == 7 * len(SECTORS)
    assert {row.specialty_code for row in workbook.specialty_rows} >= {"100", "101", "110"}


def test_real_2025_26_region_only_workbook(kh03_dir: Path):
    path = _real(kh03_dir, Q3_2025_FILE)
    workbook = read_kh03(path.read_bytes(), Q3_2025_FILE)

    assert (workbook.financial_year, workbook.quarter) == ("2025-26", 3)
    assert (workbook.period_start, workbook.period_end) == (date(2025, 10, 1), date(2025, 12, 31))
    assert workbook.trust_rows == () and workbook.specialty_rows == ()
    assert {row.sector for row in workbook.region_rows} == set(SECTORS)  # "Learning Disability" normalised
    london = {row.sector: row for row in workbook.region_rows if row.region_code == "Y56"}
    assert london["Total"].region_name == "LONDON"
    cells = openpyxl_row(path, "Region by Sector", "LONDON")
    assert london["Learning Disabilities"].available == Decimal(repr(cells[("Available", "Learning Disability")]))
    assert london["Learning Disabilities"].occupied == Decimal(repr(cells[("Occupied", "Learning Disability")]))
    england = openpyxl_row(path, "Region by Sector", "England")
    assert workbook.england("General & Acute").available == Decimal(repr(england[("Available", "General & Acute")]))


# ------------------------------------------------------------------------------------ generated drift


def _assert_matches_spec(workbook: Kh03Workbook, spec: Kh03Spec) -> None:
    """Every number the reader returns, against the spec's inputs."""
    kept = kept_trusts(spec)
    names = ["Total", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness"]

    def expected(available: list[float], occupied: list[float]) -> dict[str, tuple]:
        out = {}
        for index, sector in enumerate(names):
            a = sum(available) if index == 0 else available[index - 1]
            o = sum(occupied) if index == 0 else occupied[index - 1]
            out[sector] = (dec(a), dec(o), None if a == 0 else dec(o / a))
        return out

    if "NHS Trust by Sector" in spec.sheets:
        got = {(row.org_code, row.sector): (row.available, row.occupied, row.pct_occupied) for row in workbook.trust_rows}
        want = {
            (trust.code, sector): values
            for trust in kept
            for sector, values in expected(list(trust.available), list(trust.occupied)).items()
        }
        assert got == want
        assert [row.org_code for row in workbook.trust_rows[:: len(SECTORS)]] == [trust.code for trust in kept]
    else:
        assert workbook.trust_rows == ()
    if "Region by Sector" in spec.sheets:
        got = {(row.region_code, row.region_name, row.sector): (row.available, row.occupied, row.pct_occupied)
               for row in workbook.region_rows}
        want = {}
        for region in sorted({trust.region for trust in kept}):
            members = [trust for trust in kept if trust.region == region]
            available = [sum(trust.available[i] for trust in members) for i in range(4)]
            occupied = [sum(trust.occupied[i] for trust in members) for i in range(4)]
            for sector, values in expected(available, occupied).items():
                want[(region, REGION_NAMES[region], sector)] = values
        assert got == want
    else:
        assert workbook.region_rows == ()
    if "Occupied by Specialty" in spec.sheets:
        got = {(row.org_code, row.specialty_code, row.specialty_name): row.occupied for row in workbook.specialty_rows}
        want = {(trust.code, code, name): dec(trust.specialty(index))
                for trust in kept for index, (code, name) in enumerate(SPECIALTIES)}
        assert got == want
    if {"NHS Trust by Sector", "Region by Sector"} & set(spec.sheets):
        available = [sum(trust.available[i] for trust in kept) for i in range(4)]
        occupied = [sum(trust.occupied[i] for trust in kept) for i in range(4)]
        want_england = expected(available, occupied)
        got_england = {row.sector: (row.available, row.occupied, row.pct_occupied) for row in workbook.england_row}
        assert got_england == want_england


RESUBMITTED_BARTS = Trust("R1H", "BARTS HEALTH NHS TRUST", "Y56", (1500.25, 0.0, 180.0, 0.0), (1400.5, 0.0, 120.0, 0.0))
LATE_TRUST = Trust("RL1", "THE ROBERT JONES AND AGNES HUNT ORTHOPAEDIC HOSPITAL NHS FOUNDATION TRUST", "Y63",
                   (131.02173913043478, 0.0, 0.0, 0.0), (120.5, 0.0, 0.0, 0.0))

DRIFT_CASES = {
    "as published in 2020": Kh03Spec(),
    "data quality first, sheets reordered": Kh03Spec(
        sheets=("Data Quality", "Occupied by Specialty", "Region by Sector", "NHS Trust by Sector")
    ),
    "Total without trailing space": Kh03Spec(total_header="Total"),
    "Learning Disability singular": Kh03Spec(ld_header="Learning Disability"),
    "five-character org code": Kh03Spec(trusts=(FIVE_CHARACTER_TRUST, *DEFAULT_TRUSTS)),
    "re-submitted rows appended": Kh03Spec(appended=(LATE_TRUST, RESUBMITTED_BARTS)),
    "only the region sheet": Kh03Spec(sheets=("Data Quality", "Region by Sector")),
    "only the trust sheet": Kh03Spec(sheets=("NHS Trust by Sector",)),
    "only the specialty sheet": Kh03Spec(sheets=("Occupied by Specialty",)),
    "older era: column A, SHA codes": Kh03Spec(first_column=1, region_code_header="SHA Code",
                                              region_name_header="SHA Name"),
    "period only in the title block": Kh03Spec(year=None, period_end=None),
    "period only in the Year / Period End columns": Kh03Spec(period_text=None),
    "unparseable published date kept as text": Kh03Spec(published="November 2020 (provisional)"),
}


@pytest.mark.parametrize("spec", DRIFT_CASES.values(), ids=DRIFT_CASES.keys())
def test_generated_drift(spec: Kh03Spec):
    workbook = read_kh03(build_kh03(spec), "Beds-Open-Overnight-Web_File-Final.xlsx")

    assert (workbook.financial_year, workbook.quarter) == ("2020-21", 2)
    assert (workbook.period_start, workbook.period_end) == (date(2020, 7, 1), date(2020, 9, 30))
    _assert_matches_spec(workbook, spec)


def test_published_date_parsed_or_kept_as_text():
    assert read_kh03(build_kh03(), "x.xlsx").published == date(2020, 11, 19)
    odd = read_kh03(build_kh03(Kh03Spec(published="November 2020 (provisional)")), "x.xlsx")
    assert odd.published == "November 2020 (provisional)"


def test_zero_beds_read_as_none_percentage_and_zero_counts():
    workbook = read_kh03(build_kh03(), "x.xlsx")
    bradford = {row.sector: row for row in workbook.trust_rows if row.org_code == "TAD"}
    assert bradford["General & Acute"].available == Decimal("0.0")
    assert bradford["General & Acute"].pct_occupied is None
    assert bradford["Mental Illness"].pct_occupied == dec(147.6043956043956 / 200.0)


def test_resubmitted_row_replaces_the_earlier_one():
    spec = Kh03Spec(appended=(LATE_TRUST, RESUBMITTED_BARTS))
    workbook = read_kh03(build_kh03(spec), "x.xlsx")
    barts = {row.sector: row for row in workbook.trust_rows if row.org_code == "R1H"}
    assert barts["General & Acute"].available == Decimal("1500.25")
    assert barts["General & Acute"].sheet_row == 18 + len(DEFAULT_TRUSTS) + 1  # the appended row
    assert "NHS Trust by Sector: R1H" in workbook.replaced_codes
    assert {row.org_code for row in workbook.trust_rows} == {"R1H", "RAL", "TAD", "RL1"}


@pytest.mark.parametrize(
    ("spec", "file_name", "fy", "quarter", "start", "end"),
    [
        (Kh03Spec(period_text="January to March 2021", period_end="March"), "Beds-Q4-2020-21.xlsx",
         "2020-21", 4, date(2021, 1, 1), date(2021, 3, 31)),
        (Kh03Spec(period_text="April to June 2020", period_end="June"), "2021-Q1-Beds-Open-Overnight.xlsx",
         "2020-21", 1, date(2020, 4, 1), date(2020, 6, 30)),
        (Kh03Spec(period_text="October to December 2024", year="2024-25", period_end="December"),
         "Beds-Open-Overnight-Web_File-Q3-2024-25-revised.xlsx", "2024-25", 3, date(2024, 10, 1), date(2024, 12, 31)),
        (Kh03Spec(), "Beds-2020-21-Q2.xlsx", "2020-21", 2, date(2020, 7, 1), date(2020, 9, 30)),
    ],
)
def test_period_from_workbook_agrees_with_file_name(spec, file_name, fy, quarter, start, end):
    workbook = read_kh03(build_kh03(spec), file_name)
    assert (workbook.financial_year, workbook.quarter, workbook.period_start, workbook.period_end) == (
        fy, quarter, start, end
    )


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx", None),
        ("2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx", ("2020-21", 1)),
        ("Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx", ("2025-26", 3)),
        ("s3://drops/kh03/Beds-Open-Overnight-Web_File-Q4-2024-25.xlsx", ("2024-25", 4)),
        ("KH03 2019-20 Q2.xls", ("2019-20", 2)),
    ],
)
def test_file_name_periods(file_name, expected):
    period = period_from_file_name(file_name)
    assert (None if period is None else (period.financial_year, period.quarter)) == expected


@pytest.mark.parametrize("file_name", ["2020-Q1-Beds.xlsx", "Beds-Q3-2025.xlsx", "Beds-Q2-2020-22.xlsx"])
def test_unclear_file_name_periods_are_not_guessed(file_name):
    with pytest.raises(Kh03Rejected) as caught:
        period_from_file_name(file_name)
    assert caught.value.reason_code == "unclear_file_name_period"


# ----------------------------------------------------------------------------------------- broken files

ROYAL_FREE_ROW = 19  # England on 16, a blank row, then R1H on 18 and RAL on 19


def _england_off_by_100() -> Kh03Spec:
    maternity = sum(trust.available[2] for trust in DEFAULT_TRUSTS)
    total = sum(sum(trust.available) for trust in DEFAULT_TRUSTS)
    return Kh03Spec(
        sheets=("NHS Trust by Sector",),
        england_overrides={("available", "Maternity"): maternity + 100, ("available", "Total"): total + 100},
    )


BROKEN_CASES = {
    "no readable period": (Kh03Spec(period_text=None, year=None, period_end=None), "x.xlsx", "missing_period", None),
    "period text not a quarter": (Kh03Spec(period_text="Summer 2020"), "x.xlsx", "unreadable_period", "Period:"),
    "period end not a quarter end": (Kh03Spec(period_text=None, period_end="August"), "x.xlsx",
                                     "unreadable_period", "row 16"),
    "title and columns disagree": (Kh03Spec(period_text="April to June 2020"), "x.xlsx", "period_mismatch", "Q1"),
    "period contradicts the file name (Qn-YYYY-YY)": (Kh03Spec(), "Beds-Q3-2020-21.xlsx",
                                                      "file_name_period_mismatch", "Q3 2020-21"),
    "period contradicts the file name (YYYY-Qn)": (Kh03Spec(), "2122-Q2-Beds.xlsx",
                                                   "file_name_period_mismatch", "Q2 2021-22"),
    "ambiguous file name": (Kh03Spec(), "2020-Q2-Beds.xlsx", "unclear_file_name_period", "2020-Q2"),
    "Total not the sum of its sectors": (
        Kh03Spec(total_overrides={("RAL", "available"): 999.0}), "x.xlsx", "total_mismatch",
        f"sheet 'NHS Trust by Sector', row {ROYAL_FREE_ROW}, column G",
    ),
    "England not the sum of the trusts": (_england_off_by_100(), "x.xlsx", "england_mismatch",
                                          "sheet 'NHS Trust by Sector', row 16"),
    "% Occupied disagrees": (
        Kh03Spec(pct_overrides={("R1H", "General & Acute"): 0.5}), "x.xlsx", "pct_occupied_mismatch",
        "sheet 'NHS Trust by Sector', row 18, column T",
    ),
    "'-' where beds are available": (Kh03Spec(pct_overrides={("RAL", "Maternity"): "-"}), "x.xlsx",
                                     "pct_occupied_mismatch", f"row {ROYAL_FREE_ROW}, column V"),
    "text in a bed count": (Kh03Spec(total_overrides={("RAL", "occupied"): "n/a"}), "x.xlsx", "bad_value",
                            f"row {ROYAL_FREE_ROW}, column M"),
    "no KH03 sheet": (Kh03Spec(sheets=("Data Quality",)), "x.xlsx", "no_kh03_sheet", "Data Quality"),
    "sector header missing": (Kh03Spec(ld_header="Learning Difficulties"), "x.xlsx", "missing_header",
                              "Learning Disabilities"),
}


@pytest.mark.parametrize(("spec", "file_name", "reason", "fragment"), BROKEN_CASES.values(), ids=BROKEN_CASES.keys())
def test_broken_generated_workbooks_are_rejected(spec, file_name, reason, fragment):
    with pytest.raises(Kh03Rejected) as caught:
        read_kh03(build_kh03(spec), file_name)
    assert caught.value.reason_code == reason
    assert file_name in caught.value.message
    if fragment:
        assert fragment in caught.value.message


@pytest.mark.parametrize(
    "data", [b"Year,Period End\n2020-21,September\n", b"", b"PK\x03\x04 truncated zip"], ids=["csv", "empty", "zip"]
)
def test_not_a_workbook_is_rejected(data: bytes):
    with pytest.raises(Kh03Rejected) as caught:
        read_kh03(data, "upload.xlsx")
    assert caught.value.reason_code == "unreadable_workbook"
    assert "upload.xlsx" in caught.value.message


def test_rows_are_frozen():
    workbook = read_kh03(build_kh03(), "x.xlsx")
    with pytest.raises(AttributeError):  # rows are named tuples: neither a field nor a count can be set
        workbook.trust_rows[0].available = Decimal(0)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        workbook.trust_rows[0].available_value = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        workbook.quarter = 4  # type: ignore[misc]


# ------------------------------------------------------------------- 2024-25 cells, rebuilt from the dump

DUMP_FILE = "KH03-overnight-2024-25-cell-dump.json"


def _dump(kh03_dir: Path) -> dict:
    return json.loads(_real(kh03_dir, DUMP_FILE).read_text())["files"]


def _rebuild(file: dict, sheets: tuple[str, ...], rows_override: dict[tuple[str, int], list] | None = None) -> bytes:
    """The dumped cells of `sheets` (in the dumped order) written back to an .xlsx with openpyxl."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for sheet in file["sheets"]:
        if sheet["name"] not in sheets:
            continue
        ws = workbook.create_sheet(sheet["name"])
        for row in sheet["preview"]:
            values = (rows_override or {}).get((sheet["name"], row["row"]), row["values"])
            for column, value in enumerate(values, start=1):
                if value is not None:
                    ws.cell(row=row["row"], column=column, value=value)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


@pytest.mark.parametrize("key", ["Q1", "Q2", "Q3", "Q4"])
def test_2024_25_region_sheets_and_their_file_names(kh03_dir: Path, key: str):
    """The dump's Region by Sector sheets are complete (24 rows): rebuilt with Data Quality first, under
    the published file name (`...-Q3-2024-25-revised.xlsx`), they give quarter n of 2024-25."""
    file = _dump(kh03_dir)[key]
    name = file["url"].rsplit("/", 1)[-1]
    assert file["sheet_names"][0] == "Data Quality"
    workbook = read_kh03(_rebuild(file, ("Data Quality", "Region by Sector")), name)

    assert (workbook.financial_year, workbook.quarter) == ("2024-25", int(key[1]))
    region = next(sheet for sheet in file["sheets"] if sheet["name"] == "Region by Sector")
    london = next(row["values"] for row in region["preview"] if "LONDON" in row["values"])
    got = {row.sector: row for row in workbook.region_rows if row.region_name == "LONDON"}
    assert got["Total"].available == dec(london[5])  # F: Available Total
    assert got["Learning Disabilities"].occupied == dec(london[13])  # N: Occupied Learning Disabilities


def test_2024_25_q3_revised_trust_rows_five_character_code_and_appended_rows(kh03_dir: Path):
    """The dump keeps only 41-44 of ~185 trust rows, so England (row 16) is replaced by the sum of the
    rows kept; every trust cell is as published."""
    file = _dump(kh03_dir)["Q3"]
    sheet = next(sheet for sheet in file["sheets"] if sheet["name"] == "NHS Trust by Sector")
    trusts = [row["values"] for row in sheet["preview"] if row["row"] >= 18]
    england = list(next(row["values"] for row in sheet["preview"] if row["row"] == 16))
    for first in (6, 12):  # G..K available, M..Q occupied (0-based)
        for column in range(first, first + 5):
            england[column] = sum(row[column] for row in trusts)
    for offset in range(5):
        available, occupied = england[6 + offset], england[12 + offset]
        england[18 + offset] = "-" if available == 0 else occupied / available
    name = file["url"].rsplit("/", 1)[-1]
    data = _rebuild(file, ("Data Quality", "NHS Trust by Sector"), {("NHS Trust by Sector", 16): england})
    workbook = read_kh03(data, name)

    assert (workbook.financial_year, workbook.quarter) == ("2024-25", 3)
    assert workbook.revised == date(2025, 11, 20)
    codes = [row.org_code for row in workbook.trust_rows[:: len(SECTORS)]]
    assert codes == [row[4] for row in trusts]
    assert "G6V2S" in codes
    assert codes[-2:] == ["RNA", "RL1"]  # re-submitted after the sorted Y63 rows, kept
    rl1 = next(row for row in workbook.trust_rows if row.org_code == "RL1" and row.sector == "Total")
    assert rl1.available == dec(trusts[-1][6]) and rl1.region_code == "Y60"


# ------------------------------------------------------------------------------------ openpyxl fallback


@pytest.mark.parametrize("name", [Q1_FILE, Q2_FILE, Q3_2025_FILE])
def test_openpyxl_reads_the_real_workbooks_as_calamine_does(kh03_dir: Path, name: str):
    data = _real(kh03_dir, name).read_bytes()
    assert read_kh03(data, name, engine="openpyxl") == read_kh03(data, name)


def test_an_xlsx_calamine_cannot_open_is_read_with_openpyxl(monkeypatch):
    import elt.readers.spreadsheet as spreadsheet

    data = build_kh03(Kh03Spec(appended=(FIVE_CHARACTER_TRUST,)))
    expected = read_kh03(data, "beds.xlsx")

    def refuse(_):
        raise CalamineError("calamine cannot read this one")  # what calamine raises on a file it rejects

    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_filelike", refuse)
    monkeypatch.setattr(spreadsheet.CalamineWorkbook, "from_path", refuse)  # the check's copy of an .xlsx
    assert read_kh03(data, "beds.xlsx") == expected
    not_a_workbook = io.BytesIO()  # a sound zip (so it passes the size checks) that neither engine can read
    with zipfile.ZipFile(not_a_workbook, "w") as archive:
        archive.writestr("notes.txt", "no workbook in here")
    with pytest.raises(Kh03Rejected) as refused:
        read_kh03(not_a_workbook.getvalue(), "beds.xlsx")
    assert refused.value.reason_code == "unreadable_workbook" and "openpyxl" in refused.value.message


def test_the_cycle_collector_is_back_as_it_was_after_a_read_good_or_bad():
    import gc

    assert gc.isenabled()
    read_kh03(build_kh03(), "beds.xlsx")
    assert gc.isenabled()
    with pytest.raises(Kh03Rejected):
        read_kh03(b"not a workbook", "beds.xlsx")
    assert gc.isenabled()
    gc.disable()
    try:
        read_kh03(build_kh03(), "beds.xlsx")
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
