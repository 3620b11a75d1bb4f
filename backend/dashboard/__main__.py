"""`python -m backend.dashboard`: serve the dashboard with Streamlit, headless, with usage statistics off, on
DASHBOARD_ADDRESS:DASHBOARD_PORT. ./start.sh (elt/devstack) and the compose service both start it this way."""

from __future__ import annotations

import sys
from pathlib import Path

from backend.dashboard.config import DashboardSettings

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_options(settings: DashboardSettings) -> dict[str, object]:
    """Streamlit's own settings for a server: no browser to open, no telemetry, no file watcher reloading code."""
    return {"server.address": settings.address, "server.port": settings.port, "server.headless": True,
            "browser.gatherUsageStats": False, "server.fileWatcherType": "none", "client.toolbarMode": "viewer",
            "global.developmentMode": False}


def main() -> int:
    from streamlit.web import cli

    settings = DashboardSettings()
    flags = [f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
             for name, value in streamlit_options(settings).items()]
    sys.argv = ["streamlit", "run", str(APP), *flags]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
