"""The dashboard's entry point (`python -m backend.dashboard` serves it): the key box in the sidebar, then the pages
this key's role may see (backend/dashboard/views.py; each page is a file under pages/), or, without a usable key,
what to do."""

from __future__ import annotations

import streamlit as st

from backend.dashboard import ui
from backend.dashboard.views import VIEWS, visible

st.set_page_config(page_title="Health warehouse", page_icon=":material/monitoring:", layout="wide")
ui.key_box()
st.session_state.pop(ui.CONTEXT, None)  # asked again on every run: the key may have changed


def welcome() -> None:
    st.title("Health warehouse")
    st.markdown("Bed occupancy, clinic activity, claims and the pipeline's state, read through the warehouse's API "
                "with your key: you see what your key's role may read.")


context = ui.connect()
if context is None:
    pages = [st.Page(welcome, title="Start", default=True)]
else:
    st.sidebar.caption(f"Signed in with a key of role **{context.role}** · API {context.settings.base_url()}")
    pages = [st.Page(str(v.path), title=v.title, icon=v.icon, url_path=v.url_path)
             for v in VIEWS if visible(v, context.spec, context.roles, context.role)]
st.navigation(pages).run()
