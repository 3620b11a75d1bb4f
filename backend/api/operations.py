"""GET /api/v1/drops: the file ledger, for the people who run the warehouse: every file that arrived, its
drop type and reporting period, what happened to it (loaded, rejected, quarantined, duplicate,
superseded), rows read, loaded and rejected, and the reason when it did not load. GET /api/v1/pipeline-runs: every ingest and marts run the DAGs recorded, its state,
the files it loaded and, when it failed, the failed tasks and the first reason (class and place, never a row's
values: elt/runs.py). The admin role only.
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


RUN_STATES = ("running", "success", "failed")

PIPELINE_RUNS = Resource(
    name="pipeline-runs",
    path="/pipeline-runs",
    table="ops.pipeline_runs",
    summary="Every run of the ingest and marts DAGs as the DAGs recorded it: state, files loaded, failed tasks, why.",
    columns=(
        Column("dag_id", description="The DAG: <family>_ingest or <family>_marts.", filter="eq", sortable=True),
        Column("run_id", description="Airflow's run id."),
        Column("state", description="running (loads recorded, dbt to come), success or failed.", filter="eq",
               choices=RUN_STATES),
        Column("started_at", "datetime", "When the run was first recorded.", sortable=True),
        Column("finished_at", "datetime", "When it ended; null while it runs."),
        Column("files_loaded", "integer", "Files the run loaded (ingest runs)."),
        Column("detail", description="The first failure's reason (the error's class and place), or a summary."),
        Column("failed_tasks", "text[]", "The tasks that failed."),
    ),
    key=("dag_id", "run_id"),
    default_sort="-started_at",
    role="admin",
    built_by_dbt=False,
)


# One file's rejects, as `elt rejects FILE_ID` lists them: always for one file (a list of every file's rejects would
# be read by no one), in the order of its rows. Pages read the index on (file_id, row_number) (elt/warehouse/sql).
REJECTS = Resource(
    name="rejects",
    path="/rejects",
    table="ops.load_rejects",
    summary="One file's rejected rows (file_id required): row, column, the rule broken and what it means; never the "
            "value.",
    columns=(
        Column("file_id", "integer", "Ledger id of the file (`/api/v1/drops`).", filter="eq", required=True),
        Column("row_number", "integer", "The data row in the file, from 1 (the row below the header; in a workbook, "
                                        "blank rows count), as in the raw table's `_row_number`.", sortable=True),
        Column("column_name", description="The contract's column the rule is about.", filter="eq"),
        Column("rule", description="The contract rule the row broke (required, type, range, allowed, pattern, or a "
                                   "rule of the drop type's own).", filter="eq"),
        Column("message", description="What the rule asks of the column, as the contract words it (never the value)."),
        Column("reject_id", "integer", "Id of this reject: a row breaking several rules has one per rule."),
    ),
    key=("reject_id",),
    default_sort="row_number",
    role="admin",
    built_by_dbt=False,
)


# The platform's own lists (no family): backend/api/catalogue.py serves them after the families' resources.
RESOURCES = (DROPS, PIPELINE_RUNS, REJECTS)
