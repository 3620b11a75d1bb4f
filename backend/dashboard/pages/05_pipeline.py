"""Pipeline: each mart's build time and whether it is fresh (/ready, every key), the files that arrived by status
with the reason a file did not load, one file's rejected rows (row, column, rule: never the value the row held, which
the API does not serve), and the runs of the DAGs (the file ledger, the rejects and the runs: admins, as the API
says)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from backend.dashboard import ui
from backend.dashboard.client import ApiProblem
from backend.dashboard.views import may_read

view, context = ui.start(__file__)
FILES, REJECTS, RUNS = view.reads

st.subheader("Marts")
try:
    ready = context.api.ready()
except ApiProblem as problem:
    ui.show_problem(problem)
    ready = None
if ready:
    st.caption(f"/ready: **{ready['status']}** · fresh means built within {ready['freshness_hours']} hours; marts "
               f"rebuilt when their drop arrives (bed occupancy) are never stale · last file loaded "
               f"{ready.get('last_file_loaded_at') or 'never'}")
    marts = pd.DataFrame([{"mart": name, "built": m["built"], "has_rows": m["has_rows"], "as_of": m["built_at"],
                           "age_hours": m.get("age_hours"), "fresh": m["fresh"],
                           "refreshed": m.get("refreshed", "nightly")} for name, m in ready["marts"].items()])
    ui.table(marts, "marts")

st.subheader("Files")
if not may_read(context.spec, context.roles, context.role, FILES):
    st.info(f"The file ledger, its rejected rows and the runs are for the admin role; your key is {context.role}.")
    st.stop()
status = ui.choice(context, FILES, "status", "Status")
files = ui.fetch(context, FILES, {"status": status})
if files:
    data = ui.frame(files)
    counts = data.groupby("status", as_index=False).size().rename(columns={"size": "files"})
    ui.bar_chart(counts, "status", "files")
    ui.table(data[["file_id", "drop_type", "key", "status", "period_start", "rows_read", "rows_loaded",
                       "rows_rejected", "error", "finished_at"]], "files")

st.subheader("Rejected rows")
# The files listed above that kept rows aside (loaded with rejects, or rejected whole), newest first.
with_rejects = {f["file_id"]: f"{f['file_id']} · {f['key']} · {f['rows_rejected']} row(s) · {f['status']}"
                for f in (files.rows if files else []) if f["rows_rejected"]}
if not with_rejects:
    st.info("No file listed above has rejected rows.")
else:
    file_id = st.selectbox("File", list(with_rejects), format_func=with_rejects.get, key=f"{REJECTS}?file_id",
                           help="Its rows that broke a rule of the drop type's contract (`elt rejects FILE_ID`).")
    rejects = ui.fetch(context, REJECTS, {"file_id": file_id})
    if rejects:
        ui.table(ui.frame(rejects)[["row_number", "column_name", "rule", "message"]], "rejects")

st.subheader("Runs")
state = ui.choice(context, RUNS, "state", "Run state")
runs = ui.fetch(context, RUNS, {"state": state})
if runs:
    ui.table(ui.frame(runs)[["dag_id", "run_id", "state", "started_at", "finished_at", "files_loaded",
                                 "failed_tasks", "detail"]], "runs")
