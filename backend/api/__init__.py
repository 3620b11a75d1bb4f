"""One blueprint per mart family under /api/v1, plus /health, /ready, /openapi.json, /docs and /dbt-docs/."""
