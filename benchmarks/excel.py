"""Reading a KH03 workbook: the project's reader (python-calamine, with every check it makes) against
`pandas.read_excel(engine="openpyxl")` of the same sheet, in one run.

The workbook is generated here (openpyxl's write-only mode) in NHS England's layout: a title block, the
`Available` / `Occupied` / `% Occupied` header band with blank spacer columns, the England row, then
--trusts trust rows of 23 columns on `NHS Trust by Sector`, with totals, England row and percentages that
agree as in the published files. The reader's time includes finding the header band, reading the
period, every count read (kept as the stored double, an exact Decimal on access), one row object per
trust and sector, and checking every Total, the England row and every % Occupied;
pandas only parses the sheet into a frame (header at row 15), checking nothing. Each is timed --rounds
times (median). pandas with python-calamine is shown too, for scale.

Target: the reader at least 6 times faster than openpyxl (issue 14; 5 in "NHS bed occupancy end to end").

    ./start.sh bench excel [--trusts N] [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
from openpyxl import Workbook  # noqa: E402

from elt.readers.kh03 import read_kh03  # noqa: E402

SHEET = "NHS Trust by Sector"
SECTORS = ("Total ", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def org_code(n: int) -> str:
    """Five characters, as the newest trust codes have: R + four base-36 digits."""
    digits = ""
    for _ in range(4):
        n, rest = divmod(n, 36)
        digits = ALPHABET[rest] + digits
    return "R" + digits


def generate(trusts: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    rows = []
    for n in range(trusts):
        available = [round(rng.uniform(0, 1500), 6), round(rng.uniform(0, 30), 6), round(rng.uniform(0, 120), 6),
                     round(rng.uniform(0, 400), 6)]
        occupied = [round(a * rng.uniform(0.5, 1.0), 6) for a in available]
        rows.append((f"Y{56 + n % 7}", org_code(n), f"GENERATED NHS TRUST {n}", available, occupied))

    def cells(region, code, name, available, occupied) -> list:
        blocks = []
        for values in (available, occupied):
            blocks.append([sum(values), *values])
        pct = [o / a if a else "-" for o, a in zip(blocks[1], blocks[0], strict=True)]
        return [None, "2020-21", "September", region, code, name, *blocks[0], None, *blocks[1], None, *pct]

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET)
    sheet.append([])
    for label, value in (("Title:", "Average daily number of available and occupied beds open overnight by sector"),
                         ("Summary:", "KH03"), (None, None), ("Period:", "July to September 2020"),
                         ("Source:", "NHS England: SDCS data collection - KH03"), ("Basis:", "Provider"),
                         ("Published:", "19th November 2020"), ("Revised:", None), ("Status:", "Public"),
                         ("Contact:", "england.bedsanddischarges@nhs.net")):
        sheet.append([None, label, value])
    sheet.append([])
    sheet.append([None, "Provider Level Data"])
    sheet.append([None] * 6 + ["Available"] + [None] * 5 + ["Occupied"] + [None] * 5 + ["% Occupied"])
    sheet.append([None, "Year", "Period End", "Region Code", "Org Code", "Org Name", *SECTORS, None, *SECTORS, None,
                  *SECTORS])
    england_available = [sum(row[3][i] for row in rows) for i in range(4)]
    england_occupied = [sum(row[4][i] for row in rows) for i in range(4)]
    sheet.append(cells(None, None, "England", england_available, england_occupied))
    sheet.append([])
    for row in rows:
        sheet.append(cells(*row))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def timed(function, rounds: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trusts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    data = generate(args.trusts)
    print(f"generated a KH03 workbook with {args.trusts:,} trust rows of 23 columns ({len(data) / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s", flush=True)

    name = "Beds-Open-Overnight-Web_File-Q2-2020-21-benchmark.xlsx"
    ours, workbook = timed(lambda: read_kh03(data, name, copy_to_disk=True), args.rounds)
    print(f"project reader (calamine, checked):   {ours:7.2f} s", flush=True)
    openpyxl_seconds, frame = timed(
        lambda: pd.read_excel(io.BytesIO(data), sheet_name=SHEET, engine="openpyxl", header=14), args.rounds)
    print(f"pandas.read_excel(engine='openpyxl'): {openpyxl_seconds:7.2f} s", flush=True)
    calamine_seconds, _ = timed(
        lambda: pd.read_excel(io.BytesIO(data), sheet_name=SHEET, engine="calamine", header=14), args.rounds)
    print(f"pandas.read_excel(engine='calamine'): {calamine_seconds:7.2f} s", flush=True)

    trusts = {row.org_code for row in workbook.trust_rows}
    assert len(workbook.trust_rows) == 5 * args.trusts and workbook.trust_rows[-1].available > 0
    assert len(trusts) == args.trusts, f"the reader returned {len(trusts)} trusts, not {args.trusts}"
    assert len(frame) == args.trusts + 2, f"pandas read {len(frame)} rows"  # England row and the blank row
    ratio = openpyxl_seconds / ours
    print(f"""
{args.trusts:,} trust rows x 5 sectors x 3 groups; {workbook.financial_year} Q{workbook.quarter}; median of {args.rounds} rounds.
  project reader: every count read into a row per trust and sector, every Total, the England row and
                  every % Occupied checked
  openpyxl:       pandas frame of the sheet, nothing checked

ratio openpyxl / project reader : {ratio:6.2f}   (target >= 6: {'met' if ratio >= 6 else 'NOT met'})
ratio calamine (pandas) / reader: {calamine_seconds / ours:6.2f}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
