"""KH03-shaped workbooks built with openpyxl, so the KH03 reader's tests never depend on the shared folder.

`build_kh03(Kh03Spec(...))` returns .xlsx bytes laid out like NHS England's "Beds Open Overnight" files
(title block, `Provider Level Data`, a group-label row over a header row, England row, blank row, one row
per trust, blank spacer columns between the Available / Occupied / % Occupied blocks). Every drift the
real files show is a parameter: sheet order and presence, `Total ` with a trailing space, `Learning
Disability` singular, `-` in % Occupied where no beds, five-character org codes, re-submitted rows
appended after the sorted rows, the title block and table starting in column A, a missing period, and
deliberately inconsistent numbers. Tests compute their expectations from the spec, never from the reader.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from openpyxl import Workbook

SECTOR_KEYS = ("General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
REGION_NAMES = {"Y56": "LONDON", "Y63": "NORTH EAST AND YORKSHIRE"}
SPECIALTIES = (("100", "General Surgery"), ("101", "Urology"), ("710", "Adult Mental Illness"))


@dataclass(frozen=True)
class Trust:
    code: str
    name: str
    region: str
    available: tuple[float, float, float, float]  # G&A, LD, Maternity, MI
    occupied: tuple[float, float, float, float]

    def total(self, group: str) -> float:
        return sum(self.available if group == "available" else self.occupied)

    def specialty(self, index: int) -> float:
        """Occupied beds per specialty: G&A split 60/40 between the two surgical ones; MI to 710."""
        return (self.occupied[0] * 0.6, self.occupied[0] * 0.4, self.occupied[3])[index]


DEFAULT_TRUSTS = (
    Trust("R1H", "BARTS HEALTH NHS TRUST", "Y56", (1474.9021739130435, 0.0, 180.0652173913, 0.0),
          (1311.3478260869565, 0.0, 113.9130434782609, 0.0)),
    Trust("RAL", "ROYAL FREE LONDON NHS FOUNDATION TRUST", "Y56", (887.5, 0.0, 83.0, 0.0549450549),
          (556.25, 0.0, 31.5, 0.0549450549)),
    Trust("TAD", "BRADFORD DISTRICT CARE NHS FOUNDATION TRUST", "Y63", (0.0, 6.0, 0.0, 200.0),
          (0.0, 4.274725274725275, 0.0, 147.6043956043956)),
)
FIVE_CHARACTER_TRUST = Trust("G6V2S", "NORTH LONDON NHS FOUNDATION TRUST", "Y56", (0.0, 27.0, 0.0, 671.37),
                             (0.0, 20.5, 0.0, 640.25))


@dataclass(frozen=True)
class Kh03Spec:
    sheets: tuple[str, ...] = ("NHS Trust by Sector", "Region by Sector", "Occupied by Specialty", "Data Quality")
    trusts: tuple[Trust, ...] = DEFAULT_TRUSTS
    appended: tuple[Trust, ...] = ()  # re-submitted rows after the sorted ones (a repeated code replaces)
    period_text: str | None = "July to September 2020"  # None: no `Period:` line in the title block
    year: str | None = "2020-21"  # None: blank Year / Period End cells
    period_end: str | None = "September"
    published: str = "19th November 2020"
    total_header: str = "Total "
    ld_header: str = "Learning Disabilities"
    first_column: int = 2  # 2: title labels in B as today; 1: older eras, everything starts in column A
    region_code_header: str = "Region Code"
    region_name_header: str = "AT Name"
    # deliberate damage, keyed by sheet row content
    total_overrides: dict[tuple[str, str], float] = field(default_factory=dict)  # (code, group) -> Total
    pct_overrides: dict[tuple[str, str], object] = field(default_factory=dict)  # (code, sector) -> cell
    england_overrides: dict[tuple[str, str], float] = field(default_factory=dict)  # (group, sector) -> value


def kept_trusts(spec: Kh03Spec) -> list[Trust]:
    """The trusts a reader should return, in first-appearance order, a later row replacing an earlier one."""
    kept: dict[str, Trust] = {}
    for trust in (*spec.trusts, *spec.appended):
        kept[trust.code] = trust
    return list(kept.values())


def _pct(occupied: object, available: object) -> object:
    if not isinstance(occupied, float | int) or not isinstance(available, float | int) or available == 0:
        return "-"  # no beds (or a deliberately damaged count): KH03 prints "-"
    return occupied / available


def _title(ws, spec: Kh03Spec, title: str) -> None:
    col = spec.first_column
    lines = [
        ("Title:", title),
        ("Summary:", "KH03 is the collection of data to monitor available and occupied beds open overnight."),
        None,
        ("Period:", spec.period_text) if spec.period_text is not None else None,
        ("Source:", "NHS England: SDCS data collection - KH03"),
        ("Basis:", "Provider"),
        ("Published:", spec.published),
        ("Revised:", None),
        ("Status:", "Public"),
        ("Contact:", "england.bedsanddischarges@nhs.net"),
    ]
    for offset, line in enumerate(lines):
        if line:
            ws.cell(row=2 + offset, column=col, value=line[0])
            ws.cell(row=2 + offset, column=col + 1, value=line[1])


def _sector_sheet(ws, spec: Kh03Spec, *, region_level: bool) -> None:
    col = spec.first_column
    _title(ws, spec, "Average daily number of available and occupied beds open overnight by sector")
    ws.cell(row=13, column=col, value="Area Team Level Data" if region_level else "Provider Level Data")
    labels = (["Year", "Period End", spec.region_code_header, spec.region_name_header] if region_level
              else ["Year", "Period End", spec.region_code_header, "Org Code", "Org Name"])
    sectors = [spec.total_header, "General & Acute", spec.ld_header, "Maternity", "Mental Illness"]
    for offset, label in enumerate(labels):
        ws.cell(row=15, column=col + offset, value=label)
    block_start = col + len(labels)
    for block, group in enumerate(("Available", "Occupied", "% Occupied")):
        first = block_start + block * 6  # five sectors then one blank spacer column
        ws.cell(row=14, column=first, value=group)
        for offset, sector in enumerate(sectors):
            ws.cell(row=15, column=first + offset, value=sector)

    def write(row: int, keys: list[object], available: list[float], occupied: list[float], code: str) -> None:
        for offset, key in enumerate([spec.year, spec.period_end, *keys]):
            ws.cell(row=row, column=col + offset, value=key)
        totals = {
            "available": spec.total_overrides.get((code, "available"), sum(available)),
            "occupied": spec.total_overrides.get((code, "occupied"), sum(occupied)),
        }
        blocks = {
            "available": [totals["available"], *available],
            "occupied": [totals["occupied"], *occupied],
        }
        names = ["Total", *SECTOR_KEYS]
        for offset, name in enumerate(names):
            if code == "England":
                blocks["available"][offset] = spec.england_overrides.get(("available", name), blocks["available"][offset])
                blocks["occupied"][offset] = spec.england_overrides.get(("occupied", name), blocks["occupied"][offset])
            pct = _pct(blocks["occupied"][offset], blocks["available"][offset])
            pct = spec.pct_overrides.get((code, name), pct)
            ws.cell(row=row, column=block_start + offset, value=blocks["available"][offset])
            ws.cell(row=row, column=block_start + 6 + offset, value=blocks["occupied"][offset])
            ws.cell(row=row, column=block_start + 12 + offset, value=pct)

    trusts = kept_trusts(spec)
    if region_level:
        regions = sorted({trust.region for trust in trusts})
        members = {region: [trust for trust in trusts if trust.region == region] for region in regions}
        groups = [(region, [REGION_NAMES.get(region, region)], members[region]) for region in regions]
        england = trusts
    else:
        groups = [(trust.code, [trust.region, trust.code, trust.name], [trust]) for trust in (*spec.trusts, *spec.appended)]
        england = trusts
    sums_a = [sum(trust.available[index] for trust in england) for index in range(4)]
    sums_o = [sum(trust.occupied[index] for trust in england) for index in range(4)]
    write(16, [None, "England"] if region_level else [None, None, "England"], sums_a, sums_o, "England")
    for offset, (code, keys, members) in enumerate(groups):
        available = [sum(trust.available[index] for trust in members) for index in range(4)]
        occupied = [sum(trust.occupied[index] for trust in members) for index in range(4)]
        if region_level:
            keys = [code, *keys]
        write(18 + offset, keys, available, occupied, code)


def _specialty_sheet(ws, spec: Kh03Spec) -> None:
    col = spec.first_column
    _title(ws, spec, "Average daily number of occupied beds open overnight by Consultant Specialty")
    ws.cell(row=13, column=col, value="Provider Level Data")
    labels = ["Year", "Period End", spec.region_code_header, "Org Code", "Org Name"]
    labels += [f"{code} {name}" for code, name in SPECIALTIES]
    for offset, label in enumerate(labels):
        ws.cell(row=15, column=col + offset, value=label)
    first = col + 5
    kept = kept_trusts(spec)
    for offset, value in enumerate([spec.year, spec.period_end, None, None, "England"]):
        ws.cell(row=16, column=col + offset, value=value)
    for index in range(len(SPECIALTIES)):
        ws.cell(row=16, column=first + index, value=sum(trust.specialty(index) for trust in kept))
    for row, trust in enumerate((*spec.trusts, *spec.appended), start=18):
        for offset, value in enumerate([spec.year, spec.period_end, trust.region, trust.code, trust.name]):
            ws.cell(row=row, column=col + offset, value=value)
        for index in range(len(SPECIALTIES)):
            ws.cell(row=row, column=first + index, value=trust.specialty(index))


def build_kh03(spec: Kh03Spec | None = None) -> bytes:
    """The workbook `spec` describes, as .xlsx bytes."""
    spec = spec or Kh03Spec()
    workbook = Workbook()
    workbook.remove(workbook.active)
    for name in spec.sheets:
        ws = workbook.create_sheet(name)
        if name == "NHS Trust by Sector":
            _sector_sheet(ws, spec, region_level=False)
        elif name == "Region by Sector":
            _sector_sheet(ws, spec, region_level=True)
        elif name == "Occupied by Specialty":
            _specialty_sheet(ws, spec)
        else:
            ws["A1"] = "Data Quality KH03"
            ws["A3"] = "This file includes all data submitted up to the deadline."
    if not spec.sheets:
        workbook.create_sheet("Sheet1")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def openpyxl_sheet(path: Path, sheet: str) -> tuple[list[list], dict[tuple[str | None, str], int]]:
    """A real workbook's sheet read with openpyxl, independently of the project's reader: the rows below the
    header row (the one holding `Year` and `Period End`), and (group, header) -> column position, the group
    being the `Available` / `Occupied` / `% Occupied` label over the first column of its block (None for the
    key columns)."""
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    rows = [list(r) for r in workbook[sheet].iter_rows(values_only=True)]
    workbook.close()
    header = next(i for i, r in enumerate(rows) if "Year" in r and "Period End" in r)
    group, positions = None, {}
    for position, name in enumerate(rows[header]):
        label = rows[header - 1][position] if position < len(rows[header - 1]) else None
        group = label if label in ("Available", "Occupied", "% Occupied") else group
        if name:
            positions[(group, str(name).strip())] = position
    return rows[header + 1:], positions


def openpyxl_row(path: Path, sheet: str, name_or_code: str) -> dict[tuple[str | None, str], object]:
    """(group, header) -> value of the first row below the header holding `name_or_code` (see openpyxl_sheet)."""
    rows, positions = openpyxl_sheet(path, sheet)
    target = next(r for r in rows if name_or_code in r)
    return {key: target[position] for key, position in positions.items()}


def as_xls(xlsx: bytes) -> bytes:
    """The same workbook as a legacy .xls (BIFF8, what NHS England published before 2013-14), cell by cell with
    xlwt. Numbers stay the same doubles; xlwt cannot write an empty sheet, so such a sheet gets no cells."""
    import xlwt
    from openpyxl import load_workbook

    source = load_workbook(io.BytesIO(xlsx))
    target = xlwt.Workbook()
    for ws in source.worksheets:
        sheet = target.add_sheet(ws.title)
        for row in ws.iter_rows():
            for cell in row:
                if cell.value is not None:
                    sheet.write(cell.row - 1, cell.column - 1, cell.value)
    out = io.BytesIO()
    target.save(out)
    return out.getvalue()


def dec(value: float) -> Decimal:
    """A spec float as the reader should return it: openpyxl stores 16 significant digits (`%.16g`), and
    the reader keeps the stored double's shortest repr exactly."""
    return Decimal(repr(float(f"{float(value):.16g}")))
