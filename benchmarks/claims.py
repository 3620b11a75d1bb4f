"""Payer claims end to end (issue 15 §5): ingest against `psql \\copy`, the claims models' full build, and the nightly.

One run, one embedded Postgres and one local S3 endpoint of its own. It generates `--lines` (3,000,000) claim lines
over `--months` (36) months in the three payer layouts of elt/contracts/claims.yml (BlueCross: ISO dates; Aetna:
US dates and `$1,234.00` amounts, admission and discharge dates; UnitedHealth: YYYYMMDD), one file per payer and
month under claims/provider=<payer>/year=YYYY/month=MM/, and eligibility for `--members` (200,000) members in the
plain payer layout of elt/contracts/eligibility.yml (one member file per payer, for the last month, under
eligibility/provider=<payer>/...). The data is shaped so that the marts have work to do: members with claims in
many months (a few heavy users), providers of five specialties billing shared procedures (a few at several times
their peers' price, a few billing amounts that break Benford's law), denials, re-sent claims (exact, and adjusted
in a later month's file), suspected duplicates under a new claim id, inpatient stays with readmissions, a few
claims serviced after they were received and a few implausibly long stays.

Then:
  1. ingest: every base file through the real loader (`elt.pipeline.ingest_file`, what the ingest DAGs' load task calls)
     from the S3 endpoint, against `\\copy` of the same file into an all-text table of its header's columns,
     interleaved month by month (each month's `\\copy`s in one psql session, timed by psql's `\\timing`, then the
     same files ingested), summed: ratio ingest / `\\copy` (target <= 2.5);
  2. the full build of the claims models: `dbt build` of the claims folders (staging, core, analytics and
     dbt/tests/claims) and the shared ops staging, the first build;
  3. the nightly: one more month's files (the three payers' claims, and their member files of every member still
     enrolled) ingested, then the same `dbt build` (target: nightly build / full build <= 0.2). `--rounds` (3)
     nights: the first after the first build, each later one after a `dbt build --full-refresh` (the full build
     again, on the data so far); medians compared.
Every file must load with every row and no reject: the generator's rows are valid by construction, and a reject
stops the run (it would be a bug here, not a figure).

    ./start.sh bench claims [--lines N] [--members N] [--months N] [--rounds N] [--seed N]
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import csv
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from elt.config import Settings  # noqa: E402
from elt.devstack.servers import EmbeddedPostgres, LocalS3, free_port, pg_bin_dir  # noqa: E402
from elt.pipeline import ingest_file, prepare  # noqa: E402
from elt.transform import run_dbt  # noqa: E402

# The claims family's dbt folders and the shared ops staging. When elt/families/claims.yml declares them
# (marts.dbt_paths, proposal 0001 step 3), its Family.dbt_select() is used instead (claims_selection).
CLAIMS_DBT_PATHS = ("models/staging/claims", "models/core/claims", "models/analytics/claims", "tests/claims",
                    "models/staging/ops")
# Share of the lines and members per payer: (payer, share).
PAYERS = (("bluecross", 0.4), ("aetna", 0.3), ("unitedhealth", 0.3))
EPOCH = date(1970, 1, 1)

# Specialties, each with six procedures (code, setting, base price in dollars) and six diagnoses. Every provider
# has one specialty, so at least a fifth of the providers bill each procedure: peers enough for the outlier test.
SPECIALTIES = {
    "primary care": ([("99213", "professional", 110), ("99214", "professional", 165), ("99215", "professional", 230),
                      ("99395", "professional", 210), ("G0439", "professional", 175), ("36415", "professional", 12)],
                     ["I10", "E11.9", "E78.5", "Z00.00", "J06.9", "M54.50"]),
    "laboratory": ([("80053", "outpatient", 45), ("85025", "outpatient", 28), ("83036", "outpatient", 38),
                    ("80061", "outpatient", 52), ("84443", "outpatient", 60), ("81001", "outpatient", 15)],
                   ["E11.9", "E78.5", "R73.03", "N39.0", "E03.9", "Z13.220"]),
    "imaging": ([("71046", "outpatient", 95), ("73030", "outpatient", 80), ("70450", "outpatient", 420),
                 ("74177", "outpatient", 780), ("76700", "outpatient", 310), ("72148", "outpatient", 950)],
                ["R07.9", "M25.511", "R51.9", "R10.9", "K80.20", "M54.16"]),
    "hospital": ([("99283", "outpatient", 480), ("99284", "outpatient", 820), ("99285", "outpatient", 1450),
                  ("99221", "inpatient", 2600), ("99222", "inpatient", 4100), ("99223", "inpatient", 6900)],
                 ["I21.4", "J18.9", "I50.9", "N17.9", "A41.9", "S72.001A"]),
    "therapy": ([("97110", "professional", 48), ("97140", "professional", 44), ("97530", "professional", 52),
                 ("97161", "professional", 120), ("97112", "professional", 50), ("97116", "professional", 46)],
                ["M54.50", "M25.561", "S83.511A", "M17.11", "G81.90", "M62.81"]),
}
PROCEDURES = [procedure for procedures, _ in SPECIALTIES.values() for procedure in procedures]
DIAGNOSES = [code for _, codes in SPECIALTIES.values() for code in codes]
PROCEDURE_WEIGHTS = np.array([0.34, 0.24, 0.12, 0.1, 0.1, 0.1])  # within a specialty, the first is the commonest
PLANS = ("PPO Gold", "PPO Silver", "HMO Silver", "HMO Bronze", "HDHP Bronze")


@dataclass(frozen=True)
class Layout:
    """How one payer writes a claim: its header (elt/contracts/claims.yml), dates, amounts and spellings."""

    name: str  # as the payer writes its own name (the member file's payer column)
    header: tuple[str, ...]
    date_format: str
    dollars: bool
    claim_types: dict[str, str]  # setting -> the payer's spelling
    paid: str
    denied: str
    claim_id: str  # format of the claim number, from a sequence
    member_id: str  # format of the member id, from a sequence


LAYOUTS = {
    "bluecross": Layout("BlueCross", ("ClaimID", "MemberID", "ProviderNPI", "ClaimDate", "ServiceFromDate", "ServiceToDate",
                         "DiagnosisCode", "ProcedureCode", "BilledAmount", "AllowedAmount", "PaidAmount", "Status",
                         "Type"), "%Y-%m-%d", False,
                        {"professional": "Professional", "outpatient": "Institutional", "inpatient": "Institutional"},
                        "Paid", "Denied", "BC{:010d}", "XBC{:09d}"),
    "aetna": Layout("Aetna", ("claim_number", "patient_id", "provider_tax_id", "claim_received_date", "service_date",
                     "admit_date", "discharge_date", "primary_diagnosis", "procedure", "charge_amount",
                     "approved_amount", "payment_amount", "claim_status", "service_category"), "%m/%d/%Y", True,
                    {"professional": "Professional", "outpatient": "Outpatient", "inpatient": "Inpatient"},
                    "paid", "denied", "A{:011d}", "W{:09d}"),
    "unitedhealth": Layout("UnitedHealth", ("CLAIM_ID", "SUBSCRIBER_ID", "RENDERING_PROVIDER_NPI", "RECEIVED_DT", "SVC_FROM_DT",
                            "SVC_TO_DT", "DIAG_CD", "PROC_CD", "BILLED_AMT", "ALLOWED_AMT", "PAID_AMT", "CLM_STATUS",
                            "CLM_TYPE"), "%Y%m%d", False,
                           {"professional": "PROF", "outpatient": "INST", "inpatient": "INST"},
                           "PAID", "DENIED", "{:012d}", "{:011d}"),
}
ELIGIBILITY_HEADER = ("member_id", "payer", "plan", "start_date", "end_date", "birth_date", "sex")
ALLOWED_SHARE = {"bluecross": 0.62, "aetna": 0.58, "unitedhealth": 0.66}  # of billed, before noise
# A claim's billed amount is its procedure's price times the provider's price factor times a lognormal factor of
# this sigma (what else the claim bills): wide enough that an honest provider's amounts follow Benford's first-digit
# law within Nigrini's bands (0.25 put every provider in nonconformity: a few prices, one first digit each).
CLAIM_SPREAD = 1.0


def month_start(index: int) -> date:
    """The first day of month `index` (months since year 0: year * 12 + month - 1)."""
    return date(index // 12, index % 12 + 1, 1)


def month_end(index: int) -> date:
    start = month_start(index)
    return start.replace(day=calendar.monthrange(start.year, start.month)[1])


def days(day: date) -> int:
    return (day - EPOCH).days


@dataclass
class GeneratedFile:
    key: str  # where it lands in the bucket
    path: Path
    rows: int  # data rows written (the header not counted)
    layout: str  # bluecross, aetna, unitedhealth, or eligibility


@dataclass
class Members:
    """One payer's members and their enrolment spans (month indices, end inclusive; no end: still enrolled)."""

    ids: list[str]
    weights: np.ndarray  # how many claims each member tends to have (a few heavy users)
    birth: np.ndarray  # days since 1970
    sex: np.ndarray  # 'F' / 'M'
    span_member: np.ndarray
    span_start: np.ndarray
    span_end: np.ndarray  # a month index; OPEN for a span that has not ended
    span_plan: np.ndarray
    OPEN = 10**6

    def active(self, month: int) -> np.ndarray:
        """The members enrolled in `month`."""
        covering = (self.span_start <= month) & (self.span_end >= month)
        return np.unique(self.span_member[covering])


def make_members(rng: np.random.Generator, count: int, payer: str, first: int, last: int) -> Members:
    """Members who joined before or during the months, 20% of them leaving, a third of those back later, and one
    in ten switching plan at a January; at most two spans each."""
    start = np.where(rng.random(count) < 0.45, first - rng.integers(1, 37, count), rng.integers(first, last + 1, count))
    leaves = rng.random(count) < 0.2
    end = np.where(leaves, start + (rng.random(count) * (last - start + 1)).astype(int), Members.OPEN)
    plan = rng.integers(0, len(PLANS), count)
    second = leaves & (end < last - 2) & (rng.random(count) < 0.35)  # back after a gap
    second_start = np.where(second, end + 2 + (rng.random(count) * (last - end - 2)).astype(int), 0)
    # A plan switch: the span ends at a December, the next starts the January after with another plan.
    switch = ~leaves & (rng.random(count) < 0.1)
    december = np.maximum(start, first) + (11 - np.maximum(start, first) % 12)
    switch &= december < last
    end = np.where(switch, december, end)
    second_start = np.where(switch, december + 1, second_start)
    second |= switch
    members = np.arange(count)
    layout = LAYOUTS[payer]
    first_day = days(date(1940, 1, 1))
    return Members(
        ids=[layout.member_id.format(n + 1) for n in range(count)],
        weights=rng.lognormal(0, 1.1, count),
        birth=first_day + rng.integers(0, days(date(2023, 12, 31)) - first_day, count),
        sex=np.where(rng.random(count) < 0.52, "F", "M"),
        span_member=np.concatenate([members, members[second]]),
        span_start=np.concatenate([start, second_start[second]]),
        span_end=np.concatenate([end, np.full(int(second.sum()), Members.OPEN)]),
        span_plan=np.concatenate([plan, (plan[second] + 1 + rng.integers(0, len(PLANS) - 1, int(second.sum())))
                                  % len(PLANS)]),
    )


def write_eligibility(path: Path, members: Members, payer: str, report: int, *, since: int | None) -> int:
    """The payer's member file for month `report`: every span begun by then of each member sent, an end after
    `report` left empty (still enrolled, as the file knows). `since`: only members enrolled at some time from
    that month on (a monthly file of the current members); None: every member who has begun (the first file)."""
    begun = members.span_start <= report
    sent = np.unique(members.span_member[begun if since is None else begun & (members.span_end >= since)])
    chosen = np.isin(members.span_member, sent) & begun
    order = np.lexsort((members.span_start[chosen], members.span_member[chosen]))
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(ELIGIBILITY_HEADER)
        for member, start, end, plan in zip(members.span_member[chosen][order].tolist(),
                                            members.span_start[chosen][order].tolist(),
                                            members.span_end[chosen][order].tolist(),
                                            members.span_plan[chosen][order].tolist(), strict=True):
            writer.writerow((members.ids[member], LAYOUTS[payer].name, PLANS[plan], month_start(start).isoformat(),
                             month_end(end).isoformat() if end <= report else "",
                             (EPOCH + timedelta(days=int(members.birth[member]))).isoformat(),
                             members.sex[member]))
            rows += 1
    return rows


@dataclass
class Providers:
    npi: list[str]
    tin: list[str]
    specialty: np.ndarray  # index into SPECIALTIES
    price: np.ndarray  # price factor: about 1, several times that for the few expensive ones
    volume: np.ndarray  # share of claims
    first_digit_four: np.ndarray  # bills amounts from 400 to 499: fails the first-digit (Benford) test


def make_providers(rng: np.random.Generator, count: int) -> Providers:
    expensive = rng.random(count) < 0.03
    volume = rng.lognormal(0, 0.6, count)
    return Providers(
        npi=[f"1{n:09d}" for n in rng.choice(10**9, count, replace=False)],
        tin=[f"{n:09d}" for n in rng.choice(10**9, count, replace=False)],
        specialty=np.arange(count) % len(SPECIALTIES),
        price=rng.lognormal(0, 0.12, count) * np.where(expensive, rng.uniform(2.5, 4, count), 1),
        volume=volume / volume.sum(),
        first_digit_four=rng.random(count) < 0.01,
    )


@dataclass
class Claims:
    """One file's claims (one line each), as columns; amounts in cents, dates in days since 1970."""

    seq: np.ndarray
    member: np.ndarray
    provider: np.ndarray
    procedure: np.ndarray
    diagnosis: np.ndarray
    received: np.ndarray
    service_from: np.ndarray
    service_to: np.ndarray
    billed: np.ndarray
    allowed: np.ndarray
    paid: np.ndarray
    denied: np.ndarray

    def take(self, rows: np.ndarray) -> Claims:
        return Claims(**{name: value[rows] for name, value in vars(self).items()})

    @staticmethod
    def joined(parts: list[Claims]) -> Claims:
        return Claims(**{name: np.concatenate([vars(part)[name] for part in parts]) for name in vars(parts[0])})


SETTING = np.array([setting for _, setting, _ in PROCEDURES])
BASE_PRICE = np.array([price for _, _, price in PROCEDURES], dtype=float)


@dataclass
class PayerState:
    members: Members
    next_seq: int = 1
    previous: Claims | None = None


def new_claims(rng: np.random.Generator, count: int, state: PayerState, providers: Providers, month: int,
               payer: str) -> Claims:
    """`count` new claims received in `month`, of members enrolled then."""
    members = state.members
    active = members.active(month)
    weights = members.weights[active]
    member = rng.choice(active, count, p=weights / weights.sum())
    provider = rng.choice(len(providers.npi), count, p=providers.volume)
    local = rng.choice(6, count, p=PROCEDURE_WEIGHTS / PROCEDURE_WEIGHTS.sum())
    procedure = providers.specialty[provider] * 6 + local
    diagnosis = providers.specialty[provider] * 6 + rng.integers(0, 6, count)
    first, last = days(month_start(month)), days(month_end(month))
    received = rng.integers(first, last + 1, count)
    service_to = received - np.minimum(rng.geometric(0.12, count), 60)
    inpatient = SETTING[procedure] == "inpatient"
    stay = np.where(rng.random(count) < 0.002, rng.integers(70, 121, count), np.minimum(rng.geometric(0.3, count), 20))
    service_from = service_to - np.where(inpatient, stay, 0)
    late = rng.random(count) < 0.0005  # serviced after the payer received the claim
    service_from = np.where(late, received + rng.integers(1, 11, count), service_from)
    service_to = np.where(late, service_from, service_to)
    billed = BASE_PRICE[procedure] * providers.price[provider] * rng.lognormal(0, CLAIM_SPREAD, count)
    billed = np.where(providers.first_digit_four[provider], rng.uniform(400, 500, count), billed)
    billed = np.maximum(np.round(billed * 100), 100).astype(np.int64)
    denied = rng.random(count) < 0.07
    allowed = np.where(denied, 0, np.floor(billed * ALLOWED_SHARE[payer] * rng.uniform(0.9, 1.0, count))).astype(np.int64)
    paid = np.floor(allowed * rng.uniform(0.75, 1.0, count)).astype(np.int64)
    seq = np.arange(state.next_seq, state.next_seq + count)
    state.next_seq += count
    claims = Claims(seq, member, provider, procedure, diagnosis, received, service_from, service_to, billed, allowed,
                    paid, denied)
    readmit(rng, claims)
    return claims


def readmit(rng: np.random.Generator, claims: Claims) -> None:
    """One in eight inpatient stays had an earlier stay of the same member ending 2 to 29 days before its
    admission: another claim of the file (not itself a stay) becomes that earlier stay."""
    stays = np.flatnonzero((SETTING[claims.procedure] == "inpatient") & (claims.service_to - claims.service_from < 60)
                           & (claims.service_from <= claims.received))
    stays = stays[rng.random(len(stays)) < 0.125]
    others = np.flatnonzero(SETTING[claims.procedure] != "inpatient")
    earlier = rng.choice(others, min(len(stays), len(others)), replace=False)
    stays = stays[:len(earlier)]
    claims.member[earlier] = claims.member[stays]
    claims.procedure[earlier] = claims.procedure[stays]
    claims.provider[earlier] = claims.provider[stays]
    claims.diagnosis[earlier] = claims.diagnosis[stays]
    claims.service_to[earlier] = claims.service_from[stays] - rng.integers(2, 30, len(stays))
    claims.service_from[earlier] = claims.service_to[earlier] - np.minimum(rng.geometric(0.3, len(stays)), 20)
    claims.received[earlier] = np.maximum(claims.received[stays], claims.service_to[earlier] + 1)
    claims.billed[earlier], claims.allowed[earlier], claims.paid[earlier] = (
        claims.billed[stays], claims.allowed[stays], claims.paid[stays])
    claims.denied[earlier] = claims.denied[stays]


def resent(rng: np.random.Generator, previous: Claims, count: int, month: int, payer: str) -> Claims:
    """`count` claims of last month's file sent again: a third as they were (an exact re-send), the rest adjusted
    (received again this month, amounts re-priced; a denial overturned)."""
    again = previous.take(rng.choice(len(previous.seq), min(count, len(previous.seq)), replace=False))
    adjusted = rng.random(len(again.seq)) < 2 / 3
    first, last = days(month_start(month)), days(month_end(month))
    again.received = np.where(adjusted, rng.integers(first, last + 1, len(again.seq)), again.received)
    allowed = np.floor(again.billed * ALLOWED_SHARE[payer] * rng.uniform(0.85, 1.0, len(again.seq))).astype(np.int64)
    again.allowed = np.where(adjusted, allowed, again.allowed)
    again.paid = np.where(adjusted, np.floor(allowed * rng.uniform(0.75, 1.0, len(again.seq))).astype(np.int64),
                          again.paid)
    again.denied = np.where(adjusted, False, again.denied)
    return again


def month_claims(rng: np.random.Generator, count: int, state: PayerState, providers: Providers, month: int,
                 payer: str) -> Claims:
    """A payer's file for `month`: 1.5% re-sends of last month's claims, 0.3% suspected duplicates (a claim's
    member, provider, service dates and procedure again under a new claim number), the rest new."""
    resends = max(1, round(count * 0.015)) if state.previous is not None else 0
    duplicates = max(1, round(count * 0.003))
    fresh = new_claims(rng, count - resends - duplicates, state, providers, month, payer)
    copies = fresh.take(rng.choice(len(fresh.seq), duplicates, replace=False))
    copies.seq = np.arange(state.next_seq, state.next_seq + duplicates)
    state.next_seq += duplicates
    parts = [fresh, copies]
    if resends:
        parts.insert(0, resent(rng, state.previous, resends, month, payer))
    claims = Claims.joined(parts)
    state.previous = fresh
    return claims


class DateText:
    """Days since 1970 as a layout writes them, computed once per day."""

    def __init__(self, date_format: str):
        self.format, self.cache = date_format, {}

    def __call__(self, day: int) -> str:
        text = self.cache.get(day)
        if text is None:
            text = self.cache[day] = (EPOCH + timedelta(days=day)).strftime(self.format)
        return text


def amount_text(cents: int, dollars: bool) -> str:
    if dollars:
        return f'"${cents // 100:,}.{cents % 100:02d}"'  # quoted: the thousands comma is inside the field
    return f"{cents // 100}.{cents % 100:02d}"


def write_claims(path: Path, claims: Claims, payer: str, members: Members, providers: Providers) -> int:
    layout = LAYOUTS[payer]
    day = DateText(layout.date_format)
    aetna = payer == "aetna"
    lines = [",".join(layout.header)]
    columns = (claims.seq.tolist(), claims.member.tolist(), claims.provider.tolist(), claims.procedure.tolist(),
               claims.diagnosis.tolist(), claims.received.tolist(), claims.service_from.tolist(),
               claims.service_to.tolist(), claims.billed.tolist(), claims.allowed.tolist(), claims.paid.tolist(),
               claims.denied.tolist())
    for seq, member, provider, procedure, diagnosis, received, start, end, billed, allowed, paid, denied in zip(
            *columns, strict=True):
        code, setting, _ = PROCEDURES[procedure]
        if aetna:
            stay = (day(start), day(end)) if setting == "inpatient" else ("", "")
            fields = (layout.claim_id.format(seq), members.ids[member], providers.tin[provider], day(received),
                      day(start), *stay)
        else:
            fields = (layout.claim_id.format(seq), members.ids[member], providers.npi[provider], day(received),
                      day(start), day(end))
        lines.append(",".join((*fields, DIAGNOSES[diagnosis], code, amount_text(billed, layout.dollars),
                               amount_text(allowed, layout.dollars), amount_text(paid, layout.dollars),
                               layout.denied if denied else layout.paid, layout.claim_types[setting])))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1


@dataclass
class Dataset:
    base: list[list[GeneratedFile]]  # per month, oldest first; the member files with the last month
    nights: list[list[GeneratedFile]]  # each: one more month's claims and member files
    first_month: int
    months: int
    seconds: float = 0.0
    members: dict[str, int] = field(default_factory=dict)


def split(total: int, shares: list[float]) -> list[int]:
    """`total` in parts by `shares`, the rounding left to the last part, so the parts add up to `total`."""
    parts = [int(total * share) for share in shares[:-1]]
    return [*parts, total - sum(parts)]


def generate(folder: Path, *, lines: int, members: int, months: int, nights: int, seed: int = 15,
             last_month: int | None = None) -> Dataset:
    """The base (`lines` claim lines over `months` months, `members` members) and `nights` more months, in
    `folder`. The last month generated is the month before this one (or `last_month`), so every claim was
    received before today (the contract refuses a claim date in the future)."""
    start = time.perf_counter()
    today = date.today()
    last = last_month if last_month is not None else today.year * 12 + today.month - 2
    first = last - months - nights + 1
    rng = np.random.default_rng(seed)
    providers = make_providers(rng, max(120, lines // 1000))
    shares = [share for _, share in PAYERS]
    states = {payer: PayerState(make_members(rng, count, payer, first, last))
              for (payer, _), count in zip(PAYERS, split(members, shares), strict=True)}
    per_month = lines // months
    dataset = Dataset([], [], first, months, members={payer: len(s.members.ids) for payer, s in states.items()})
    for offset in range(months + nights):
        month = first + offset
        count = per_month + (lines - per_month * months if offset == months - 1 else 0)
        files = []
        for (payer, _), payer_lines in zip(PAYERS, split(count, shares), strict=True):
            claims = month_claims(rng, payer_lines, states[payer], providers, month, payer)
            key = f"claims/provider={payer}/year={month // 12}/month={month % 12 + 1:02d}/{payer}_{month_key(month)}.csv"
            files.append(written(folder, key, payer, write_claims(folder / key_name(key), claims, payer,
                                                                  states[payer].members, providers)))
        if offset >= months - 1:  # the first member files with the base's last month, then one each night
            for payer, state in states.items():
                key = (f"eligibility/provider={payer}/year={month // 12}/month={month % 12 + 1:02d}/"
                       f"{payer}_members_{month_key(month)}.csv")
                since = None if offset == months - 1 else month - 1
                files.append(written(folder, key, "eligibility",
                                     write_eligibility(folder / key_name(key), state.members, payer, month, since=since)))
        (dataset.base if offset < months else dataset.nights).append(files)
    dataset.seconds = time.perf_counter() - start
    return dataset


def month_key(month: int) -> str:
    return f"{month // 12}-{month % 12 + 1:02d}"


def key_name(key: str) -> str:
    return key.replace("/", "__")


def written(folder: Path, key: str, layout: str, rows: int) -> GeneratedFile:
    return GeneratedFile(key, folder / key_name(key), rows, layout)


# --- Measuring ------------------------------------------------------------------------------------------------

COPY_TABLES = {payer: layout.header for payer, layout in LAYOUTS.items()} | {"eligibility": ELIGIBILITY_HEADER}
TIMING = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)


def create_copy_tables(psql: str, url: str) -> None:
    """One all-text table per header (what `\\copy` loads into: parse and write, nothing else)."""
    statements = [f"create table copy_{name} ({', '.join(f'{column.lower()} text' for column in header)})"
                  for name, header in COPY_TABLES.items()]
    subprocess.run([psql, url, "-qX", "-v", "ON_ERROR_STOP=1", *(arg for s in statements for arg in ("-c", s))],
                   check=True)


def copy_files(psql: str, url: str, files: list[GeneratedFile]) -> list[float]:
    """`\\copy` of each file into its table in one psql session, each timed by psql itself (no start-up)."""
    script = "\\timing on\n" + "".join(f"\\copy copy_{f.layout} from '{f.path}' with (format csv, header true)\n"
                                       for f in files)
    result = subprocess.run([psql, url, "-qX", "-v", "ON_ERROR_STOP=1"], input=script, check=True,
                            capture_output=True, text=True)
    times = [float(ms) / 1000 for ms in TIMING.findall(result.stdout)]
    if len(times) != len(files):
        raise RuntimeError(f"psql printed {len(times)} timings for {len(files)} \\copy commands: {result.stdout[-500:]}")
    return times


def ingest_files(settings: Settings, files: list[GeneratedFile], phases: dict[str, float] | None = None) -> list[float]:
    """Each file through the loader, one after another as `elt ingest` does; a file not loaded whole stops the run.
    `phases` sums the loader's own timings (copy, validate, commit, move)."""
    times = []
    for generated in files:
        start = time.perf_counter()
        outcome = ingest_file(generated.key, settings=settings)
        times.append(time.perf_counter() - start)
        if (outcome.status, outcome.rows_loaded, outcome.rows_rejected) != ("loaded", generated.rows, 0):
            raise RuntimeError(f"{generated.key}: expected {generated.rows} rows loaded and none rejected: "
                               f"{outcome.summary()}")
        for phase, seconds in outcome.timings.items():
            if phases is not None:
                phases[phase] = phases.get(phase, 0.0) + seconds
    return times


def upload(s3: LocalS3, bucket: str, files: list[GeneratedFile]) -> None:
    client = s3.client()
    for generated in files:
        client.upload_file(str(generated.path), bucket, generated.key)


def claims_selection(settings: Settings) -> list[str]:
    """The claims family's dbt selection when it declares one, else CLAIMS_DBT_PATHS (those that exist)."""
    from elt.families import declared_families

    family = declared_families(settings).get("claims")
    if family is not None and hasattr(family, "dbt_select"):
        return list(family.dbt_select())
    return [f"path:{path}" for path in CLAIMS_DBT_PATHS if (settings.dbt_project_dir / path).is_dir()]


def bench_dbt():
    """benchmarks/dbt.py (its timed build, project copy and phase breakdown), loaded by path as `bench_dbt`: this
    folder cannot go on sys.path (dbt.py would hide dbt's own package)."""
    if "bench_dbt" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_dbt", Path(__file__).with_name("dbt.py"))
        sys.modules["bench_dbt"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["bench_dbt"])
    return sys.modules["bench_dbt"]


@dataclass
class Figures:
    copy: list[float] = field(default_factory=list)  # per base file
    ingest: list[float] = field(default_factory=list)
    ingest_phases: dict[str, float] = field(default_factory=dict)  # the loader's own timings, summed
    full: list[tuple[float, dict]] = field(default_factory=list)  # the first build, then each --full-refresh
    night_ingest: list[float] = field(default_factory=list)
    nightly: list[tuple[float, dict]] = field(default_factory=list)


def measure(dataset: Dataset, root: Path, rounds: int) -> tuple[Figures, dict[str, int]]:
    figures = Figures()
    postgres = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
    s3 = LocalS3(free_port(), root / "s3.log", bucket="bench")
    postgres.start()
    s3.start()
    try:
        postgres.create_database("bench")
        url = postgres.url("bench")
        settings = Settings(database_url=url, s3_endpoint_url=s3.endpoint_url, s3_bucket="bench",
                            dbt_project_dir=bench_dbt().copy_project(root))
        prepare(settings)
        psql = str(pg_bin_dir() / "psql")
        create_copy_tables(psql, url)
        upload(s3, "bench", [f for month in dataset.base for f in month])
        for number, month in enumerate(dataset.base, 1):
            subprocess.run([psql, url, "-qXc", "checkpoint"], check=True)
            figures.copy += copy_files(psql, url, month)
            subprocess.run([psql, url, "-qXc", "checkpoint"], check=True)
            figures.ingest += ingest_files(settings, month, figures.ingest_phases)
            if number % 6 == 0 or number == len(dataset.base):
                print(f"1. ingested {number} of {len(dataset.base)} months: \\copy {sum(figures.copy):.1f} s, "
                      f"ingest {sum(figures.ingest):.1f} s", flush=True)
        selection = claims_selection(settings)
        target = root / "target"
        run_dbt(["parse", "--target-path", str(target)], settings=settings)
        build = bench_dbt().timed_build
        figures.full.append(build(settings, url, target, "build", "--select", *selection))
        print(f"2. full build: {figures.full[-1][0]:.1f} s", flush=True)
        for night, files in enumerate(dataset.nights[:rounds], 1):
            if night > 1:
                figures.full.append(build(settings, url, target, "build", "--full-refresh", "--select", *selection))
                print(f"2. full build again (--full-refresh): {figures.full[-1][0]:.1f} s", flush=True)
            upload(s3, "bench", files)
            start = time.perf_counter()
            ingest_files(settings, files)
            figures.night_ingest.append(time.perf_counter() - start)
            figures.nightly.append(build(settings, url, target, "build", "--select", *selection))
            print(f"3. night {night}: ingest {figures.night_ingest[-1]:.1f} s, build {figures.nightly[-1][0]:.1f} s",
                  flush=True)
        counts = table_counts(psql, url)
    finally:
        s3.stop()
        postgres.stop()
    return figures, counts


COUNTED = ("raw.claims", "raw.eligibility", "core.fct_claims", "core.fct_member_months", "core.dim_members",
           "core.dim_providers", "analytics.claims_pmpm")


def table_counts(psql: str, url: str) -> dict[str, int]:
    query = " union all ".join(f"select '{table}', count(*) from {table}" for table in COUNTED)  # noqa: S608 - constants
    out = subprocess.run([psql, url, "-tAXF", " ", "-c", query], check=True, capture_output=True, text=True).stdout
    return {table: int(count) for table, count in (line.split() for line in out.splitlines() if line)}


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target}: {'met' if ratio <= target else 'NOT met'}"


def report(args, dataset: Dataset, figures: Figures, counts: dict[str, int]) -> str:
    def rows(files: list[GeneratedFile], eligibility: bool) -> int:
        return sum(f.rows for f in files if (f.layout == "eligibility") == eligibility)

    base = [f for month in dataset.base for f in month]
    night = dataset.nights[0]
    copy, ingest = sum(figures.copy), sum(figures.ingest)
    full = statistics.median(seconds for seconds, _ in figures.full)
    nightly = statistics.median(seconds for seconds, _ in figures.nightly)
    with_ingest = statistics.median(s + i for (s, _), i in zip(figures.nightly, figures.night_ingest, strict=True))
    fulls = ", ".join(f"{seconds:.2f}" for seconds, _ in figures.full)
    nights = ", ".join(f"{seconds:.2f}" for seconds, _ in figures.nightly)
    night_ingests = ", ".join(f"{seconds:.2f}" for seconds in figures.night_ingest)
    members = ", ".join(f"{payer} {count:,}" for payer, count in dataset.members.items())
    loader_phases = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in figures.ingest_phases.items())
    phases = bench_dbt().phases
    return f"""
base: {rows(base, False):,} claim lines over {args.months} months from {month_start(dataset.first_month):%Y-%m}
({len(base) - len(PAYERS)} claims files) and {rows(base, True):,} enrolment spans of {args.members:,} members ({members})
in {len(PAYERS)} member files, generated in {dataset.seconds:.1f} s. Each night: {rows(night, False):,} claim lines and
{rows(night, True):,} spans (the members still enrolled) in {len(night)} files.
At the end: {", ".join(f"{table} {count:,}" for table, count in counts.items())} rows.

1. psql \\copy of the base files into all-text tables : {copy:8.2f} s  (sum over {len(figures.copy)} files, timed by psql)
   elt ingest of the same files from the S3 endpoint  : {ingest:8.2f} s  (ingest_file, one after another, archive included)
     the loader's phases, summed: {loader_phases}
     per file: \\copy {copy / len(figures.copy):.3f} s, ingest {ingest / len(figures.ingest):.3f} s
ratio ingest / \\copy                                 : {ingest / copy:8.2f}   ({verdict(ingest / copy, 2.5)})

2. full build, `dbt build` of the claims selection    : {full:8.2f} s  (the first build, then --full-refresh: {fulls})
{phases(figures.full[0][0], figures.full[0][1])}
3. nightly: one more month ingested                   : {statistics.median(figures.night_ingest):8.2f} s  ({night_ingests})
   then `dbt build` of the same selection             : {nightly:8.2f} s  ({nights})
{phases(figures.nightly[-1][0], figures.nightly[-1][1])}
ratio 3. nightly build / 2. full build                : {nightly / full:8.3f}   ({verdict(nightly / full, 0.2)}; medians)
ratio 3. nightly ingest + build / 2. full build       : {with_ingest / full:8.3f}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=3_000_000, help="claim lines in the base (default 3,000,000)")
    parser.add_argument("--members", type=int, default=200_000, help="members over the three payers (200,000)")
    parser.add_argument("--months", type=int, default=36, help="months of claims in the base (36)")
    parser.add_argument("--rounds", type=int, default=3, help="nights, each after a full build (3)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR (new or empty) and leave it: the files, and the database under DIR/pg "
                             "(stopped) to study the plans afterwards, e.g. with EmbeddedPostgres(DIR / 'pg', port)")
    args = parser.parse_args()
    if args.months < 2 or args.rounds < 1 or args.lines < args.months * 100 or args.members < 300:
        parser.error("needs --months >= 2, --rounds >= 1, --lines >= 100 per month and --members >= 300")
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1",
                      DO_NOT_TRACK="1")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty")
    with (contextlib.nullcontext(str(args.keep)) if args.keep
          else tempfile.TemporaryDirectory(prefix="bench-claims-")) as tmp:
        root = Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        csvs = root / "csv"
        csvs.mkdir()
        os.chmod(csvs, 0o755)
        dataset = generate(csvs, lines=args.lines, members=args.members, months=args.months, nights=args.rounds,
                           seed=args.seed)
        for path in csvs.iterdir():
            os.chmod(path, 0o644)  # read by psql, which may run as the Postgres system user
        print(f"generated {sum(f.rows for m in dataset.base for f in m):,} base rows in {dataset.seconds:.1f} s",
              flush=True)
        figures, counts = measure(dataset, root, args.rounds)
    print(report(args, dataset, figures, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
