"""The KH03 bed-occupancy marts built from real NHS England workbooks through the real loader.

Q1 and Q2 2020-21 (both with every sheet) and Q3 2025-26 (only the `Region by Sector` sheet survives) are
loaded by `elt.pipeline.ingest_file`, then `dbt build` of the nhs_beds family's dbt paths (as nhs_beds_ingest
runs it) builds the staging views, the core tables and the four analytics marts, with their tests. Every
expected figure is worked out here from the workbook's cells, read with openpyxl (not the project's reader):
never taken from the output under test.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import openpyxl
import psycopg
import pytest

from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import create_database, drop_database, shared_data

PREFIX = "nhs/kh03/"
Q1_FILE = "2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"  # April to June 2020
Q2_FILE = "Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"  # July to September 2020
Q3_2025_FILE = "Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx"  # October to December 2025, regions only
GA = "General & Acute"
SECTOR_HEADERS = {"total": "Total", "general & acute": GA, "learning disabilities": "Learning Disabilities",
                  "learning disability": "Learning Disabilities", "maternity": "Maternity",
                  "mental illness": "Mental Illness"}
GROUPS = {"available": "available", "occupied": "occupied", "% occupied": "pct"}


def dec(value) -> Decimal:
    """A cell's number as the decimal that was published: the stored double's shortest repr."""
    return Decimal(repr(float(value)))


@dataclass
class SheetRow:
    code: str | None  # org code on the trust and specialty sheets, region code on the region sheet
    name: str
    region_code: str | None
    values: dict  # (group, sector) -> Decimal on the sector sheets; specialty code -> Decimal on the specialty sheet


def read_sheet(workbook_file: Path | io.BytesIO, sheet: str) -> tuple[SheetRow, list[SheetRow]]:
    """(England row, the other rows) of one sheet: the header is the row with `Year` in it; on the sector sheets
    the group labels sit on the row above, over the first column of their block."""
    workbook = openpyxl.load_workbook(workbook_file, read_only=True, data_only=True)
    rows = [list(row) for row in workbook[sheet].iter_rows(values_only=True)]
    workbook.close()
    header_index = next(i for i, row in enumerate(rows) if "Year" in row)
    headers = [str(h).strip() if h is not None else "" for h in rows[header_index]]
    name_col = next(i for i, h in enumerate(headers) if h.lower().endswith("name"))
    region_col = headers.index("Region Code")
    code_col = headers.index("Org Code") if "Org Code" in headers else region_col
    columns: dict = {}
    if sheet == "Occupied by Specialty":
        for position, header in enumerate(headers):
            if header[:3].isdigit():
                columns[header.split(" ", 1)[0]] = position
    else:
        group = None
        for position, header in enumerate(headers):
            label = str(rows[header_index - 1][position] or "").strip().lower()
            group = GROUPS.get(label, group)
            if group and header.lower() in SECTOR_HEADERS:
                columns[(group, SECTOR_HEADERS[header.lower()])] = position
    england, others = None, []
    for row in rows[header_index + 1:]:
        if row[name_col] is None:
            continue
        values = {key: (None if isinstance(row[position], str) else dec(row[position]))
                  for key, position in columns.items()}
        parsed = SheetRow(row[code_col], str(row[name_col]).strip(), row[region_col], values)
        if parsed.name == "England":
            england = parsed
        else:
            others.append(parsed)
    return england, others


def rate(row: SheetRow, sector: str) -> Decimal:
    return row.values[("occupied", sector)] / row.values[("available", sector)]


def by_code(rows: list[SheetRow]) -> dict[str, SheetRow]:
    return {row.code: row for row in rows}


def query(settings, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def build_beds(settings, target_path: Path) -> None:
    run_dbt(["build", "--select", *declared_families(settings)["nhs_beds"].dbt_select(), "--target-path",
             str(target_path)], settings=settings)


@pytest.fixture(scope="module")
def kh03_dir() -> Path:
    return shared_data("kh03")


@pytest.fixture(scope="module")
def beds(pg_server_url, s3_endpoint_url, warehouse_template, kh03_dir, tmp_path_factory):
    """One warehouse for this module's checks: the three workbooks loaded and the bed models built once."""
    import boto3

    from elt.config import Settings
    from elt.storage.s3 import ObjectStore

    suffix = uuid.uuid4().hex[:10]
    database = f"hw_beds_{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    bucket = f"landing-beds-{suffix}"
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket)
    store = ObjectStore(settings)
    for name in (Q1_FILE, Q2_FILE, Q3_2025_FILE):
        store.put(PREFIX + name, (kh03_dir / name).read_bytes())
        assert ingest_file(PREFIX + name, settings=settings).status == "loaded", name
    build_beds(settings, tmp_path_factory.mktemp("beds_target"))
    yield settings
    drop_database(pg_server_url, database)


def test_national_row_is_the_published_england_row_beside_the_trust_sums(beds, kh03_dir):
    england, trusts = read_sheet(kh03_dir / Q2_FILE, "NHS Trust by Sector")
    available, occupied = england.values[("available", GA)], england.values[("occupied", GA)]

    row = query(beds, "select beds_available, beds_occupied, occupancy_rate, trust_beds_available, "
                      "trust_beds_occupied, trusts_reporting from analytics.bed_occupancy_national "
                      "where financial_year = '2020-21' and quarter = 2 and sector = %s", (GA,))[0]

    assert row[:2] == (available, occupied)  # decimals as published, never rounded
    assert abs(row[2] - occupied / available) < Decimal("1e-15")
    assert row[3] == sum(t.values[("available", GA)] for t in trusts)
    assert row[4] == sum(t.values[("occupied", GA)] for t in trusts)
    assert row[5] == len(trusts) > 100
    # The published row agrees with the trusts within the loader's rounding tolerance (0.5 bed per trust).
    assert abs(row[3] - available) <= Decimal("0.5") * len(trusts)


def test_a_region_only_quarter_has_the_published_row_and_no_trust_sums(beds, kh03_dir):
    england, regions = read_sheet(kh03_dir / Q3_2025_FILE, "Region by Sector")

    national = query(beds, "select beds_available, beds_occupied, trust_beds_available, trust_beds_occupied, "
                           "trusts_reporting from analytics.bed_occupancy_national "
                           "where financial_year = '2025-26' and quarter = 3 and sector = 'Total'")
    assert national == [(england.values[("available", "Total")], england.values[("occupied", "Total")],
                          None, None, 0)]
    periods = query(beds, "select financial_year, quarter, has_trust_sheet, has_region_sheet, has_specialty_sheet, "
                          "trusts_reporting, regions_reporting from analytics.bed_occupancy_periods "
                          "order by period_start")
    _, q2_trusts = read_sheet(kh03_dir / Q2_FILE, "NHS Trust by Sector")
    _, q2_regions = read_sheet(kh03_dir / Q2_FILE, "Region by Sector")
    assert periods[1:] == [("2020-21", 2, True, True, True, len(q2_trusts), len(q2_regions)),
                           ("2025-26", 3, False, True, False, 0, len(regions))]
    assert [period[:2] for period in periods] == [("2020-21", 1), ("2020-21", 2), ("2025-26", 3)]
    # The quarter shows up at region level in the trends, though no trust reported in it.
    levels = query(beds, "select level, count(*) from analytics.bed_occupancy_trends "
                         "where financial_year = '2025-26' group by 1")
    assert levels == [("region", len(regions) * 5)]


def test_quarter_on_quarter_change_of_a_trust_from_the_two_workbooks(beds, kh03_dir):
    _, q1_trusts = read_sheet(kh03_dir / Q1_FILE, "NHS Trust by Sector")
    _, q2_trusts = read_sheet(kh03_dir / Q2_FILE, "NHS Trust by Sector")
    q1, q2 = by_code(q1_trusts)["R1H"], by_code(q2_trusts)["R1H"]

    rows = query(beds, "select quarter, beds_available, beds_occupied, occupancy_rate, previous_quarter_rate, "
                       "quarter_on_quarter_change, year_on_year_change from analytics.bed_occupancy_trends "
                       "where level = 'trust' and org_code = 'R1H' and sector = %s order by period_start", (GA,))

    assert [row[0] for row in rows] == [1, 2]
    first, second = rows
    assert second[1:3] == (q2.values[("available", GA)], q2.values[("occupied", GA)])
    assert abs(second[3] - rate(q2, GA)) < Decimal("1e-15")
    assert abs(second[4] - rate(q1, GA)) < Decimal("1e-15")
    assert abs(second[5] - (rate(q2, GA) - rate(q1, GA))) < Decimal("1e-15")
    assert second[5] > Decimal("0.2")  # April-June 2020 emptied beds for Covid; July-September refilled them
    # Q4 2019-20 and the year before are not loaded: nulls, not zeros.
    assert first[4:] == (None, None, None) and second[6] is None


def test_trusts_above_85_and_92_pct_general_and_acute_occupancy(beds, kh03_dir):
    _, trusts = read_sheet(kh03_dir / Q2_FILE, "NHS Trust by Sector")
    with_beds = [t for t in trusts if t.values[("available", GA)] > 0]
    above_85 = sum(t.values[("occupied", GA)] > Decimal("0.85") * t.values[("available", GA)] for t in with_beds)
    above_92 = sum(t.values[("occupied", GA)] > Decimal("0.92") * t.values[("available", GA)] for t in with_beds)

    counts = query(beds, "select count(*) filter (where is_above_85_pct), count(*) filter (where is_above_92_pct), "
                         "count(*) filter (where is_above_85_pct is null), count(occupancy_rate) "
                         "from analytics.bed_occupancy_trends "
                         "where level = 'trust' and financial_year = '2020-21' and quarter = 2 and sector = %s", (GA,))

    assert counts == [(above_85, above_92, len(trusts) - len(with_beds), len(with_beds))]
    assert 0 < above_92 < above_85
    # Flags belong to general and acute beds only.
    assert query(beds, "select count(*) from analytics.bed_occupancy_trends where sector <> %s "
                       "and (is_above_85_pct is not null or is_above_92_pct is not null)", (GA,)) == [(0,)]


def test_region_row_is_the_published_region_sheet_under_its_latest_name(beds, kh03_dir):
    _, q1_regions = read_sheet(kh03_dir / Q1_FILE, "Region by Sector")
    _, q2_regions = read_sheet(kh03_dir / Q2_FILE, "Region by Sector")
    _, latest_regions = read_sheet(kh03_dir / Q3_2025_FILE, "Region by Sector")
    q1, q2, latest = by_code(q1_regions)["Y56"], by_code(q2_regions)["Y56"], by_code(latest_regions)["Y56"]
    assert q2.name != latest.name  # 'LONDON COMMISSIONING REGION' then 'LONDON': one region all the same

    row = query(beds, "select org_name, region_code, region_name, beds_available, beds_occupied, occupancy_rate, "
                      "quarter_on_quarter_change from analytics.bed_occupancy_trends where level = 'region' "
                      "and org_code = 'Y56' and financial_year = '2020-21' and quarter = 2 and sector = 'Total'")[0]

    assert row[:3] == (latest.name, "Y56", latest.name)
    assert row[3:5] == (q2.values[("available", "Total")], q2.values[("occupied", "Total")])
    assert abs(row[5] - rate(q2, "Total")) < Decimal("1e-15")
    assert abs(row[6] - (rate(q2, "Total") - rate(q1, "Total"))) < Decimal("1e-15")
    # A trust's region name is the region's latest name too.
    assert query(beds, "select distinct region_name from analytics.bed_occupancy_trends "
                       "where level = 'trust' and region_code = 'Y56'") == [(latest.name,)]


def test_specialty_row_and_its_share_of_the_trust(beds, kh03_dir):
    _, trusts = read_sheet(kh03_dir / Q2_FILE, "Occupied by Specialty")
    barts = by_code(trusts)["R1H"]
    general_surgery = barts.values["100"]

    row = query(beds, "select org_name, region_code, specialty_name, beds_occupied, share_of_trust_occupied "
                      "from analytics.specialty_occupancy where org_code = 'R1H' and financial_year = '2020-21' "
                      "and quarter = 2 and specialty_code = '100'")[0]

    assert row[:4] == (barts.name, "Y56", "General Surgery", general_surgery)
    assert abs(row[4] - general_surgery / sum(barts.values.values())) < Decimal("1e-15")
    assert query(beds, "select count(*) from analytics.specialty_occupancy where financial_year = '2020-21' "
                       "and quarter = 2") == [(len(trusts) * len(barts.values),)]


def test_a_revised_workbook_replaces_its_quarter_in_every_mart(settings, store, kh03_dir, tmp_path):
    """A revised Q2 (one trust's general and acute occupancy re-submitted, 0.5 bed more) supersedes the first
    workbook in the ledger: the marts show the revised figures once, never both workbooks added up."""
    workbook = openpyxl.load_workbook(kh03_dir / Q2_FILE)
    sheet = workbook["NHS Trust by Sector"]
    header = next(row for row in sheet.iter_rows() if any(cell.value == "Year" for cell in row))
    org_column = next(cell.column for cell in header if cell.value == "Org Code")
    occupied_columns = [cell.column for cell in header if str(cell.value).strip() in ("Total", GA)][2:4]
    barts_row = next(row[0].row for row in sheet.iter_rows(min_row=header[0].row + 1)
                     if row[org_column - 1].value == "R1H")
    for column in occupied_columns:  # Total and General & Acute of the Occupied block
        sheet.cell(barts_row, column).value += 0.5
    revised = io.BytesIO()
    workbook.save(revised)
    _, trusts = read_sheet(kh03_dir / Q2_FILE, "NHS Trust by Sector")
    _, revised_trusts = read_sheet(io.BytesIO(revised.getvalue()), "NHS Trust by Sector")
    original, resubmitted = (by_code(rows)["R1H"].values[("occupied", GA)] for rows in (trusts, revised_trusts))
    assert abs(resubmitted - original - Decimal("0.5")) < Decimal("1e-9")  # openpyxl writes 16 digits

    store.put(PREFIX + Q2_FILE, (kh03_dir / Q2_FILE).read_bytes())
    assert ingest_file(PREFIX + Q2_FILE, settings=settings).status == "loaded"
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx", revised.getvalue())
    second = ingest_file(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx", settings=settings)
    assert second.status == "loaded"
    build_beds(settings, tmp_path)

    assert query(settings, "select beds_occupied, file_id from analytics.bed_occupancy_trends "
                           "where level = 'trust' and org_code = 'R1H' and sector = %s", (GA,)) == [
        (resubmitted, second.file_id)]
    national = query(settings, "select trust_beds_occupied, trusts_reporting, file_id "
                               "from analytics.bed_occupancy_national where sector = %s", (GA,))
    assert national == [(sum(t.values[("occupied", GA)] for t in revised_trusts), len(trusts), second.file_id)]
    assert query(settings, "select file_id from analytics.bed_occupancy_periods") == [(second.file_id,)]
