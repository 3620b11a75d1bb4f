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

from elt.readers.workbook_guard import DEFAULT_LIMITS, LIMIT_FIELDS, WorkbookLimits

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
    families_dir: Path = Field(REPO_ROOT / "elt" / "families", description="Source families (*.yml): which drop types "
                               "each groups, and when its ingest DAG runs (elt/families).")
    connectors_dir: Path = Field(REPO_ROOT / "airflow" / "connectors", description="Connector declarations "
                                 "(*.yml): what moves between the warehouse and elsewhere, and when (elt/connectors).")
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


    # --- what one workbook may cost (the loader, POST /api/v1/drops and `elt validate` alike) ----------------
    # Defaults: WorkbookLimits (elt/readers/workbook_guard.py); why: docs/decisions/0012-workbook-cost-limits.md.
    workbook_max_file_bytes: int = Field(
        DEFAULT_LIMITS.max_file_bytes, ge=1, description="Largest workbook file (.xlsx or .xls) read, in bytes.")
    workbook_max_parts: int = Field(
        DEFAULT_LIMITS.max_parts, ge=1, description="Most parts (zip members) an .xlsx may hold; a real one has tens.")
    workbook_max_inflated_bytes: int = Field(
        DEFAULT_LIMITS.max_inflated_bytes, ge=1, description="Most bytes the parts of an .xlsx may inflate to "
        "together, counted while inflating (an .xls: the most bytes of records its sheets may be read from).")
    workbook_max_compression_ratio: int = Field(
        DEFAULT_LIMITS.max_compression_ratio, ge=1, description="Most times a part may inflate over its "
        "compressed size once past 1 MiB (real workbooks: 5 to 20; a zip bomb: about 1,000).")
    workbook_max_rows: int = Field(
        DEFAULT_LIMITS.max_rows, ge=1, description="Last row a sheet's cells (or its declared used range) may reach.")
    workbook_max_columns: int = Field(
        DEFAULT_LIMITS.max_columns, ge=1, description="Last column a sheet's cells (or its declared used range) "
        "may reach.")
    workbook_max_cells: int = Field(
        DEFAULT_LIMITS.max_cells, ge=1, description="Most cells of one sheet, and of the grid from A1 to its last "
        "row and column, which is what the readers hold in memory (an .xls: all its sheets together).")
    workbook_max_seconds: float = Field(
        DEFAULT_LIMITS.max_seconds, gt=0, description="Longest the slow reader (openpyxl, for an .xlsx "
        "python-calamine cannot open) may take over one workbook.")

    def workbook_limits(self) -> WorkbookLimits:
        """The workbook limits above, as the readers take them."""
        return WorkbookLimits(**{name: getattr(self, f"workbook_{name}") for name in LIMIT_FIELDS})

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
