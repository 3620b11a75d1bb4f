"""The API explorer (/docs/explore: Swagger UI from the pinned package, offline) and the readable /docs page with its
descriptions' Markdown rendered, on a fresh warehouse (neither reads a mart)."""

from __future__ import annotations

import re
from pathlib import Path

from openapi_spec_validator import OpenAPIV30SpecValidator
from swagger_ui_bundle import swagger_ui_path

from backend.api.openapi import markdown
from backend.auth import create_key

# What a browser told `nosniff` needs, by file ending (written out here, not taken from the module under test).
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


def _references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href|data-spec)=['"]([^'"]+)['"]""", page)


def _directives(csp: str) -> dict[str, set[str]]:
    return {name: set(values) for name, *values in (part.split() for part in csp.split(";") if part.strip())}


def test_the_explorer_page_loads_its_assets_from_this_server_only(app):
    client = app.test_client()
    response = client.get("/docs/explore")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "http://" not in page and "https://" not in page and "<script>" not in page  # no inline script either
    references = _references(page)
    assert len(references) >= 6  # css, icon, our css, the spec, the bundle, the start script (and the links)
    served = {}
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        got = client.get(reference)
        assert got.status_code == 200, reference
        served[reference] = got
        ending = Path(reference).suffix
        if ending in CONTENT_TYPES:
            assert got.mimetype == CONTENT_TYPES[ending], reference
    bundle = next(got for reference, got in served.items() if reference.endswith("/swagger-ui-bundle.js"))
    assert bundle.get_data() == (Path(swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()  # the package's own
    start = next(got.get_data(as_text=True) for reference, got in served.items() if reference.endswith("start.js"))
    assert "http" not in start and "validatorUrl: null" in start  # the online validator badge is off
    assert re.search(r"data-spec='/docs/explore/openapi.json'", page)


def test_the_explorers_policy_allows_this_servers_scripts_and_nothing_more(app):
    for path in ("/docs/explore", "/docs/explore/assets/swagger-ui-bundle.js"):
        csp = _directives(app.test_client().get(path).headers["Content-Security-Policy"])
        assert csp["default-src"] == {"'none'"}
        assert csp["script-src"] == {"'self'"}  # no 'unsafe-inline', no 'unsafe-eval', no other host
        assert csp["connect-src"] == {"'self'"} and csp["style-src"] == {"'self'"}
        assert csp["img-src"] == {"'self'", "data:"} and csp["frame-ancestors"] == {"'none'"}
    # /docs keeps its own: no script at all
    assert app.test_client().get("/docs").headers["Content-Security-Policy"] == \
        "default-src 'none'; style-src 'unsafe-inline'"


def test_only_the_pages_assets_are_served_from_the_package(app):
    client = app.test_client()
    for name in ("index.html", "swagger-initializer.js", "swagger-ui-bundle.js.map", "..%2F__init__.py",
                 "swagger-ui-standalone-preset.js"):
        response = client.get(f"/docs/explore/assets/{name}")
        assert response.status_code == 404, name
        assert response.get_json()["error"]["code"] == "not_found"


def test_the_explorers_document_is_the_api_document_as_openapi_3_0(app):
    client = app.test_client()
    own, explorer = client.get("/openapi.json").get_json(), client.get("/docs/explore/openapi.json").get_json()
    assert own["openapi"].startswith("3.1") and explorer["openapi"] == "3.0.3"
    OpenAPIV30SpecValidator(explorer).validate()
    operations = lambda document: {(path, method, op["operationId"]) for path, item in document["paths"].items()  # noqa: E731
                                   for method, op in item.items()}
    assert operations(explorer) == operations(own)
    # A nullable column of 3.1 (`type: [T, "null"]`) is 3.0's `type: T, nullable: true`; the rest is untouched.
    rows = [name for name in own["components"]["schemas"] if name.endswith("Row")]  # every catalogue list's row
    listed = {ref.rsplit("/", 1)[1] for ref in re.findall(r"#/components/schemas/\w+Row\b", str(own["paths"]))}
    assert rows and set(rows) == listed
    for name in rows:
        for column, schema in own["components"]["schemas"][name]["properties"].items():
            rewritten = explorer["components"]["schemas"][name]["properties"][column]
            if isinstance(schema.get("type"), list) and schema["type"] == [schema["type"][0], "null"]:
                assert rewritten["type"] == schema["type"][0] and rewritten["nullable"] is True
                assert {k: v for k, v in rewritten.items() if k not in ("type", "nullable")} == \
                    {k: v for k, v in schema.items() if k != "type"}
            else:
                assert rewritten == schema, (name, column)
    # A choice of an object or null (a run's drop) is that object, nullable.
    drop = explorer["components"]["schemas"]["RunState"]["properties"]["drop"]
    choices = own["components"]["schemas"]["RunState"]["properties"]["drop"]["oneOf"]
    assert {"type": "null"} in choices and len(choices) == 2 and "oneOf" not in drop
    assert drop["nullable"] is True and drop["type"] == "object"
    assert set(drop["properties"]) == set(next(c for c in choices if c != {"type": "null"})["properties"])
    assert not list(_type_lists(explorer))


def _type_lists(node):
    """Every 3.1-only `type: [...]` left in a document."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), list):
            yield node
        for value in node.values():
            yield from _type_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _type_lists(value)


def test_the_key_is_declared_once_for_every_endpoint_and_the_api_takes_it(app, settings, facilities_mart):
    document = app.test_client().get("/openapi.json").get_json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["headerKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearerKey"]["type"] == "http" and schemes["bearerKey"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, op in item.items():
            if path.startswith("/api/"):
                assert {"headerKey": []} in op["security"] and {"bearerKey": []} in op["security"], (path, method)
    # What Swagger's Authorize sends with every request, the API accepts.
    key = create_key(settings.database_url, "explorer test", "analyst")
    client = app.test_client()
    assert client.get("/api/v1/facilities", headers={"X-API-Key": key}).get_json()["meta"]["total"] == \
        len(facilities_mart)
    assert client.get("/api/v1/facilities").status_code == 401


def test_the_docs_page_renders_the_descriptions_markdown_and_links_the_explorer(app, dbt_manifest):
    page = app.test_client().get("/docs").get_data(as_text=True)  # with the dbt project's column descriptions
    assert "`" not in page and "**" not in page  # no Markdown left raw
    assert "<code>meta.next_cursor</code>" in page  # the `cursor` parameter's description
    assert "Role <strong>analyst</strong>" in page  # an endpoint's access line
    assert "href='/docs/explore'" in page
    assert "<script" not in page


def test_markdown_in_a_description_is_never_html():
    rendered = markdown("<script>alert(1)</script> and `a<b` and <img src=x onerror=alert(1)>")
    assert "<script" not in rendered and "<img" not in rendered
    assert "&lt;script&gt;" in rendered and "<code>a&lt;b</code>" in rendered
    assert "href" not in markdown("[click](javascript:alert(1))")  # shown as text, never a link
    assert '<a href="https://www.england.nhs.uk/">KH03</a>' in markdown("[KH03](https://www.england.nhs.uk/)")
    assert markdown("**bold** `x`", inline=True) == "<strong>bold</strong> <code>x</code>"
