"""API settings from the environment: `DATABASE_URL` plus `API_*` variables (see .env.example).

The API logs in as its own logins, never as the warehouse owner: `health_api` for its reads (member of
`api_reader` only) and `health_api_drops` to register a dropped file in the ledger (`drop_registrar` only),
with API_DB_PASSWORD and API_DROPS_DB_PASSWORD; `elt init-db` creates both from the same variables
(elt/warehouse/roles.py). The database URL then says only where the warehouse is.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from elt.warehouse.roles import API_LOGIN, DROPS_LOGIN, Login


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", frozen=True, populate_by_name=True)

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5433/warehouse",
        validation_alias=AliasChoices("API_DATABASE_URL", "DATABASE_URL"),
        description="Warehouse Postgres: its host, port, database and parameters (sslmode ...). Its user and "
                    "password are used only when API_DB_PASSWORD is unset (a login a database admin made).",
    )
    db_password: SecretStr | None = Field(None, validation_alias=API_LOGIN.password_variable, description=(
        f"Password of the login {API_LOGIN.name}, which the API reads as (member of api_reader only)."))
    drops_db_password: SecretStr | None = Field(None, validation_alias=DROPS_LOGIN.password_variable, description=(
        f"Password of the login {DROPS_LOGIN.name}, which registers a dropped file in the ledger and can do "
        "nothing else."))
    cors_origins: str = Field("http://localhost:3000", description="Comma-separated origins allowed by CORS.")
    max_page_size: int = Field(500, ge=1, le=10_000, description="Largest `limit` of a JSON page.")
    default_page_size: int = Field(100, ge=1, description="Rows per JSON page when `limit` is not given.")
    max_csv_rows: int = Field(1_000_000, ge=1, description="Most rows one CSV download streams (then X-Next-Cursor).")
    # --- the server (backend/serve.py reads these) -------------------------------------------------------------
    workers: int = Field(2, ge=1, description="granian worker processes.")
    threads: int = Field(8, ge=2, description="Blocking threads per worker: requests one worker serves at once. "
                                             "A slow client holds one thread; no worker timeout cuts it off.")
    csv_streams: int = Field(4, ge=1, description="CSV downloads one worker streams at once; one more is a 503 "
                             "with Retry-After. Below API_THREADS, so downloads to slow clients always leave "
                             "threads for other calls.")
    shutdown_grace_seconds: int = Field(30, ge=1, le=1800, description="On SIGTERM, how long requests in progress "
                                        "(a CSV download) may go on before the workers are killed: a download "
                                        "still going then is cut off, visibly (no last chunk).")
    access_log: bool = Field(True, description="One line per request on standard output (address, time, method, "
                             "path without its query string, status, milliseconds). Turn off where a proxy or load "
                             "balancer in front already logs every request: it costs the API some CPU per request.")
    db_role: str = Field("api_reader", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$", description="Postgres role the API's "
                         "connections switch to ('' keeps the login's): read access to the published marts only. "
                         "Not a boundary by itself (a connection may RESET ROLE): the login is.")
    rate_limit: str = Field("600 per minute", description="Requests per API key on /api/v1 (flask-limiter "
                            "syntax, e.g. '100 per minute; 5000 per day'); empty turns limits off.")
    rate_limit_storage: str = Field("memory://", description="Where the counters live: memory:// is per API process.")
    auth_failure_limit: str = Field("20 per minute", description="Failed authentications (401s) one client address "
                                    "may make on /api/v1; over it, every request from the address is a 429 until "
                                    "the window passes. Empty turns it off.")
    freshness_hours: float = Field(26, gt=0, description="/ready calls a mart stale when its build is older than "
                                   "this (the nightly run starts at 02:00 UTC).")
    statement_timeout_ms: int = Field(5_000, ge=100, description="Postgres statement_timeout for API queries.")
    key_cache_seconds: float = Field(5, ge=0, le=300, description="How long an API process remembers a key it found "
                                     "valid, so that a client's calls cost one key lookup per this interval: a "
                                     "revoked key is refused within this many seconds. 0: look the key up on every call.")
    build_stamp_seconds: float = Field(2, ge=0, le=60, description="How long an API process trusts the build stamp "
                                       "(as_of, sources) it last read for a mart: a conditional request (If-None-Match) "
                                       "sees a rebuilt mart's new ETag within this many seconds, and a page re-reads "
                                       "the mart's source files from the ledger this often (a new as_of at once). "
                                       "0: read both on every request.")
    pool_size: int = Field(4, ge=1, le=100, description="Connections to the warehouse per worker, and so the "
                           "transactions one worker runs at once; a request that needs one while all are in use waits "
                           "for one. An audited page holds its connection while its audit row is committed to disk; "
                           "far more transactions at once than the database has cores make each one cost Postgres more "
                           "CPU (contention). CSV downloads have their own connections (API_CSV_STREAMS).")
    pool_timeout_seconds: float = Field(10, gt=0, le=300, description="How long a request waits for a connection "
                                        "(API_POOL_SIZE all in use) before it is answered 503 with Retry-After.")
    dbt_docs_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "dbt" / "target",
        description="Where `elt docs` (dbt docs generate) writes index.html, manifest.json and catalog.json.",
    )

    # --- drops through the API (POST /api/v1/drops, /drops/from-url; GET /api/v1/runs) -----------------------
    upload_max_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest file an upload or a fetch by URL "
                                  "may bring (a larger one is a 413); Flask's MAX_CONTENT_LENGTH is this plus room "
                                  "for the multipart envelope.")
    upload_role: str | None = Field(None, description="No longer read: the role needed to drop a file is declared "
                                    "per drop type in its contract (drop_role). Set, it only earns a warning.")
    fetch_allowed_hosts: str = Field("www.england.nhs.uk", description="Comma-separated hosts (and their subdomains) "
                                     "that /drops/from-url may fetch from; https only, public addresses only.")
    fetch_timeout_seconds: float = Field(30.0, gt=0, description="Longest a fetch by URL may take, redirects included.")
    airflow_url: str = Field("", description="Airflow's api-server (REST API v2), e.g. http://127.0.0.1:8080; empty: "
                             "http://127.0.0.1:$AIRFLOW_PORT, where ./start.sh runs it.")
    airflow_port: int = Field(8080, validation_alias=AliasChoices("API_AIRFLOW_PORT", "AIRFLOW_PORT"),
                              description="The local api-server's port when API_AIRFLOW_URL is empty.")
    airflow_user: str = Field("admin", validation_alias=AliasChoices("API_AIRFLOW_USER", "AIRFLOW_ADMIN_USER"),
                              description="Airflow user that triggers the ingest DAGs (simple auth manager).")
    airflow_password: SecretStr = Field(SecretStr("admin"), validation_alias=AliasChoices(
        "API_AIRFLOW_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"), description="That user's password.")
    airflow_timeout_seconds: float = Field(10.0, gt=0, description="Longest one call to Airflow may take before the "
                                           "API gives up on it (an upload is then stored, with a warning).")

    @model_validator(mode="after")
    def _downloads_leave_threads_free(self) -> ApiSettings:
        if self.csv_streams >= self.threads:
            raise ValueError(f"API_CSV_STREAMS ({self.csv_streams}) must be below API_THREADS ({self.threads}), so "
                             "that CSV downloads to slow clients never take every thread of a worker")
        return self

    def airflow_base_url(self) -> str:
        return (self.airflow_url or f"http://127.0.0.1:{self.airflow_port}").rstrip("/")

    def login_url(self, login: Login, password: SecretStr | None) -> str:
        """libpq URL to log in as `login`: database_url's host, port, database and parameters with that login and
        password; database_url as it is when no password is configured."""
        if password is None or not password.get_secret_value():
            return self.database_url
        parts = urlsplit(self.database_url)
        userinfo = f"{quote(login.name, safe='')}:{quote(password.get_secret_value(), safe='')}"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc.rpartition('@')[2]}"))

    def reads_url(self) -> str:
        return self.login_url(API_LOGIN, self.db_password)

    def drops_url(self) -> str:
        return self.login_url(DROPS_LOGIN, self.drops_db_password)

    def sqlalchemy_url(self) -> str:
        """The reads' URL for SQLAlchemy (psycopg 3 driver)."""
        url = self.reads_url()
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url
