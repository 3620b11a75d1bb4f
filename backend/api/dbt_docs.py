"""GET /dbt-docs/: the dbt documentation site (models, columns, tests, lineage, exposures) for analysts.

Serves the three files `dbt docs generate` writes and nothing else from that folder. They describe
models and columns, never row values.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, send_from_directory, url_for

from backend.errors import ApiError

bp = Blueprint("dbt_docs", __name__)
FILES = ("index.html", "manifest.json", "catalog.json")


@bp.get("/dbt-docs")
def dbt_docs_root():
    return redirect(url_for("dbt_docs.dbt_docs_file", name="index.html"))


@bp.get("/dbt-docs/")
@bp.get("/dbt-docs/<name>")
def dbt_docs_file(name: str = "index.html"):
    if name not in FILES:
        raise ApiError(404, "not_found", f"/dbt-docs/ serves {', '.join(FILES)} only")
    folder = current_app.config["API_SETTINGS"].dbt_docs_dir
    if not (folder / name).is_file():
        raise ApiError(404, "docs_not_built",
                       "the dbt docs have not been generated yet: run `./start.sh elt docs` (dbt docs generate)")
    response = send_from_directory(folder, name)
    response.headers["Cache-Control"] = "no-cache"
    return response
