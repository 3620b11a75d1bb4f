"""API settings from the environment: `DATABASE_URL` plus `API_*` variables (see .env.example)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", frozen=True)

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5433/warehouse",
        validation_alias=AliasChoices("API_DATABASE_URL", "DATABASE_URL"),
        description="Warehouse Postgres; the API reads only published marts.",
    )
    cors_origins: str = Field("http://localhost:3000", description="Comma-separated origins allowed by CORS.")
    max_page_size: int = Field(500, ge=1, le=10_000, description="Largest `limit` of a JSON page.")
    default_page_size: int = Field(100, ge=1, description="Rows per JSON page when `limit` is not given.")
    max_csv_rows: int = Field(1_000_000, ge=1, description="Most rows one CSV download streams (then X-Next-Cursor).")
    db_role: str = Field("api_reader", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$", description="Postgres role the API's connections switch to ('' keeps the "
                         "login user's): read access to the published marts only.")
    rate_limit: str = Field("600 per minute", description="Requests per API key on /api/v1 (flask-limiter "
                            "syntax, e.g. '100 per minute; 5000 per day'); empty turns limits off.")
    rate_limit_storage: str = Field("memory://", description="Where the counters live: memory:// is per API process.")
    freshness_hours: float = Field(26, gt=0, description="/ready calls a mart stale when its build is older than "
                                   "this (the nightly run starts at 02:00 UTC).")
    statement_timeout_ms: int = Field(5_000, ge=100, description="Postgres statement_timeout for API queries.")
    pool_size: int = 5
    dbt_docs_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "dbt" / "target",
        description="Where `elt docs` (dbt docs generate) writes index.html, manifest.json and catalog.json.",
    )

    def sqlalchemy_url(self) -> str:
        url = self.database_url
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url
