"""What every page does the same way: the key in the sidebar, the caller's role, filters that are the API's query
parameters, each section's provenance (`as_of`, source files), its CSV download (the API's CSV), its empty state
and its errors. Pages (pages/*.py) only choose what to show."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import altair as alt
import pandas as pd
import streamlit as st

from backend.dashboard.client import ROLES_FALLBACK, Api, ApiProblem, Rows
from backend.dashboard.config import DashboardSettings
from backend.dashboard.views import DROP_PAGE, View, view, visible

KEY = "api_key"
CONTEXT = "_dashboard_context"
ALL = "All"
HOW_TO_GET_A_KEY = ("Ask whoever runs the warehouse for an API key, or make one: "
                    "`./start.sh api-key create --name \"my dashboard\" --role analyst` (clinician or admin to see "
                    "more). It is printed once; paste it in the sidebar.")


@dataclass
class Context:
    api: Api
    spec: dict[str, Any]
    role: str
    roles: list[str]
    settings: DashboardSettings
    view: View | None = None  # the page being shown: it reads only the endpoints it declares (views.py)


# --- the key, the caller, the API's description ---------------------------------------------------------------
def key_box() -> None:
    st.sidebar.text_input("API key", type="password", key=KEY, placeholder="hwk_...",
                          help="Your API key, kept for this browser session only. " + HOW_TO_GET_A_KEY)


@st.cache_data(ttl=60, show_spinner=False)
def _spec(base_url: str, timeout: float) -> dict[str, Any]:
    return Api(base_url, None, timeout).spec()


def _whoami(api: Api) -> dict[str, Any]:
    """The caller, asked once per key per session (a refused key is asked again on every run, and refused)."""
    digest = hashlib.sha256((api.key or "").encode()).hexdigest()
    known = st.session_state.get("_whoami")
    if known and known[0] == digest:
        return known[1]
    body = api.whoami()
    st.session_state["_whoami"] = (digest, body)
    return body


def connect() -> Context | None:
    """The caller's context, or None after saying why there is none (no key yet, key refused, API down)."""
    settings = DashboardSettings()
    key = (st.session_state.get(KEY) or "").strip()
    if not key:
        st.info("Paste your API key in the sidebar to see the dashboard. " + HOW_TO_GET_A_KEY)
        return None
    api = Api(settings.base_url(), key, settings.timeout_seconds, settings.max_rows)
    try:
        spec = _spec(settings.base_url(), settings.timeout_seconds)
        me = _whoami(api)
    except ApiProblem as problem:
        show_problem(problem)
        return None
    context = Context(api, spec, me["role"], list(me.get("roles") or ROLES_FALLBACK), settings)
    st.session_state[CONTEXT] = context
    return context


def start(page_file: str) -> tuple[View, Context]:
    """A page's beginning: its title and its caller; stops the page (with the reason) when there is no caller, or
    when the caller's role may read none of it."""
    v = view(Path(page_file).stem)
    st.title(v.title)
    context = st.session_state.get(CONTEXT) or connect()
    if context is None:
        st.stop()
    if not visible(v, context.spec, context.roles, context.role):
        st.warning(f"This page needs a role above {context.role}: your key may read none of it.")
        st.stop()
    context.view = v
    return v, context


# --- errors and empty states -------------------------------------------------------------------------------------
def show_problem(problem: ApiProblem) -> None:
    """What happened, in the API's words (which never hold a row's values), and what to do."""
    if problem.kind == "unreachable":
        st.error(f"The API did not answer: {problem.message}. Is it running (`./start.sh` starts it)? "
                 "DASHBOARD_API_URL says where the dashboard looks for it.")
    elif problem.kind == "key":
        st.error(f"The API refused this key: {problem.message}")
    elif problem.kind == "forbidden":
        st.warning(f"Your key's role may not read this: {problem.message}")
    elif problem.kind == "not_built":
        empty_state(f"No data yet: {problem.message}")
    else:
        st.error(f"The API answered {problem.status} ({problem.code}): {problem.message}")


def empty_state(text: str) -> None:
    st.info(text + " Drop a file on the **Drop a file** page: its charts appear here when its run has finished.")
    try:
        st.page_link(str(DROP_PAGE.path), label="Drop a file", icon=DROP_PAGE.icon)
    except Exception:  # noqa: BLE001 - outside the navigation (a page run on its own) there is no page to link to
        pass


# --- the API's query parameters as filters -----------------------------------------------------------------------
def parameter(context: Context, path: str, name: str) -> dict[str, Any]:
    """The query parameter's schema as the API describes it; a filter the API does not take is a programming error."""
    for p in context.spec["paths"][path]["get"]["parameters"]:
        if p["name"] == name and p["in"] == "query":
            return p["schema"]
    raise KeyError(f"{path} takes no query parameter {name}")


def page_size(context: Context, path: str) -> int:
    return int(parameter(context, path, "limit").get("maximum") or 100)


def choice(context: Context, path: str, name: str, label: str, *, options: list[Any] | None = None,
           default: Any = None, everything: bool = True, labels: dict[Any, str] | None = None) -> Any:
    """A select box for one of the endpoint's query parameters: its values as the API enumerates them (or as the data
    has them, `options`), and `All` (no filter) unless `everything` is False. None: no filter."""
    values = list(options if options is not None else parameter(context, path, name).get("enum", []))
    shown = ([ALL] if everything else []) + values
    index = shown.index(default) if default in shown else 0
    picked = st.selectbox(label, shown, index=index, key=f"{path}?{name}",
                          format_func=lambda v: (labels or {}).get(v, str(v)))
    return None if picked == ALL else picked


def date_range(context: Context, path: str, name: str, label: str) -> dict[str, str | None]:
    """Two of the endpoint's query parameters, `<name>_from` and `<name>_to` (inclusive), as one date range picker;
    no range chosen: no filter."""
    for bound in ("_from", "_to"):
        parameter(context, path, name + bound)  # only the API's own filters
    picked = st.date_input(label, value=(), key=f"{path}?{name}", format="YYYY-MM-DD")
    days = list(picked) if isinstance(picked, tuple | list) else [picked] if picked else []
    start = days[0] if days else None
    end = days[1] if len(days) > 1 else start  # one day picked so far: that day
    return {f"{name}_from": start.isoformat() if start else None, f"{name}_to": end.isoformat() if end else None}


# --- a section: rows, provenance, download -----------------------------------------------------------------------
def concrete(path: str, values: dict[str, str] | None) -> str:
    for name, value in (values or {}).items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    return path


def fetch(context: Context, path: str, params: dict[str, Any], *, values: dict[str, str] | None = None,
          quiet: bool = False, none: str | None = None) -> Rows | None:
    """The endpoint's rows for these filters, with their provenance and CSV download shown under the section; None
    after the empty state or the problem is shown (`quiet`: nothing shown, for a lookup that feeds a filter; `none`:
    what to say when no row matches, where that is news rather than a want of data)."""
    if context.view is not None and path not in context.view.reads:
        raise KeyError(f"{context.view.file} reads {path}, which views.py does not declare it reads")
    for name in params:
        parameter(context, path, name)  # only the API's own filters
    url = concrete(path, values)
    try:
        rows = context.api.rows(url, params, page_size(context, path))
    except ApiProblem as problem:
        if not quiet:
            show_problem(problem)
        return None
    if quiet:
        return rows
    provenance(rows)
    if not rows.rows:
        if none or any(v is not None for v in params.values()) or values:
            st.info(none or "No rows match these filters; widen them.")
        else:
            empty_state("No data yet: the mart is built but holds no rows.")
        return None
    if rows.truncated:
        st.caption(f"Showing the first {len(rows.rows):,} of {rows.total:,} rows (DASHBOARD_MAX_ROWS); the CSV has "
                   "them all.")
    download(context, url, params)
    return rows


def sources_text(sources: list[int]) -> str:
    if not sources:
        return "no source file (a live table)"
    ids = sorted(sources)
    if len(ids) <= 8:
        return "source files (ledger ids) " + ", ".join(map(str, ids))
    return f"{len(ids)} source files (ledger ids {ids[0]} to {ids[-1]})"


def provenance(rows: Rows) -> None:
    st.caption(f"`{rows.source_table}` · as of {rows.as_of or 'never built'} · {sources_text(rows.sources)} · "
               f"{rows.total:,} row{'' if rows.total == 1 else 's'}{'' if rows.total_is_exact else ' (estimated)'}")


def download(context: Context, url: str, params: dict[str, Any]) -> None:
    """The API's CSV of the same filters, fetched when the button is pressed."""
    api, query = context.api, dict(params)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    st.download_button("Download CSV", data=lambda: api.csv(url, query), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv:{url}?{sorted(query.items(), key=str)}", on_click="ignore")


def table(data: pd.DataFrame, key: str) -> None:
    """A table, in a container named `key` (how a test, or the screenshot script, finds it)."""
    with st.container(key=key):
        st.dataframe(data, hide_index=True)


def frame(rows: Rows | None) -> pd.DataFrame:
    return pd.DataFrame(rows.rows if rows else [])


# --- charts ------------------------------------------------------------------------------------------------------
def line_chart(data: pd.DataFrame, x: str, y: str | list[str], *, color: str | None = None,
               lines: tuple[tuple[float, str], ...] = (), y_format: str = "") -> None:
    """A line per series (`color`, or one per column in `y`), with horizontal reference lines (value, label)."""
    if isinstance(y, list):
        data = data.melt(id_vars=[x], value_vars=y, var_name="series", value_name="value")
        y, color = "value", "series"
    axis = alt.Axis(format=y_format) if y_format else alt.Axis()
    chart = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X(f"{x}:T", title=None), y=alt.Y(f"{y}:Q", axis=axis, title=None),
        **({"color": alt.Color(f"{color}:N", title=None)} if color else {}))
    for value, label in lines:
        rule = pd.DataFrame({"y": [value], "label": [label]})
        chart += alt.Chart(rule).mark_rule(strokeDash=[6, 4], color="firebrick").encode(y="y:Q")
        chart += alt.Chart(rule).mark_text(align="left", dx=4, dy=-6, color="firebrick").encode(
            y="y:Q", text="label:N")
    st.altair_chart(chart, width="stretch")


def bar_chart(data: pd.DataFrame, category: str, value: str, *, y_format: str = "") -> None:
    axis = alt.Axis(format=y_format) if y_format else alt.Axis()
    chart = alt.Chart(data).mark_bar().encode(
        x=alt.X(f"{category}:N", sort="-y", title=None), y=alt.Y(f"{value}:Q", axis=axis, title=None),
        tooltip=[category, value])
    st.altair_chart(chart, width="stretch")
