"""WSGI entry point: granian serves `backend.wsgi:app` (`python -m backend.serve`, docs/decisions/0018)."""

from backend.app import create_app

app = create_app()
