"""GET /docs/explore: Swagger UI over the API's own OpenAPI document, to try a request from the browser with the
key entered once (Authorize). Served from the pinned `swagger-ui-bundle` package, so it works offline and loads
nothing from elsewhere; its Content-Security-Policy allows this server's scripts, styles and requests only.

The package carries Swagger UI 4, which reads OpenAPI 3.0 and refuses 3.1, so the explorer is given the same
document rewritten to 3.0 (`openapi_30`: 3.1's `type: [T, "null"]` becomes `type: T, nullable: true`), derived
from `spec()` on each request and never kept beside it. Decision 0034.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, jsonify, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from backend.api.openapi import spec
from backend.errors import ApiError

bp = Blueprint("explorer", __name__)

# The package's files the page uses, and their types (a browser told `nosniff` trusts only these).
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
# Swagger UI sets its styles through the DOM (allowed by style-src 'self') and its icons as data: images; it sends
# requests to this server only (the document's `servers` is "/").
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# No inline script (the CSP forbids it): the page's one script of its own, served beside the package's.
START = """"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: -1,
    displayRequestDuration: true,
    validatorUrl: null,
    persistAuthorization: false
  });
});
"""


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 `document` as OpenAPI 3.0.3, for Swagger UI 4, which has no "null" type: a type list with
    "null" becomes the type and `nullable: true` (several types: `anyOf`), and a `oneOf`/`anyOf` with a `{"type":
    "null"}` choice loses it and becomes nullable (one choice left: that schema). Nothing else in the API's document
    is 3.1-only (tests/backend/test_explorer.py validates the result as 3.0)."""
    rewritten = _schemas_30(copy.deepcopy(document))
    rewritten["openapi"] = "3.0.3"
    return rewritten


def _schemas_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schemas_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _choices_30({key: _schemas_30(value) for key, value in node.items()})
    kinds = node.get("type")
    if isinstance(kinds, list):
        named = [kind for kind in kinds if kind != "null"]
        del node["type"]
        if len(named) == 1:
            node["type"] = named[0]
        elif named:
            node["anyOf"] = [{"type": kind} for kind in named]
        if "null" in kinds:
            node["nullable"] = True
    return node


def _choices_30(node: dict[str, Any]) -> dict[str, Any]:
    for word in ("oneOf", "anyOf"):
        choices = node.get(word)
        if not isinstance(choices, list) or {"type": "null"} not in choices:
            continue
        rest = [choice for choice in choices if choice != {"type": "null"}]
        node = {key: value for key, value in node.items() if key != word}
        node.update({**rest[0], **node} if len(rest) == 1 else {word: rest})
        node["nullable"] = True
    return node


def _page() -> str:
    asset = lambda name: url_for("explorer.asset", name=name)  # noqa: E731
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Health warehouse API: explorer</title>"
            f"<link rel='stylesheet' href='{asset('swagger-ui.css')}'>"
            f"<link rel='icon' type='image/png' href='{asset('favicon-32x32.png')}'>"
            f"<link rel='stylesheet' href='{url_for('explorer.page_style')}'></head><body>"
            f"<p class='hw-intro'>Try the API from here: <b>Authorize</b> takes your key once (API key "
            "<code>X-API-Key</code>, or Bearer), then <b>Try it out</b> on any endpoint. The same description to "
            f"read: <a href='{url_for('openapi.docs')}'>/docs</a>; machine-readable: "
            f"<a href='{url_for('openapi.openapi_json')}'>/openapi.json</a>.</p>"
            f"<div id='swagger-ui' data-spec='{url_for('explorer.document')}'></div>"
            f"<script src='{asset('swagger-ui-bundle.js')}'></script>"
            f"<script src='{url_for('explorer.start')}'></script></body></html>")


def _with_csp(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/docs/explore")
def page():
    return _with_csp(Response(_page(), mimetype="text/html"))


@bp.get("/docs/explore/openapi.json")
def document():
    """The OpenAPI document as Swagger UI 4 reads it (3.0.3); /openapi.json is the API's own (3.1)."""
    return jsonify(openapi_30(spec()))


@bp.get("/docs/explore/start.js")
def start():
    response = Response(START, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return _with_csp(response)


@bp.get("/docs/explore/page.css")
def page_style():
    response = Response(".hw-intro{font-family:sans-serif;max-width:1420px;margin:1em auto;padding:0 20px}",
                        mimetype="text/css")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/docs/explore/assets/<name>")
def asset(name: str):
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"the explorer serves {', '.join(ASSETS)} only")
    response = send_from_directory(swagger_ui_path, name, mimetype=ASSETS[name])
    response.headers["Cache-Control"] = "no-cache"  # revalidated by its ETag: a new package version is seen at once
    return _with_csp(response)
