"""Dashboard settings from the environment: `DASHBOARD_*` variables (see .env.example). The dashboard holds no
database URL and no key of its own: it reads through the API, with the key its user pastes."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore", frozen=True)

    api_url: str = Field("http://127.0.0.1:5000", description="The API the dashboard reads through (its base URL).")
    port: int = Field(8501, ge=1, le=65535, description="The port the dashboard listens on (./start.sh: loopback).")
    address: str = Field("127.0.0.1", description="The address it listens on: loopback, or 0.0.0.0 in a container.")
    timeout_seconds: float = Field(30, gt=0, description="Longest one call to the API may take.")
    max_rows: int = Field(10_000, ge=1, description="Most rows one chart or table reads (page by page); more is said "
                                                    "on the page, and the CSV download has them all.")

    def base_url(self) -> str:
        return self.api_url.rstrip("/")
