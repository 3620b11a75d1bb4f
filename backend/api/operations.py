"""GET /api/v1/drops: the file ledger, for the people who run the warehouse: every file that arrived, its
drop type and reporting period, what happened to it (loaded, rejected, quarantined, duplicate,
superseded), rows read, loaded and rejected, and the reason when it did not load. The admin role only.
"""

from __future__ import annotations

from backend.api.listing import Column, Resource

STATUSES = ("discovered", "loading", "loaded", "rejected", "quarantined", "duplicate", "superseded")

DROPS = Resource(
    name="drops",
    path="/drops",
    table="ops.file_ledger",
    summary="The file ledger: every file that arrived, what happened to it, rows loaded and rejected, reasons.",
    columns=(
        Column("file_id", "integer", "Ledger id (the `sources` of every mart's meta).", sortable=True),
        Column("drop_type", description="The contract the file was read with.", filter="eq"),
        Column("key", description="Object key in the landing bucket when it arrived."),
        Column("status", description="discovered, loading, loaded, rejected, quarantined, duplicate or superseded.",
               filter="eq", choices=STATUSES),
        Column("period_start", "date", "First day the file reports on.", filter="range"),
        Column("period_end", "date", "Last day the file reports on."),
        Column("rows_read", "integer", "Data rows in the file."),
        Column("rows_loaded", "integer", "Rows that passed the contract."),
        Column("rows_rejected", "integer", "Rows kept aside with their reasons (`elt rejects FILE_ID`)."),
        Column("discovered_at", "datetime", "When the pipeline first saw the file.", sortable=True),
        Column("finished_at", "datetime", "When its load ended."),
        Column("error", description="Why the file did not load (rule, column, what to fix); null when it did."),
        Column("archived_key", description="Where the file is now (archive/ or quarantine/)."),
    ),
    key=("file_id",),
    default_sort="-file_id",
    role="admin",
    built_by_dbt=False,
)


# The platform's own list (no family): backend/api/catalogue.py serves it after the families' resources.
RESOURCES = (DROPS,)
