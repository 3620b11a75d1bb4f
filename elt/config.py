"""One settings object, built once from the environment (and `.env`), passed down explicitly.

No other module reads environment variables: they take a `Settings` argument instead, which keeps every
step runnable from tests and from Airflow with the same configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Warehouse, object storage and dbt locations. Every field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5433/warehouse",
        description="Warehouse Postgres (libpq URL). ./start.sh points it at the embedded server.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint; unset means AWS S3 with the usual AWS_* credentials."
    )
    s3_bucket: str = Field("health-landing", description="Landing bucket that drops arrive in.")
    aws_default_region: str = "us-east-1"
    contracts_dir: Path = Field(REPO_ROOT / "elt" / "contracts", description="Drop contracts (*.yml).")
    dbt_project_dir: Path = Field(REPO_ROOT / "dbt", description="The dbt project.")
    dbt_target: str = Field("dev", description="dbt target in dbt/profiles.yml.")
    dbt_unit_tests: bool = Field(
        False,
        description="Run dbt's unit tests in every build and test command too. Off by default, as dbt advises for "
        "production: their inputs are fixed rows, so they check the SQL (once per change, in `./start.sh test`), "
        "not the night's data, and they cost about 0.4 s each.",
    )
    sdc_threshold: int = Field(
        10, ge=1, le=999_999,
        description="Statistical disclosure control of the de-identified marts (the analytics schema: BI tools and the "
        "API's analyst role): a count of people, or of events about people, from 1 to this minus one is withheld "
        "(null, with an is_..._suppressed marker). 1 withholds nothing. Passed to dbt as DBT_SDC_THRESHOLD.",
    )
    sdc_rounding_base: int = Field(
        5, ge=1, le=999_999,
        description="Published counts at or above SDC_THRESHOLD are rounded to the nearest multiple of this, halves "
        "up (NHS England's practice: 5). 1 does not round. Passed to dbt as DBT_SDC_ROUNDING_BASE; dbt refuses a "
        "pair under which a published figure would fall below the threshold or stand for one count alone.",
    )

    # Passwords of the project's own logins (elt/warehouse/roles.py, LOGINS), which every start creates or
    # corrects. Unset: the login is left as a database admin made it (or not created). ./start.sh generates them.
    api_db_password: SecretStr | None = Field(None, description="Password of the API's login `health_api` (reads).")
    api_drops_db_password: SecretStr | None = Field(
        None, description="Password of `health_api_drops`, the login the API registers dropped files with.")
    bi_db_password: SecretStr | None = Field(None, description="Password of `health_bi`, the BI tools' login.")

    def pg_parts(self) -> dict[str, str]:
        """Host, port, user, password and database of `database_url`, for tools that want them apart (dbt)."""
        url = urlsplit(self.database_url)
        return {
            "host": url.hostname or "127.0.0.1",
            "port": str(url.port or 5432),
            "user": unquote(url.username or "postgres"),
            "password": unquote(url.password or ""),
            "dbname": url.path.lstrip("/") or "postgres",
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment read once)."""
    return Settings()
