"""The API's endpoints: the list endpoints of every source family's catalogue (backend/api/catalogue.py, one
blueprint per family under /api/v1), drops and runs (uploads.py), plus /health, /ready, /openapi.json, /docs and
/dbt-docs/."""
