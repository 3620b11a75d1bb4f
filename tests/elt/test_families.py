"""Source families (elt/families): the repository's declarations load and agree with the contracts, and a bad
declaration is refused with a message that names its file and field (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elt.config import REPO_ROOT
from elt.contracts import load_contracts
from elt.families import FamilyError, family_of, load_families

CONTRACTS = load_contracts(REPO_ROOT / "elt" / "contracts")
MEDILINK = """family: medilink
description: Medilink clinic exports.
drop_types: [medilink_facilities, medilink_patients]
ingest: {daily_at: "02:15"}
marts: {dbt_paths: [models/core/medilink, tests/medilink]}
"""


def families_in(tmp_path: Path, **files: str) -> dict:
    for name, text in files.items():
        (tmp_path / f"{name}.yml").write_text(text)
    return load_families(tmp_path, CONTRACTS)


def test_the_repository_families_load_with_their_dags_and_schedules():
    families = load_families(REPO_ROOT / "elt" / "families", CONTRACTS)
    assert {name: (f.ingest_dag_id, f.cron, f.schedule_text()) for name, f in families.items()} == {
        "medilink": ("medilink_ingest", "0 2 * * *", "02:00 UTC"),
        "nhs_beds": ("nhs_beds_ingest", "30 2 * * *", "02:30 UTC"),
        "claims": ("claims_ingest", "15 2 * * *", "02:15 UTC"),
    }
    assert family_of(families, "medilink_triage_visits").family == "medilink"
    assert family_of(families, "nhs_kh03_overnight").family == "nhs_beds"
    assert family_of(families, "claims").family == family_of(families, "eligibility").family == "claims"
    assert families["nhs_beds"].dbt_select() == [
        "path:models/staging/nhs", "path:models/core/beds", "path:models/analytics/beds", "path:tests/nhs_beds",
        "path:models/staging/ops"]  # its own folders, then the shared ledger view
    assert (families["medilink"].marts.refreshed, families["nhs_beds"].marts.refreshed) == ("nightly", "on_arrival")


def test_every_declared_dbt_path_is_a_folder_of_the_dbt_project():
    """dbt selects nothing by a path that does not exist (and says so only in a warning): a misspelt folder would
    leave a family's marts unbuilt."""
    from elt.families import missing_dbt_paths

    families = load_families(REPO_ROOT / "elt" / "families", CONTRACTS)
    assert sum(len(family.dbt_paths) for family in families.values()) >= 9
    assert missing_dbt_paths(families, REPO_ROOT / "dbt") == []
    assert missing_dbt_paths(families, REPO_ROOT / "elt") != []  # not vacuous: another folder lacks them


def test_a_family_without_a_time_has_no_schedule(tmp_path):
    family = families_in(tmp_path, medilink=MEDILINK.replace('{daily_at: "02:15"}', "{daily_at: null}"))["medilink"]
    assert (family.cron, family.schedule_text()) == (None, "no schedule")
    assert families_in(tmp_path, medilink=MEDILINK)["medilink"].cron == "15 2 * * *"


@pytest.mark.parametrize(("text", "says"), [
    (MEDILINK.replace("medilink_patients", "medilink_payments"), "medilink.yml: drop_types: 'medilink_payments' is not"),
    (MEDILINK.replace('"02:15"', "12:30"), "daily_at must be a quoted time"),  # YAML reads 12:30 as the number 750
    (MEDILINK.replace('"02:15"', '"02:15:30"'), "whole minutes"),
    (MEDILINK.replace('"02:15"', '"25:00"'), "daily_at"),
    (MEDILINK.replace("family: medilink", "family: clinics"), "must be declared in clinics.yml"),
    (MEDILINK.replace("drop_types: [medilink_facilities, medilink_patients]", "drop_types: []"), "drop_types"),
    (MEDILINK + "schedule: daily\n", "schedule"),  # unknown fields are refused, not ignored
    (MEDILINK + "api: {prefix: clinics}\n", "api.prefix"),  # below /api/v1: starts with /
    (MEDILINK + "api: {prefix: /Clinics/}\n", "api.prefix"),
    (MEDILINK + "api: {modules: [backend/api/facilities.py]}\n", "is not a dotted module name"),
    (MEDILINK + "api: {modules: [backend.api.beds, backend.api.beds]}\n", "a module is named twice"),
    (MEDILINK + "api: {paths: [/facilities]}\n", "api.paths"),
    ("family: medilink\n", "description"),
    (MEDILINK.replace("marts: {dbt_paths: [models/core/medilink, tests/medilink]}\n", ""), "marts"),
    (MEDILINK.replace("tests/medilink", "models/core/medilink"), "listed twice"),
    (MEDILINK.replace("tests/medilink", "models/staging"), "overlaps the shared dbt paths"),  # above models/staging/ops
    (MEDILINK.replace("tests/medilink", "models/staging/ops/medilink"), "overlaps the shared dbt paths"),
    *[(MEDILINK.replace("tests/medilink", bad), "not a folder of the dbt project")
      for bad in ("../tests", "/dbt/tests", "tests/", "tests/*", "./tests", "tests//medilink")],
    (MEDILINK.replace("tests/medilink]}", "tests/medilink], refreshed: hourly}"), "refreshed"),
])
def test_a_bad_declaration_is_refused_naming_its_file_and_field(tmp_path, text, says):
    with pytest.raises(FamilyError) as refused:
        families_in(tmp_path, medilink=text)
    assert str(refused.value).startswith("medilink.yml: ") and says in str(refused.value)


def test_a_drop_type_belongs_to_one_family(tmp_path):
    other = MEDILINK.replace("family: medilink", "family: other").replace("medilink_facilities, ", "")
    with pytest.raises(FamilyError, match="other.yml: drop_types: 'medilink_patients' is already in medilink.yml"):
        families_in(tmp_path, medilink=MEDILINK, other=other)


def test_the_repository_families_name_their_api_modules_and_prefix():
    families = load_families(REPO_ROOT / "elt" / "families", CONTRACTS)
    assert {name: (f.api.prefix, f.api.modules) for name, f in families.items()} == {
        "medilink": (None, ("backend.api.facilities", "backend.api.analytics", "backend.api.clinical")),
        "nhs_beds": ("/beds", ("backend.api.beds",)),
        "claims": ("/claims", ("backend.api.claims",)),
    }


@pytest.mark.parametrize(("prefix", "other"), [("/beds", "/beds"), ("/beds/kh03", "/beds"), ("/beds", "/beds/kh03")])
def test_two_families_api_prefixes_may_not_overlap(tmp_path, prefix, other):
    beds = (f"family: beds\ndescription: Beds.\ndrop_types: [nhs_kh03_overnight]\nmarts: {{dbt_paths: [models/beds]}}\n"
            f"api: {{prefix: {prefix}}}\n")
    with pytest.raises(FamilyError, match=f"medilink.yml: api.prefix: '{other}' overlaps '{prefix}' of beds.yml"):
        families_in(tmp_path, beds=beds, medilink=MEDILINK + f"api: {{prefix: {other}}}\n")
    assert families_in(tmp_path, beds=beds, medilink=MEDILINK + "api: {prefix: /bedside}\n")["medilink"].api.prefix \
        == "/bedside"  # a prefix is whole segments: /bedside is not under /beds
def test_a_dbt_folder_belongs_to_one_family(tmp_path):
    other = MEDILINK.replace("family: medilink", "family: other").replace("medilink_facilities, ", "").replace(
        "medilink_patients", "nhs_kh03_overnight").replace("[models/core/medilink, tests/medilink]", "[PATHS]")
    medilink = MEDILINK.replace("medilink_patients", "medilink_triage_visits")
    for paths, taken in [("models/core/medilink", "models/core/medilink"), ("models/core", "models/core/medilink"),
                         ("tests/medilink/beds", "tests/medilink")]:
        with pytest.raises(FamilyError, match=f"other.yml: marts.dbt_paths: {paths!r} overlaps {taken!r} of "
                                              "medilink.yml; a dbt folder belongs to one family"):
            families_in(tmp_path, medilink=medilink, other=other.replace("PATHS", paths))
    assert set(families_in(tmp_path, medilink=medilink, other=other.replace("PATHS", "models/core/medical"))) == {
        "medilink", "other"}  # a name that merely starts the same is another folder


def test_every_family_in_the_repository_names_contracts_of_its_own_folder(tmp_path):
    """Against a contracts folder without a family's drop types (a deployment that left one out), loading says which."""
    contracts = shutil.copytree(REPO_ROOT / "elt" / "contracts", tmp_path / "contracts")
    (contracts / "nhs_kh03_overnight.yml").unlink()
    with pytest.raises(FamilyError, match="nhs_beds.yml: drop_types: 'nhs_kh03_overnight' is not a contract"):
        load_families(REPO_ROOT / "elt" / "families", load_contracts(contracts))


def test_elt_families_lists_them_and_says_which_file_is_wrong(tmp_path, monkeypatch, capsys):
    from elt.cli import main
    from elt.config import get_settings

    def run(*argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        try:
            code = main(["families", *argv])
        finally:
            get_settings.cache_clear()
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("--format", "json")
    assert code == 0
    assert [(row["family"], row["ingest_dag"], row["runs"], row["marts"]) for row in json.loads(out)] == [
        ("claims", "claims_ingest", "02:15 UTC", "nightly"), ("medilink", "medilink_ingest", "02:00 UTC", "nightly"),
        ("nhs_beds", "nhs_beds_ingest", "02:30 UTC", "on_arrival")]  # in the order of their files' names
    assert json.loads(out)[0]["drop_types"] == "claims, eligibility"
    assert json.loads(out)[2]["dbt_paths"] == "models/staging/nhs, models/core/beds, models/analytics/beds, tests/nhs_beds"
    monkeypatch.setenv("FAMILIES_DIR", str(tmp_path))
    (tmp_path / "medilink.yml").write_text(MEDILINK.replace("tests/medilink", "tests/medilnk"))
    code, _, err = run()
    assert code == 1 and err.startswith("error: medilink.yml: marts.dbt_paths: 'tests/medilnk' is not a folder of")
    (tmp_path / "medilink.yml").write_text(MEDILINK.replace('"02:15"', "12:30"))
    code, _, err = run()
    assert code == 1 and err.startswith("error: medilink.yml: ") and "quoted time" in err
    monkeypatch.setenv("FAMILIES_DIR", str(tmp_path / "missing"))
    code, _, err = run()
    assert code == 1 and "no such folder of source families (FAMILIES_DIR)" in err


def test_discovery_by_family_takes_its_drop_types_only(settings):
    """An ingest DAG discovers the files of its family's drop types (elt.pipeline.contracts_for), and refuses to be
    narrowed to a drop type of another family."""
    from elt.pipeline import contracts_for

    medilink = load_families(REPO_ROOT / "elt" / "families", CONTRACTS)["medilink"]
    assert set(contracts_for(settings, drop_types=medilink.drop_types)) == set(medilink.drop_types)
    assert set(contracts_for(settings, drop_types=medilink.drop_types, drop_type="medilink_patients")) == {
        "medilink_patients"}
    with pytest.raises(ValueError, match="'nhs_kh03_overnight' is not one of this family's"):
        contracts_for(settings, drop_types=medilink.drop_types, drop_type="nhs_kh03_overnight")


def test_the_local_stack_reports_the_families_dags_and_where_their_drops_land(tmp_path, monkeypatch):
    from elt.config import get_settings
    from elt.devstack.__main__ import families, landing_prefixes

    get_settings.cache_clear()
    try:
        assert landing_prefixes() == ["claims/", "eligibility/", "medical_records/input/", "nhs/kh03/"]  # by hand
        shutil.copy(REPO_ROOT / "elt" / "families" / "nhs_beds.yml", tmp_path)
        monkeypatch.setenv("FAMILIES_DIR", str(tmp_path))
        get_settings.cache_clear()
        assert landing_prefixes() == ["nhs/kh03/"]
        assert [f.ingest_dag_id for f in families().values()] == ["nhs_beds_ingest"]
    finally:
        get_settings.cache_clear()


def test_every_dbt_node_belongs_to_one_family_or_is_shared(dbt_manifest):
    """Each model, test, unit test, source and exposure of the dbt project is in exactly one family's dbt paths or
    in the shared ones, so every node has one marts DAG to build it."""
    from elt.dbt_plan import in_paths
    from elt.families import SHARED_DBT_PATHS

    manifest = json.loads(dbt_manifest.read_text())
    families = load_families(REPO_ROOT / "elt" / "families", CONTRACTS)
    owners = {**{name: family.marts.dbt_paths for name, family in families.items()}, "shared": SHARED_DBT_PATHS}
    entries = {**manifest["nodes"], **manifest["sources"], **manifest["unit_tests"], **manifest["exposures"]}
    nodes = {uid: node for uid, node in entries.items() if node["resource_type"] != "operation"}  # project hooks
    owned = {uid: [name for name, paths in owners.items() if in_paths(node, paths)] for uid, node in nodes.items()}
    assert {uid: names for uid, names in owned.items() if len(names) != 1} == {}
    assert owned["model.health_warehouse.stg_claims__claim_lines"] == ["claims"]
    assert owned["source.health_warehouse.raw.claims"] == ["claims"]
    by_owner = {name: {uid for uid, names in owned.items() if names == [name]} for name in owners}
    assert all(len(by_owner[name]) >= 5 for name in owners), {name: len(uids) for name, uids in by_owner.items()}
