"""Connector declarations: a bad file is refused with its name and the field, the kinds are what the packages hold,
and a connector that moves patient-level data without saying so is refused. No database needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from elt.config import REPO_ROOT, Settings
from elt.connectors.spec import ConnectorSpecError, check_connector, kinds, load_connector, load_connectors
from elt.contracts import load_contracts

CONTRACTS = load_contracts(REPO_ROOT / "elt" / "contracts")
S3 = "{kind: s3, bucket: exports, format: parquet}"


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_kinds_are_the_modules_of_the_packages():
    folder = REPO_ROOT / "elt" / "connectors" / "destinations"
    modules = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert set(kinds("destination")) == modules >= {"s3", "folder", "postgres"}
    assert all(kind.options.model_fields["kind"].annotation.__args__ == (name,)
               for name, kind in kinds("destination").items())


def test_reading_declarations_loads_no_kind_client_library():
    """Every kind module is imported wherever declarations are read (each connector DAG's parse, the CLI, every run):
    boto3, paramiko, requests and pyarrow load only when a connector of their kind runs (base.py). A module that
    only sits in sys.modules as a lazy placeholder has not run, so its submodules tell."""
    script = ("import sys; from elt.connectors.spec import kinds, load_connectors; kinds('destination'); "
              "kinds('source'); from elt.config import REPO_ROOT; load_connectors(REPO_ROOT / 'airflow' / 'connectors'); "
              "print(' '.join(m for m in ('boto3.session', 'paramiko.transport', 'requests.sessions', 'pyarrow.lib') "
              "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    assert loaded.stdout.split() == []


def test_a_good_declaration_loads_with_its_kind_options(tmp_path):
    path = _file(tmp_path, "beds_out", f"""
        description: Beds.
        schedule: "0 6 * * 1"
        deliver: {{mart: analytics.bed_occupancy_trends, to: {S3}}}
    """)
    connector = load_connector(path)
    assert connector.name == "beds_out" and connector.kind.name == "s3"
    assert connector.options.format == "parquet" and connector.dag_id == "connector_beds_out"
    check_connector(connector, CONTRACTS)


@pytest.mark.parametrize(("body", "field", "says"), [
    ("description: x\n", "(top)", "exactly one of deliver"),
    ("description: x\npull: {from: {kind: ftp}, drop_type: claims}\n", "pull.from", ""),
    (f"description: x\ndeliver: {{to: {S3}}}\n", "deliver", "exactly one of mart and query"),
    (f"description: x\ndeliver: {{mart: Analytics-A, to: {S3}}}\n", "deliver.mart", "schema.table"),
    (f"description: x\ndeliver: {{query: delete from analytics.a, to: {S3}}}\n", "deliver.query", "select"),  # noqa: S608 - YAML
    (f"description: x\ndeliver: {{query: select 1; drop table x, to: {S3}}}\n", "deliver.query", "one select"),
    ("description: x\ndeliver: {mart: analytics.a, to: {kind: ftp}}\n", "deliver.to", "'ftp'"),
    ("description: x\ndeliver: {mart: analytics.a, to: {kind: s3, bucket: exports, format: xlsx}}\n",
     "deliver.to.s3.format", "'csv' or 'parquet'"),
    ("description: x\ndeliver: {mart: analytics.a, to: {kind: s3, bucket: exports, secret: hunter2}}\n",
     "deliver.to.s3.secret", "Extra inputs"),
    (f"description: x\nschedule: every monday\ndeliver: {{mart: analytics.a, to: {S3}}}\n", "schedule",
     "not a cron"),
    (f"description: x\nname: other\ndeliver: {{mart: analytics.a, to: {S3}}}\n", "name", "stem"),
    ("description: x\ndeliver: {mart: analytics.a, to: {kind: postgres, table: r.t, mode: merge, "
     "credentials: {conn_id: x}}}\n", "deliver.to.postgres", "key is required"),
])
def test_a_bad_declaration_names_the_file_and_the_field(tmp_path, body, field, says):
    path = tmp_path / "bad_one.yml"
    path.write_text(body)
    with pytest.raises(ConnectorSpecError) as error:
        load_connector(path)
    message = str(error.value)
    assert message.startswith("bad_one.yml: ")
    assert f"{field}:" in message and says in message
    assert "hunter2" not in message  # values are not repeated (they may be secrets)


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "a.yml").write_text("deliver: [unclosed")
    (tmp_path / "b.yml").write_text("- just a list")
    for name in ("a", "b"):
        with pytest.raises(ConnectorSpecError, match=f"^{name}.yml: "):
            load_connector(tmp_path / f"{name}.yml")


@pytest.mark.parametrize("deliver", [
    f"{{mart: clinical.patient_summary, to: {S3}}}",
    f"{{mart: core.dim_patients, to: {S3}}}",
    f"{{query: 'select p.* from analytics.x join \"raw\".medilink_patients as p on true', to: {S3}}}",  # noqa: S608 - YAML
])
def test_patient_level_data_must_be_declared(tmp_path, deliver):
    connector = load_connector(_file(tmp_path, "leaky", f"description: x\ndeliver: {deliver}\n"))
    with pytest.raises(ConnectorSpecError, match=r"^leaky.yml: personal_data: must be true"):
        check_connector(connector, CONTRACTS)
    declared = load_connector(_file(tmp_path, "leaky", f"description: x\npersonal_data: true\ndeliver: {deliver}\n"))
    check_connector(declared, CONTRACTS)


def test_a_de_identified_query_needs_no_declaration(tmp_path):
    query = "select org_code, sum(beds_available) from analytics.bed_occupancy_trends group by 1"
    connector = load_connector(_file(tmp_path, "fine", f'description: x\ndeliver: {{query: "{query}", to: {S3}}}\n'))
    check_connector(connector, CONTRACTS)


def test_the_folder_of_declarations(tmp_path):
    assert load_connectors(tmp_path / "missing") == {}
    _file(tmp_path, "one", f"description: x\ndeliver: {{mart: analytics.a, to: {S3}}}\n")
    _file(tmp_path, "two", "description: x\ndeliver: {mart: analytics.b, to: {kind: folder, path: /tmp}}\n")
    assert list(load_connectors(tmp_path)) == ["one", "two"]


def test_the_repository_declarations_are_valid():
    settings = Settings()
    for connector in load_connectors(settings.connectors_dir).values():
        check_connector(connector, CONTRACTS)
