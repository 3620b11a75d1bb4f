"""Drop a file: upload a workbook or CSV (or give its URL) as one of the drop types this key may drop, see the API's
checks pass or say which rule the file breaks, follow its run to success or to the reason it failed, then go to the
page its data feeds."""

from __future__ import annotations

import streamlit as st

from backend.dashboard import ui
from backend.dashboard.client import ApiProblem
from backend.dashboard.views import page_for_dag, role_rank

view, context = ui.start(__file__)
UPLOAD = context.spec["paths"]["/api/v1/drops"]["post"]
RUN = "_drop_run"


def droppable() -> list[str]:
    """The drop types whose contract lets this key's role drop them (the API's x-drop-roles)."""
    rank = role_rank(context.roles, context.role)
    return [name for name, roles in sorted(UPLOAD.get("x-drop-roles", {}).items())
            if rank >= role_rank(context.roles, roles["drop_role"])]


def extra_fields(drop_type: str) -> dict[str, str]:
    """The form fields `drop_type` needs beside the file (a claims batch's payer and month), as the API lists them
    (x-drop-fields), with the API's description of each."""
    schema = UPLOAD["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    return {name: schema.get(name, {}).get("description", "") for name in UPLOAD.get("x-drop-fields", {}).get(drop_type, [])}


def send(drop_type: str, upload, url: str, fields: dict[str, str]) -> None:
    try:
        if upload is not None:
            answer = context.api.drop(drop_type, upload.name, upload.getvalue(), fields)
        else:
            answer = context.api.drop_from_url(drop_type, url, fields)
    except ApiProblem as problem:
        rule = problem.details.get("rule")
        st.error(f"Not accepted ({problem.status} {problem.code}): {problem.message}" + (f" Rule: `{rule}`." if rule
                                                                                       else ""))
        if problem.details.get("key_pattern"):
            st.caption(f"Names this drop type takes: `{problem.details['key_pattern']}`")
        return
    st.session_state[RUN] = answer


def show_run(answer: dict) -> None:
    st.success(f"Accepted: {answer['message']}")
    if answer.get("warning"):
        st.warning(answer["warning"])
    if not answer.get("run_id"):
        return
    st.subheader("Its run")
    st.button("Refresh", key="refresh_run")
    try:
        run = context.api.run(answer["run_id"])
    except ApiProblem as problem:
        ui.show_problem(problem)
        return
    drop = run.get("drop") or {}
    st.markdown(f"`{run['dag_id']}` run `{run['run_id']}`: **{run['state']}**"
                + (f" · file {drop.get('status')}, {drop.get('rows_loaded')} rows loaded, {drop.get('rows_rejected')} "
                   "rejected" if drop else ""))
    marts = run.get("marts") or {}
    if run.get("message"):
        st.caption(run["message"])
    if run["state"] == "failed" or drop.get("status") in ("quarantined", "rejected"):
        st.error(f"The file did not load: {drop.get('error') or run.get('message') or 'see the Pipeline page'}")
    elif run["state"] == "success" and drop.get("status") == "loaded":
        if marts.get("state") == "success":
            target = page_for_dag(run["dag_id"])
            st.success("Loaded and the marts are built.")
            if target:
                st.page_link(str(target.path), label=f"See it on {target.title}", icon=target.icon)
        else:
            st.info(f"Loaded; the marts are {marts.get('state') or 'not started yet'}: refresh to follow them.")


types = droppable()
if not types:
    st.info(f"No drop type may be dropped with a key of role {context.role}.")
    st.stop()
drop_type = st.selectbox("Drop type", types, key="drop_type")  # outside the form: its fields follow the choice
with st.form("drop"):
    upload = st.file_uploader("A workbook or CSV", type=["csv", "xlsx", "xls"], key="drop_file")
    url = st.text_input("... or its URL (an allowed host, https)", key="drop_url")
    fields = {name: st.text_input(name, help=text, key=f"field_{name}") for name, text in extra_fields(drop_type).items()}
    submitted = st.form_submit_button("Drop it")
if submitted:
    if upload is None and not url.strip():
        st.warning("Choose a file or give its URL.")
    else:
        st.session_state.pop(RUN, None)
        send(drop_type, upload, url.strip(), fields)
if st.session_state.get(RUN):
    show_run(st.session_state[RUN])
