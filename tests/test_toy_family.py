"""A source family is one declaration (issue 15, decision 0019): a toy family added in temporary folders, with nothing
under the repository edited, gets its ingest and marts DAGs, its marts' dbt selection, its API routes, its upload
routing and its place in the local stack.

The toy: a contract `toy_things` (a copy of Medilink's facilities contract landing under toy/input/), a family
`toy` (daily at 03:45 UTC, dbt folder models/toy, API prefix /toy with one resource module), and a dbt project
holding models/toy/toy_things.sql and another folder's model that is not the toy's.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOY_PROJECT = {
    "dbt_project.yml": 'name: toy\nversion: "1.0"\nconfig-version: 2\nprofile: health_warehouse\n'
                       'model-paths: ["models"]\nmodels:\n  toy:\n    +materialized: table\n',
    "models/toy/toy_things.sql": "select 'A1' as thing_id, 'red' as colour",
    "models/toy/schema.yml": "version: 2\nmodels:\n  - name: toy_things\n    columns:\n      - name: thing_id\n"
                             "        data_tests: [unique]\n",
    "models/other/x.sql": "select 1 as id",
    "models/staging/ops/ledger.sql": "select 1 as file_id",  # the shared folder every family's build selects
}


def _repo_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "elt", "airflow", "backend",
                           "dbt/models", "dbt/tests"], cwd=REPO, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def toy(tmp_path, monkeypatch, airflow_home, settings):
    """The toy's contract, family, resource module and dbt project in tmp_path, and the settings pointing at them."""
    from elt.config import get_settings
    from elt.transform import parse

    contracts = shutil.copytree(REPO / "elt" / "contracts", tmp_path / "contracts",
                                ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    toy_contract = yaml.safe_load((contracts / "medilink_facilities.yml").read_text())
    toy_contract.update(drop_type="toy_things", description="Toy things, one row per thing.", source_system="toy",
                        target_table="raw.toy_things")
    toy_contract["landing"].update(prefix="toy/input/", key_pattern=r"^things[^/]*\.csv$",
                                   archive_prefix="toy/archive/{date:%Y-%m-%d}/",
                                   quarantine_prefix="toy/quarantine/{date:%Y-%m-%d}/")
    (contracts / "toy_things.yml").write_text(yaml.safe_dump(toy_contract))

    module = f"toy_resources_{uuid.uuid4().hex[:8]}"  # a fresh name: nothing imported before answers for it
    (tmp_path / f"{module}.py").write_text(
        "from backend.api.listing import Column, Resource\n\n"
        'RESOURCES = (Resource(name="toy-things", table="analytics.toy_things", summary="One row per toy thing.", '
        'columns=(Column("thing_id", sortable=True), Column("colour", filter="eq")), key=("thing_id",), '
        'default_sort="thing_id", path="/toy/things"),)\n')
    monkeypatch.syspath_prepend(str(tmp_path))

    families = shutil.copytree(REPO / "elt" / "families", tmp_path / "families",
                               ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (families / "toy.yml").write_text(yaml.safe_dump({
        "family": "toy", "description": "Toy things, for a test.", "drop_types": ["toy_things"],
        "ingest": {"daily_at": "03:45"}, "marts": {"dbt_paths": ["models/toy"]},
        "api": {"prefix": "/toy", "modules": [module]}}))

    project = tmp_path / "dbt"
    for name, text in TOY_PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    shutil.copy(REPO / "dbt" / "profiles.yml", project / "profiles.yml")
    toy_settings = settings.model_copy(update={"contracts_dir": contracts, "families_dir": families,
                                               "dbt_project_dir": project})
    parse(settings=toy_settings)
    for name, value in (("CONTRACTS_DIR", contracts), ("FAMILIES_DIR", families), ("DBT_PROJECT_DIR", project),
                        ("DATABASE_URL", settings.database_url)):
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    yield toy_settings
    get_settings.cache_clear()


def test_a_toy_family_declared_in_temporary_folders_gets_its_dags_selection_routes_and_stack(toy):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Asset

    from backend.app import create_app
    from backend.config import ApiSettings
    from elt.dag_factory import DBT_POOL
    from elt.dbt_watch import BUILD_TASK
    from elt.devstack.__main__ import families, landing_prefixes
    from elt.families import declared_families, family_of

    before = _repo_status()
    bag = DagBag(str(REPO / "airflow" / "dags"))
    assert bag.import_errors == {}
    assert {"medilink_ingest", "medilink_marts", "nhs_beds_ingest", "nhs_beds_marts", "toy_ingest",
            "toy_marts"} <= set(bag.dags)

    ingest, marts = bag.dags["toy_ingest"], bag.dags["toy_marts"]
    assert ingest.timetable.expression == "45 3 * * *" and str(ingest.timetable.timezone) == "UTC"
    assert [(o.name, o.uri) for o in ingest.get_task("publish").outlets if isinstance(o, Asset)] == [
        ("toy_raw", "warehouse://raw/toy")]
    assert [ref.name for ref in marts.timetable.asset_condition.objects] == ["toy_raw"]
    assert {"dbt.toy_things.run", "dbt.toy_things.test"} <= set(marts.task_ids)
    assert not [task for task in marts.task_ids if task.startswith("dbt.x")]  # models/other is nobody's
    build = marts.get_task(BUILD_TASK)
    assert build.select == ["path:models/toy", "path:models/staging/ops"] and build.pool == DBT_POOL

    declared = declared_families(toy)
    assert family_of(declared, "toy_things").ingest_dag_id == "toy_ingest"
    assert "toy" in families() and "toy/input/" in landing_prefixes()

    client = create_app(ApiSettings(database_url=toy.database_url, rate_limit=""), elt_settings=toy).test_client()
    assert "/api/v1/toy/things" in client.get("/openapi.json").get_json()["paths"]
    unauthorised = client.get("/api/v1/toy/things")
    assert unauthorised.status_code == 401, unauthorised.get_json()  # routed (not 404), and guarded
    assert _repo_status() == before  # nothing under the repository was written
