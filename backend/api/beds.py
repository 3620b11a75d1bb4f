"""NHS bed availability and occupancy (KH03, published quarterly by NHS England): occupancy by trust, region,
sector, financial year and quarter with quarter-on-quarter and year-on-year change and the 85% / 92%
general-and-acute flags; national totals beside the published England row; the quarters loaded; one
organisation's history; occupied beds by specialty. Published aggregate statistics: the analyst role and
above. Built by the `nhs_beds_marts` DAG after `nhs_beds_ingest` loads a workbook.
"""

from __future__ import annotations

from dataclasses import replace

from backend.api.listing import Column, Resource

SECTORS = ("Total", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
LEVELS = ("trust", "region")
QUARTER = Column("quarter", "integer", "Quarter of the NHS financial year: 1 = April to June ... 4 = January to March.",
                 filter="eq")
FINANCIAL_YEAR = Column("financial_year", description="NHS financial year, April to March, e.g. 2020-21.", filter="eq")
PERIOD_START = Column("period_start", "date", "First day of the quarter.", filter="range", sortable=True)
PERIOD_END = Column("period_end", "date", "Last day of the quarter.")

OCCUPANCY = Resource(
    name="beds-occupancy",
    path="/beds/occupancy",
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
    refreshed="on_arrival",
)

# One organisation (trust or region code in the path, upper-cased and cut to the 20 characters a code may have) over
# every quarter loaded, oldest first.
ORGANISATION_HISTORY = replace(
    OCCUPANCY,
    name="beds-organisation-history",
    path="/beds/organisations/{org_code}/history",
    summary="One organisation's occupancy (a trust or region code) in every quarter loaded, per sector.",
    columns=tuple(replace(c, filter=None, path_transform="upper", max_length=20) if c.name == "org_code" else c
                  for c in OCCUPANCY.columns),
)

NATIONAL = Resource(
    name="beds-national",
    path="/beds/national",
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
    refreshed="on_arrival",
)

PERIODS = Resource(
    name="beds-periods",
    path="/beds/periods",
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
    refreshed="on_arrival",
)

SPECIALTIES = Resource(
    name="beds-specialties",
    path="/beds/specialties",
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
    refreshed="on_arrival",
)


# What the nhs_beds family's API serves from this module, under its prefix /beds (backend/api/catalogue.py). Without
# drop_types, a resource is built from its family's: the KH03 workbooks.
RESOURCES = (OCCUPANCY, ORGANISATION_HISTORY, NATIONAL, PERIODS, SPECIALTIES)

# Said when a mart behind the API is not built yet (backend/errors.py): how these, built when a workbook arrives, come.
NOT_BUILT_HINT = "for the bed marts, upload a KH03 workbook with POST /api/v1/drops"
