"""The API catalogue (backend/api/catalogue.py) is built from the source families' `api:` declarations: a family added
in a folder of its own, with a resource module of its own, is routed, documented, checked by /ready and served like
the others, with no other edit; a declaration the API cannot serve faithfully stops it, naming the family and module."""

from __future__ import annotations

import shutil
import textwrap
import uuid

import pytest
import yaml

from backend.api.catalogue import CatalogueError, build_catalogue, declared_catalogue
from backend.api.listing import Column
from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from backend.errors import ApiError
from elt.config import REPO_ROOT, get_settings
from elt.contracts import load_contracts
from elt.families import Api, load_families
from tests.backend.conftest import api_settings

FAMILIES = load_families(REPO_ROOT / "elt" / "families", load_contracts(REPO_ROOT / "elt" / "contracts"))
MEDILINK_DROPS = ("medilink_facilities", "medilink_patients", "medilink_medical_records", "medilink_triage_visits")
NOWHERE = "postgresql://postgres@127.0.0.1:1/warehouse"  # no database: these answers need none


def resource_module(tmp_path, monkeypatch, *resources: str, hint: str | None = None) -> str:
    """A module of its own (a fresh name: nothing imported before answers for it) in tmp_path, importable, whose
    RESOURCES are the `Resource(...)` sources given."""
    name = f"toy_resources_{uuid.uuid4().hex[:8]}"
    body = "".join(textwrap.indent(r, "    ") + ",\n" for r in resources)
    (tmp_path / f"{name}.py").write_text(
        "from backend.api.listing import Column, Resource\n\n"
        + (f"NOT_BUILT_HINT = {hint!r}\n" if hint else "")
        + f"RESOURCES = (\n{body})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def toy_resource(path: str, name: str = "toy-things", thing_id: str = "") -> str:
    """The source of a Resource over analytics.toy_things; `thing_id`: more of that column's declaration."""
    return (f'Resource(name="{name}", table="analytics.toy_things", summary="One row per toy thing.", '
            f'columns=(Column("thing_id", sortable=True{thing_id}), Column("colour", filter="eq")), '
            f'key=("thing_id",), default_sort="thing_id", path="{path}")')


def with_api(family: str, prefix: str | None, *modules: str):
    """A repository family with another API declaration (pydantic's model_copy: the rest as declared)."""
    return FAMILIES[family].model_copy(update={"api": Api(prefix=prefix, modules=modules)})


def test_the_repository_catalogue_is_the_families_resources_with_their_drop_types():
    catalogue = declared_catalogue()
    by_path = {endpoint.path: endpoint for endpoint in catalogue.endpoints}
    assert [e.path for e in catalogue.endpoints if e.group == "nhs_beds"] == [
        "/api/v1/beds/occupancy", "/api/v1/beds/organisations/{org_code}/history", "/api/v1/beds/national",
        "/api/v1/beds/periods", "/api/v1/beds/specialties"]
    assert [e.path for e in catalogue.endpoints if e.group == "platform"] == [
        "/api/v1/drops", "/api/v1/pipeline-runs", "/api/v1/rejects"]
    # no drop_types declared: the family's; declared: kept as declared
    assert by_path["/api/v1/beds/periods"].resource.drop_types == ("nhs_kh03_overnight",)
    assert by_path["/api/v1/facilities"].resource.drop_types == MEDILINK_DROPS
    assert by_path["/api/v1/triage-trends"].resource.drop_types == (
        "medilink_facilities", "medilink_patients", "medilink_triage_visits")
    assert by_path["/api/v1/drops"].resource.drop_types == ()  # the ledger: live, from no drop type
    assert [b.name for b in catalogue.blueprints] == ["api_claims", "api_medilink", "api_nhs_beds", "operations"]
    assert "analytics.bed_occupancy_trends" in catalogue.on_arrival_marts()
    assert "ops.file_ledger" not in catalogue.served_marts()


def test_a_path_value_is_transformed_and_cut_as_its_column_declares():
    org_code = Column("org_code", path_transform="upper", max_length=20)
    assert org_code.from_path("r1h") == "R1H"
    assert org_code.from_path("rx" * 15) == "RX" * 10
    assert Column("thing_id", max_length=5).from_path("ab-cdefg") == "ab-cd"
    claim_id = Column("claim_id", max_length=5, path_overflow="refuse")
    assert claim_id.from_path("ab-cd") == "ab-cd"
    for value, says in (("ab-cde", "claim_id: at most 5 characters"), ("a\x00b", "claim_id: a NUL character")):
        with pytest.raises(ApiError) as refused:
            claim_id.from_path(value)
        assert (refused.value.status, refused.value.code) == (400, "invalid_parameter")
        assert refused.value.message.startswith(says) and "ab" not in refused.value.message


def toy_columns(*columns: str) -> str:
    """The source of a Resource over analytics.toy_things at /beds/things with these Column(...) sources too."""
    return (f'Resource(name="toy-things", table="analytics.toy_things", summary="One row per toy thing.", '
            f'columns=(Column("thing_id", sortable=True), {", ".join(columns)}), key=("thing_id",), '
            f'default_sort="thing_id", path="/beds/things")')


@pytest.mark.parametrize(("family", "prefix", "resources", "says"), [
    ("nhs_beds", "/beds", [toy_resource("/toys/things")],
     "family nhs_beds: api.modules: {module}: toy-things: path /toys/things is outside the family's api.prefix /beds"),
    ("nhs_beds", "/beds", [toy_resource("/bedsx")], "path /bedsx is outside the family's api.prefix /beds"),
    ("medilink", None, [toy_resource("/beds/toys")],
     "family medilink: api.modules: {module}: toy-things: path /beds/toys is under another family's api.prefix /beds"),
    ("nhs_beds", "/beds", [toy_resource("/beds/occupancy")],
     "family nhs_beds: api.modules: {module}: toy-things: path /beds/occupancy is already declared by family "
     "nhs_beds: api.modules: backend.api.beds: beds-occupancy"),
    ("medilink", None, [toy_resource("/drops")], "path /drops is already declared by family medilink"),
    ("nhs_beds", "/beds", [toy_resource("/beds/a"), toy_resource("/beds/b")],
     "toy-things: name toy-things is already declared by family nhs_beds: api.modules: {module}: toy-things"),
    ("nhs_beds", "/beds", [toy_resource("/beds/a"), toy_resource("/beds/b", name="toy_things")],
     "toy_things: name toy_things is already declared by family nhs_beds: api.modules: {module}: toy-things"),
    ("nhs_beds", "/beds", [toy_resource("/beds/organisations/{thing_id}/history", thing_id=", max_length=5")],
     "path /beds/organisations/{{thing_id}}/history is already declared by family nhs_beds: api.modules: "
     "backend.api.beds: beds-organisation-history"),
    ("nhs_beds", "/beds", [toy_resource("/beds/things/{colour}")],
     "path value {{colour}} must be a column of the resource with a max_length"),
    ("nhs_beds", "/beds", [toy_resource("/beds/things/{shape}")], "path value {{shape}} must be a column"),
    ("nhs_beds", "/beds", [toy_resource("/beds/Things")], "path '/beds/Things' is not a path below /api/v1"),
    ("nhs_beds", "/beds", [toy_columns('Column("detail", "json", filter="eq")')],
     "toy-things: column detail is JSON: it cannot filter or sort"),
    ("nhs_beds", "/beds", [toy_columns('Column("detail", "json", sortable=True)')], "column detail is JSON"),
    ("nhs_beds", "/beds", [toy_columns('Column("colour", filter="range", required=True)')],
     "toy-things: column colour is a required filter: declare filter=\"eq\""),
    ("nhs_beds", "/beds", [toy_columns('Column("detail", "json")', 'Column("colour", filter="eq", required=True)')],
     None),
    ("nhs_beds", "/beds", [], None),  # an empty RESOURCES is allowed: a family on its way
])
def test_a_resource_the_catalogue_cannot_serve_stops_it_naming_the_family_and_module(
        tmp_path, monkeypatch, family, prefix, resources, says):
    module = resource_module(tmp_path, monkeypatch, *resources)
    modules = ("backend.api.beds", module) if family == "nhs_beds" else (module,)
    families = {"medilink": with_api("medilink", None, *modules) if family == "medilink" else FAMILIES["medilink"],
                "nhs_beds": with_api("nhs_beds", prefix, *modules) if family == "nhs_beds" else FAMILIES["nhs_beds"]}
    if says is None:  # served: the two families' endpoints and the module's resources
        declared = build_catalogue({name: FAMILIES[name] for name in ("medilink", "nhs_beds")})
        assert len(build_catalogue(families).endpoints) == len(declared.endpoints) + len(resources)
        return
    with pytest.raises(CatalogueError) as refused:
        build_catalogue(families)
    assert says.format(module=module) in str(refused.value)


def test_a_module_that_is_missing_or_declares_no_resources_stops_the_catalogue(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "toy_without_resources.py").write_text("THINGS = ()\n")
    for module, says in (("toy_without_resources", "exports no RESOURCES"),
                         ("toy_not_there", "cannot be imported")):
        with pytest.raises(CatalogueError, match=f"family nhs_beds: api.modules: {module}: {says}"):
            build_catalogue({"nhs_beds": with_api("nhs_beds", "/beds", module)})


@pytest.fixture
def toy_families(tmp_path, monkeypatch):
    """A folder of families holding Medilink's and a toy family (the KH03 drop type, under /toy, with a resource module
    of its own in a temporary folder); the bed family is not in it."""
    families = tmp_path / "families"
    families.mkdir()
    shutil.copy(REPO_ROOT / "elt" / "families" / "medilink.yml", families)
    module = resource_module(tmp_path, monkeypatch, toy_resource("/toy/things"),
                             toy_resource("/toy/things/{thing_id}/history", name="toy-thing-history",
                                          thing_id=', path_transform="upper", max_length=8'),
                             hint="for the toy marts, drop a toy file")
    toy = yaml.safe_load((REPO_ROOT / "elt" / "families" / "nhs_beds.yml").read_text())
    toy.update(family="toy", description="Toy things.", api={"prefix": "/toy", "modules": [module]})
    (families / "toy.yml").write_text(yaml.safe_dump(toy))
    return families


def test_a_toy_family_in_a_folder_of_its_own_is_routed_and_documented(toy_families):
    app = create_app(ApiSettings(database_url=NOWHERE, rate_limit="", auth_failure_limit=""),
                     elt_settings=get_settings().model_copy(update={"families_dir": toy_families}))
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    assert {"/api/v1/toy/things", "/api/v1/toy/things/{thing_id}/history", "/api/v1/facilities"} <= set(
        document["paths"])
    assert not any(path.startswith("/api/v1/beds/") for path in document["paths"])  # not in this folder
    history = document["paths"]["/api/v1/toy/things/{thing_id}/history"]["get"]["parameters"][0]
    assert (history["in"], history["name"], history["schema"]) == ("path", "thing_id", {"type": "string", "maxLength": 8})
    for path in ("/api/v1/toy/things", "/api/v1/toy/things/a1/history"):
        refused = client.get(path)
        assert refused.status_code == 401, path  # served, and asks for a key: not a 404
        assert refused.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/beds/occupancy").status_code == 404


def test_a_toy_familys_mart_is_checked_by_ready_and_served_like_the_others(toy_families, settings, db,
                                                                              login_passwords):
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit="", auth_failure_limit=""),
                     elt_settings=settings.model_copy(update={"families_dir": toy_families}))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'toy', 'analyst')}"
    ready = client.get("/ready").get_json()
    assert ready["marts"]["analytics.toy_things"]["built"] is False
    assert "analytics.bed_occupancy_trends" not in ready["marts"]
    not_built = client.get("/api/v1/toy/things")
    assert not_built.status_code == 503 and not_built.get_json()["error"]["code"] == "not_built"
    assert "(for the toy marts, drop a toy file)" in not_built.get_json()["error"]["message"]
    assert "KH03" not in not_built.get_json()["error"]["message"]  # the bed family is not in this folder

    db.execute("create schema if not exists analytics; create table analytics.toy_things "
               "(thing_id text not null, colour text, built_at timestamptz); "
               "insert into analytics.toy_things values ('A1', 'red', '2026-11-15T02:10:00Z'), "
               "('a1', 'blue', '2026-11-15T02:10:00Z'), ('B2', 'Red', '2026-11-15T02:10:00Z'); "
               "grant usage on schema analytics to api_reader; grant select on analytics.toy_things to api_reader")
    things = client.get("/api/v1/toy/things", query_string={"colour": "RED"}).get_json()
    assert [row["thing_id"] for row in things["data"]] == ["A1", "B2"]
    # the path's value upper-cased as the column declares, and compared exactly: 'a1' in the path is A1 only
    history = client.get("/api/v1/toy/things/a1/history").get_json()
    assert [(row["thing_id"], row["colour"]) for row in history["data"]] == [("A1", "red")]
