"""NHS bed availability and occupancy (KH03, published quarterly by NHS England): occupancy by trust, region,
sector, financial year and quarter with quarter-on-quarter and year-on-year change and the 85% / 92%
general-and-acute flags; national totals beside the published England row; the quarters loaded; one
organisation's history; occupied beds by specialty. Published aggregate statistics: the analyst role and
above. Built by the `nhs_beds_ingest` DAG after each workbook loads.
"""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint

from backend.api.listing import Column, Resource, serve

bp = Blueprint("beds", __name__, url_prefix="/api/v1/beds")

KH03 = ("nhs_kh03_overnight",)
SECTORS = ("Total", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
LEVELS = ("trust", "region")
QUARTER = Column("quarter", "integer", "Quarter of the NHS financial year: 1 = April to June ... 4 = January to March.",
                 filter="eq")
FINANCIAL_YEAR = Column("financial_year", description="NHS financial year, April to March, e.g. 2020-21.", filter="eq")
PERIOD_START = Column("period_start", "date", "First day of the quarter.", filter="range", sortable=True)
PERIOD_END = Column("period_end", "date", "Last day of the quarter.")

OCCUPANCY = Resource(
    name="beds-occupancy",
    table="analytics.bed_occupancy_trends",
    summary="One row per trust or region per quarter per sector: beds available and occupied (daily averages), "
            "occupancy rate, change on the previous quarter and on the same quarter a year before, 85% / 92% flags.",
    columns=(
        Column("level", description="trust, or region (the workbook's Region by Sector sheet).", filter="eq",
               choices=LEVELS, sortable=True),
        Column("org_code", description="Trust code, or region code for level region.", filter="eq", sortable=True),
        Column("org_name"),
        Column("region_code", filter="eq"),
        Column("region_name"),
        FINANCIAL_YEAR,
        QUARTER,
        PERIOD_START,
        PERIOD_END,
        Column("sector", filter="eq", choices=SECTORS, sortable=True),
        Column("beds_available", "number"),
        Column("beds_occupied", "number"),
        Column("occupancy_rate", "number"),
        Column("previous_quarter_rate", "number"),
        Column("quarter_on_quarter_change", "number"),
        Column("previous_year_rate", "number"),
        Column("year_on_year_change", "number"),
        Column("is_above_85_pct", "boolean", filter="eq"),
        Column("is_above_92_pct", "boolean", filter="eq"),
        Column("file_id", "integer"),
    ),
    key=("level", "org_code", "period_start", "sector"),
    default_sort="period_start",
    drop_types=KH03,
    refreshed="on_arrival",
)

# One organisation (trust or region code in the path) over every quarter loaded, oldest first.
ORGANISATION_HISTORY = replace(
    OCCUPANCY,
    name="beds-organisation-history",
    summary="One organisation's occupancy (a trust or region code) in every quarter loaded, per sector.",
    columns=tuple(replace(c, filter=None) if c.name == "org_code" else c for c in OCCUPANCY.columns),
)

NATIONAL = Resource(
    name="beds-national",
    table="analytics.bed_occupancy_national",
    summary="One row per quarter per sector: England as published, beside the sum of the trusts' rows.",
    columns=(
        FINANCIAL_YEAR,
        QUARTER,
        PERIOD_START,
        PERIOD_END,
        Column("sector", filter="eq", choices=SECTORS, sortable=True),
        Column("beds_available", "number"),
        Column("beds_occupied", "number"),
        Column("occupancy_rate", "number"),
        Column("trust_beds_available", "number"),
        Column("trust_beds_occupied", "number"),
        Column("trusts_reporting", "integer"),
        Column("file_id", "integer"),
    ),
    key=("period_start", "sector"),
    default_sort="period_start",
    drop_types=KH03,
    refreshed="on_arrival",
)

PERIODS = Resource(
    name="beds-periods",
    table="analytics.bed_occupancy_periods",
    summary="One row per quarter loaded: its dates, the workbook (ledger id), which sheets it had, trusts and regions.",
    columns=(
        FINANCIAL_YEAR,
        QUARTER,
        PERIOD_START,
        PERIOD_END,
        Column("file_id", "integer"),
        Column("has_trust_sheet", "boolean"),
        Column("has_region_sheet", "boolean"),
        Column("has_specialty_sheet", "boolean"),
        Column("trusts_reporting", "integer"),
        Column("regions_reporting", "integer"),
    ),
    key=("period_start",),
    default_sort="-period_start",
    drop_types=KH03,
    refreshed="on_arrival",
)

SPECIALTIES = Resource(
    name="beds-specialties",
    table="analytics.specialty_occupancy",
    summary="One row per trust per quarter per consultant specialty: average daily beds occupied and the "
            "specialty's share of the trust's occupied beds.",
    columns=(
        Column("org_code", filter="eq", sortable=True),
        Column("org_name"),
        Column("region_code", filter="eq"),
        Column("region_name"),
        FINANCIAL_YEAR,
        QUARTER,
        PERIOD_START,
        PERIOD_END,
        Column("specialty_code", filter="eq", sortable=True),
        Column("specialty_name"),
        Column("beds_occupied", "number"),
        Column("share_of_trust_occupied", "number"),
        Column("file_id", "integer"),
    ),
    key=("org_code", "period_start", "specialty_code"),
    default_sort="period_start",
    drop_types=KH03,
    refreshed="on_arrival",
)


@bp.get("/occupancy")
def occupancy():
    return serve(OCCUPANCY)


@bp.get("/organisations/<org_code>/history")
def organisation_history(org_code: str):
    return serve(ORGANISATION_HISTORY, fixed={"org_code": org_code.upper()[:20]})


@bp.get("/national")
def national():
    return serve(NATIONAL)


@bp.get("/periods")
def periods():
    return serve(PERIODS)


@bp.get("/specialties")
def specialties():
    return serve(SPECIALTIES)
