"""The dashboard (issue 17): a Streamlit app that shows the marts as charts and tables, reading only through the
Flask API with the user's key (`python -m backend.dashboard`; docs/decisions/0033-dashboard-reads-through-the-api.md)."""
