"""One canonical claim table from three payer layouts: header-picked layouts, value formats, cross-column rules.

Expected values are written out by hand from the canonical claims below, never read back from the loader.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from psycopg import sql

from elt.config import get_settings
from elt.contracts import REWRITES, load_contracts
from elt.pipeline import discover_new_files, ingest_file
from elt.readers.validate import validate_bytes
from elt.warehouse.loader import PARALLEL_FILE_SCAN, failing_rows_query, is_valid, rewrite_sql

CONTRACT = load_contracts(get_settings().contracts_dir)["claims"]

# Canonical claims: (claim_id, member, provider, claim_date, service from, service to, admit, discharge,
# diagnosis, procedure, billed, allowed, paid, status, type)
GOOD = [
    ("C1", "M1", "1234567890", date(2024, 1, 31), date(2024, 1, 10), date(2024, 1, 12), None, None,
     "E11.9", "99213", Decimal("1234.00"), Decimal("1000.00"), Decimal("800.00"), "Paid", "Professional"),
    ("C2", "M2", "1234567890", date(2024, 1, 20), date(2024, 1, 15), date(2024, 1, 15), None, None,
     "J45", "G0008", Decimal("25.50"), Decimal("20.00"), Decimal("0.00"), "Denied", "Professional"),
    ("C3", "M1", "9876543210", date(2024, 1, 5), date(2024, 1, 1), date(2024, 1, 3), None, None,
     "I10", "0001F", Decimal("12000.00"), Decimal("9000.50"), Decimal("9000.50"), "Paid", "Institutional"),
]
BLUECROSS = "ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,ProcedureCode,BilledAmount,AllowedAmount,PaidAmount,Status,Type"
AETNA = "claim_number,patient_id,provider_tax_id,claim_received_date,service_date,admit_date,discharge_date,primary_diagnosis,procedure,charge_amount,approved_amount,payment_amount,claim_status,service_category"
UNITED = "CLAIM_ID,SUBSCRIBER_ID,RENDERING_PROVIDER_NPI,RECEIVED_DT,SVC_FROM_DT,SVC_TO_DT,DIAG_CD,PROC_CD,BILLED_AMT,ALLOWED_AMT,PAID_AMT,CLM_STATUS,CLM_TYPE"


def us_date(day: date | None) -> str:
    return day.strftime("%m/%d/%Y") if day else ""


def dollars(amount: Decimal) -> str:
    return f'"${amount:,.2f}"'  # quoted: the thousands comma is inside the field


def bluecross_line(c) -> str:
    return ",".join([c[0], c[1], c[2], c[3].isoformat(), c[4].isoformat(), c[5].isoformat(), c[8], c[9],
                     str(c[10]), str(c[11]), str(c[12]), c[13], c[14]])


def aetna_line(c) -> str:
    return ",".join([c[0], c[1], c[2], us_date(c[3]), us_date(c[4]), us_date(c[6]), us_date(c[7]), c[8], c[9],
                     dollars(c[10]), dollars(c[11]), dollars(c[12]), c[13], c[14]])


def united_line(c) -> str:
    return ",".join([c[0], c[1], c[2], c[3].strftime("%Y%m%d"), c[4].strftime("%Y%m%d"), c[5].strftime("%Y%m%d"),
                     c[8], c[9], str(c[10]), str(c[11]), str(c[12]), c[13], c[14]])


def key(payer: str, name: str = "claims.csv", month: str = "01") -> str:
    return f"claims/provider={payer}/year=2024/month={month}/{name}"


def run(settings):
    return {k: ingest_file(k, settings=settings) for k in discover_new_files("claims", settings=settings)}


SELECT_VALID = ("select claim_id, member_id, provider_id, claim_date, service_from_date, service_to_date, admit_date, "
                "discharge_date, diagnosis_code, procedure_code, billed_amount, allowed_amount, paid_amount, "
                "claim_status, claim_type from raw.claims__valid order by claim_id")


def test_three_payer_layouts_land_as_the_same_canonical_claims(settings, store, db):
    store.put(key("bluecross"), "\n".join([BLUECROSS, *map(bluecross_line, GOOD)]).encode() + b"\n")
    aetna_claims = [(f"A{c[0]}", *c[1:5], None, date(2024, 1, 10), date(2024, 1, 12), *c[8:]) for c in GOOD]
    store.put(key("aetna"), "\r\n".join([AETNA, *map(aetna_line, aetna_claims)]).encode() + b"\r\n")
    store.put(key("unitedhealth"), "\n".join([UNITED, *(united_line((f"U{c[0]}", *c[1:])) for c in GOOD)]).encode())

    outcomes = run(settings)

    assert {k: (o.status, o.rows_loaded, o.rows_rejected) for k, o in outcomes.items()} == {
        key(p): ("loaded", 3, 0) for p in ("bluecross", "aetna", "unitedhealth")}
    layouts = db.execute("select key, layout, period_start, period_end from ops.file_ledger order by key").fetchall()
    assert layouts == [
        (key("aetna"), "aetna", date(2024, 1, 1), date(2024, 1, 31)),
        (key("bluecross"), "bluecross", date(2024, 1, 1), date(2024, 1, 31)),
        (key("unitedhealth"), "unitedhealth", date(2024, 1, 1), date(2024, 1, 31)),
    ]
    rows = db.execute(SELECT_VALID).fetchall()
    expected = sorted([*aetna_claims, *GOOD, *((f"U{c[0]}", *c[1:]) for c in GOOD)])
    assert rows == expected
    # The raw table keeps the values as the payer wrote them.
    assert db.execute("select billed_amount, claim_date from raw.claims where claim_id = 'AC1'").fetchone() == (
        "$1,234.00", "01/31/2024")


def test_each_claim_rule_rejects_its_row_with_a_reason_code(settings, store, db):
    good = [bluecross_line((f"G{n}", *GOOD[n % 3][1:])) for n in range(40)]
    bad = [
        "B1,M1,1,2024-01-31,2024-01-10,2024-01-12,E11.9,99213,abc,10,5,Paid,P",  # 41: billed not numeric
        "B2,M1,1,2024-01-31,2024-01-10,2024-01-12,E11.9,99213,-5,0,0,Paid,P",  # 42: billed negative
        "B3,M1,1,2024-01-31,2024-01-10,2024-01-12,E11.9,99213,100,120,80,Paid,P",  # 43: allowed above billed
        "B4,M1,1,2024-01-31,2024-01-10,2024-01-12,E11.9,99213,100,90,95,Paid,P",  # 44: paid above allowed
        "B5,M1,1,2099-01-31,2024-01-10,2024-01-12,E11.9,99213,100,90,80,Paid,P",  # 45: claim date in the future
        "B6,M1,1,2024-01-31,2024-01-10,2024-01-09,E11.9,99213,100,90,80,Paid,P",  # 46: service ends before start
        "B7,M1,1,2024-01-31,2024-01-10,2024-01-12,diabetes,99213,100,90,80,Paid,P",  # 47: not ICD-10
        "B8,M1,1,2024-01-31,2024-01-10,2024-01-12,E11.9,9921,100,90,80,Paid,P",  # 48: not CPT/HCPCS
    ]
    data = "\n".join([BLUECROSS, *good, *bad]).encode() + b"\n"
    store.put(key("bluecross"), data)
    aetna_bad = "\n".join([
        AETNA,
        *(aetna_line((f"A{n}", *GOOD[0][1:6], date(2024, 1, 10), date(2024, 1, 12), *GOOD[0][8:])) for n in range(9)),
        "AB1,M1,1,01/31/2024,01/10/2024,01/12/2024,01/11/2024,E11.9,99213,$100.00,$90.00,$80.00,Paid,I",  # 10
        "AB2,M1,1,31/01/2024,01/10/2024,,,E11.9,99213,$100.00,$90.00,$80.00,Paid,I",  # 11: day-first date
    ]).encode()
    store.put(key("aetna"), aetna_bad)

    outcomes = run(settings)

    assert (outcomes[key("bluecross")].status, outcomes[key("bluecross")].rows_rejected) == ("loaded", 8)
    assert (outcomes[key("aetna")].status, outcomes[key("aetna")].rows_rejected) == ("loaded", 2)
    rejects = db.execute(
        "select ledger.layout, rejects.row_number, rejects.column_name, rejects.rule, rejects.raw_value "
        "from ops.load_rejects as rejects join ops.file_ledger as ledger using (file_id) order by 1, 2, 3, 4"
    ).fetchall()
    assert rejects == [
        ("aetna", 10, "discharge_date", "discharge_before_admission", "01/11/2024"),
        ("aetna", 11, "claim_date", "type", "31/01/2024"),
        ("bluecross", 41, "billed_amount", "type", "abc"),
        ("bluecross", 42, "allowed_amount", "allowed_above_billed", "0"),  # 0 > -5: both rules speak
        ("bluecross", 42, "billed_amount", "range", "-5"),
        ("bluecross", 43, "allowed_amount", "allowed_above_billed", "120"),
        ("bluecross", 44, "paid_amount", "paid_above_allowed", "95"),
        ("bluecross", 45, "claim_date", "range", "2099-01-31"),
        ("bluecross", 46, "service_to_date", "service_end_before_start", "2024-01-09"),
        ("bluecross", 47, "diagnosis_code", "pattern", "diabetes"),
        ("bluecross", 48, "procedure_code", "pattern", "9921"),
    ]
    message = db.execute("select message from ops.load_rejects where raw_value = '31/01/2024'").fetchone()[0]
    assert message == "claim_date is not a valid date written as MM/DD/YYYY"
    assert db.execute("select count(*) from raw.claims__valid").fetchone()[0] == 40 + 9
    assert db.execute("select count(*) from raw.claims").fetchone()[0] == 48 + 11  # every row kept as landed

    # `elt validate` (pandas, no database) finds the same rejects in the same files.
    for payer, payload in (("bluecross", data), ("aetna", aetna_bad)):
        report = validate_bytes(CONTRACT, payload, name=payer)
        expected = [(row, column, rule) for layout, row, column, rule, _ in rejects if layout == payer]
        assert [(r["row"], r["column"], r["rule"]) for r in report.rejects] == expected
        assert report.status == "has_rejects"


def test_a_header_of_no_known_layout_is_quarantined_naming_the_closest(settings, store, db):
    header = AETNA.replace("charge_amount", "charged")
    store.put(key("aetna"), (header + "\n" + aetna_line(("A1", *GOOD[0][1:5], None, None, None, *GOOD[0][8:]))).encode())
    outcome = run(settings)[key("aetna")]
    assert outcome.status == "quarantined"
    assert "is not a column of contract claims v2 (layout aetna) (did you mean charge_amount?); missing: charge_amount" in outcome.error
    assert "charged" not in outcome.error


def test_batches_for_the_same_month_add_up_instead_of_replacing_each_other(settings, store, db):
    store.put(key("bluecross", "batch1.csv"), "\n".join([BLUECROSS, bluecross_line(GOOD[0])]).encode())
    store.put(key("bluecross", "batch2.csv"), "\n".join([BLUECROSS, bluecross_line(GOOD[1])]).encode())
    assert [o.status for o in run(settings).values()] == ["loaded", "loaded"]
    assert db.execute("select claim_id from raw.claims__valid order by 1").fetchall() == [("C1",), ("C2",)]
    assert db.execute("select count(*) from ops.file_ledger where status = 'loaded'").fetchone()[0] == 2


@pytest.mark.parametrize("bad_key", ["claims/provider=aetna/year=2024/month=13/claims.csv"])
def test_a_month_that_does_not_exist_is_quarantined(settings, store, bad_key):
    store.put(bad_key, "\n".join([BLUECROSS, bluecross_line(GOOD[0])]).encode())
    outcome = ingest_file(bad_key, settings=settings)
    assert outcome.status == "quarantined" and "month=13" in outcome.error


# Values a sender might put in a date or amount column, after trimming: well formed, short, long, other
# separators, other digits (Arabic-Indic), letters, several currency marks, empty, NULL.
SPELLINGS = ["01/31/2024", "12/01/1999", "1/31/2024", "01/31/24", "01-31-2024", "01/31/2024x", "x01/31/2024",
             "20240131", "2024013", "202401311", "2024-01-31", "\u0660\u0661/\u0663\u0661/\u0662\u0660\u0662\u0664",
             "ab/cd/efgh", "$1,234.00", "-$1,234.00", "(12.00)", "$$,,", "1.234,00", "", "\u00e9$\u20ac", None]


@pytest.mark.parametrize("value_format", [name for name, rewrite in REWRITES.items() if rewrite])
def test_the_loaders_plain_rewrite_gives_what_the_formats_regex_gives(db, value_format):
    """The loader and the typed view rewrite with substr/translate (rewrite_sql); `elt validate` with the regex
    (pandas). Both are derived from the format's picture: Postgres's regexp_replace and Python's re.sub of the
    regex must agree with the plain form on every spelling."""
    rewrite = REWRITES[value_format]
    rows = db.execute(
        sql.SQL("select v, {}, regexp_replace(v, %s, %s, %s) from unnest(%s::text[]) with ordinality as u(v, n) "
                "order by n").format(rewrite_sql(rewrite, sql.SQL("v"))),
        (rewrite.pattern, rewrite.replacement, "g" if rewrite.every else "", SPELLINGS)).fetchall()
    assert [value for value, _, _ in rows] == SPELLINGS
    for value, plain, regex in rows:
        python = None if value is None else re.sub(rewrite.pattern, lambda m: m.expand(rewrite.replacement), value,
                                                   count=0 if rewrite.every else 1)
        assert plain == regex == python, f"{value_format}: {value!r}"
    rewritten = {value: plain for value, plain, _ in rows}
    if value_format == "MM/DD/YYYY":
        assert (rewritten["01/31/2024"], rewritten["1/31/2024"]) == ("2024-01-31", "1/31/2024")
    if value_format == "currency":
        assert (rewritten["-$1,234.00"], rewritten["$$,,"]) == ("-1234.00", "")


def test_the_iso_date_check_without_a_regex_accepts_what_the_regex_did(db):
    """is_valid's shape test of an ISO date (translate to a mask) against the regex it replaced."""
    spellings = [*SPELLINGS, "2024-02-29", "2023-02-29", "2024-1-31", "2024-01-31x", "2024/01/31", "0000-00-00",
                 "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0663\u0661", "12024-01-31", "2024-01-3"]
    date_column = CONTRACT.columns[[c.name for c in CONTRACT.columns].index("claim_date")]
    rows = db.execute(
        sql.SQL("select v, {}, v ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$' and pg_input_is_valid(v, 'date') "
                "from unnest(%s::text[]) as v").format(is_valid(date_column, sql.SQL("v"))), (spellings,)).fetchall()
    assert [(value, plain) for value, plain, regex in rows if plain is not regex] == []
    assert {value for value, plain, _ in rows if plain} == {"2024-01-31", "2024-02-29"}


def test_the_rules_of_a_rewritten_layout_run_inside_the_parallel_workers(settings, store, db):
    """Decision 0027: the rejects scan computes each value once, in fenced levels, and those levels and the rules
    still run under the Gather (with OFFSET 0 as the fence, Postgres keeps every level above the first in the
    leader). A plan, read without running it: no timing."""
    lines = [aetna_line((f"A{n}", *GOOD[n % 3][1:6], None, None, *GOOD[n % 3][8:])) for n in range(3000)]
    store.put(key("aetna"), "\n".join([AETNA, *lines]).encode())
    assert run(settings)[key("aetna")].status == "loaded"
    file_id = db.execute("select file_id from ops.file_ledger where layout = 'aetna'").fetchone()[0]
    with db.transaction():
        db.execute(PARALLEL_FILE_SCAN)
        query = failing_rows_query(CONTRACT, CONTRACT.layout("aetna"), file_id)
        plan = [line for line, in db.execute(sql.SQL("explain (costs off) {}").format(query)).fetchall()]
    nodes = [line.strip().removeprefix("->  ") for line in plan]
    gather = next(i for i, node in enumerate(nodes) if node.startswith("Gather"))
    levels = [i for i, node in enumerate(nodes) if node.startswith("Subquery Scan")]
    rules = next(i for i, node in enumerate(nodes) if node.startswith("Filter:") and "_raw_claim_id" in node)
    assert len(levels) == 3 and gather < min(levels) < rules, "\n".join(plan)
