"""No value from a data row reaches an error, wherever errors go (issue 13, defect 3).

A CSV exported without its header row starts with a patient's row: its cells were read as "unknown column
names" and repeated into the ledger's error, `GET /api/v1/runs/<run_id>`, the task log, the XCom and the
quarantine sidecar. Here headerless patient and triage files go through the real loader inside
`medilink_ingest` (dag.test(): the task log is the run's output, the XComs are in Airflow's database), through
`POST /api/v1/drops` and `GET /api/v1/runs/<run_id>`, and every one of those places is searched for every cell.
The same search covers the other ways a file's text could reach an error: Postgres's COPY messages (a lone
quote, a field too many, bytes of neither encoding, NUL bytes), a mix of encodings, and an error the loader did
not expect whose message quotes the file.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pytest

from elt.pipeline import ingest_file

PREFIX = "medical_records/input/"
DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"

# Rows of made-up people, with values distinctive enough that finding one anywhere can only be a leak.
PATIENTS = [
    ["Saint Ottoline Clinic", "Zebediah", "Quarrington", "M", "1961-07-23", "+2348099911122"],
    ["Saint Ottoline Clinic", "Philippa", "Dunwoody-Marsh", "F", "1979-02-11", "+2348055500123"],
]
TRIAGE = [
    ["Saint Ottoline Clinic", "Zebediah", "Quarrington", "2", "Wobbly knees since Tuesday", "BP: 151/97, HR: 101",
     "Gout;Xerostomia", "Elevate the left foot"],
    ["Saint Ottoline Clinic", "Philippa", "Dunwoody-Marsh", "4", "Itchy elbow", "BP: 118/76", "Eczema",
     "Emollient twice daily"],
]
PATIENT_HEADER = "facility_name,first_name,last_name,sex,dob,phone"


def csv_bytes(rows: list[list[str]], header: str | None = None, encoding: str = "utf-8") -> bytes:
    def line(row: list[str]) -> str:
        return ",".join(f'"{cell}"' if "," in cell else cell for cell in row)

    return "".join(f"{text}\n" for text in ([header] if header else []) + [line(row) for row in rows]).encode(encoding)


def secrets(rows: list[list[str]]) -> set[str]:
    """Every cell long enough to be told apart from ordinary words (M, F and levels are not), and the parts of
    list cells, lower-cased: messages must not carry them in any case."""
    found = set()
    for row in rows:
        for cell in row:
            for part in [cell, *cell.split(";"), *cell.split(", ")]:
                if len(part) >= 5:
                    found.add(part.lower())
    return found - {"saint ottoline clinic"} | {"ottoline"}


ALL_SECRETS = secrets(PATIENTS) | secrets(TRIAGE)


def leaked(text: str) -> list[str]:
    lowered = text.lower()
    return sorted(secret for secret in ALL_SECRETS if secret in lowered)


def test_the_secrets_are_the_cells_and_the_search_finds_them():
    assert {"zebediah", "quarrington", "1961-07-23", "+2348099911122", "bp: 151/97", "xerostomia"} <= ALL_SECRETS
    assert leaked(csv_bytes(TRIAGE).decode()) and leaked("… ZEBEDIAH …") == ["zebediah"]


# Files whose rows must not come back in any message: (file name, bytes, the rule the loader refuses them with).
FILES = {
    "patients_2026-11-14.csv": (csv_bytes(PATIENTS), "unexpected_columns"),  # exported without the header row
    "triage_visits_2026-11-14.csv": (csv_bytes(TRIAGE), "unexpected_columns"),
    "patients_2026-11-15.csv": (csv_bytes(PATIENTS, PATIENT_HEADER).replace(b"Zebediah", b'"Zebediah'), "malformed_csv"),
    "patients_2026-11-16.csv": (csv_bytes(PATIENTS, PATIENT_HEADER).replace(b"+2348099911122", b"+2348099911122,1961"),
                                "malformed_csv"),
    "patients_2026-11-17.csv": (csv_bytes(PATIENTS, PATIENT_HEADER).replace(b"Quarrington", b"Qu\x81\x8drrington"),
                                "undecodable_text"),
    "patients_2026-11-18.csv": (csv_bytes(PATIENTS, PATIENT_HEADER).replace(b"Philippa", b"Phi\x00lippa"),
                                "undecodable_text"),
    "patients_2026-11-19.csv": (csv_bytes(PATIENTS[:1], PATIENT_HEADER) + "Saint Ottoline Clinic,Zoë,Quarrington,F,"
                                "1979-02-11,+2348055500123\n".encode("cp1252") + "Émile,Dunwoody-Marsh\n".encode(),
                                "mixed_encodings"),
}


def test_the_loader_refuses_each_file_without_a_value_in_the_ledger_the_sidecar_the_outcome_or_the_log(
        settings, store, db, caplog):
    for name, (data, _) in FILES.items():
        store.put(PREFIX + name, data)
    with caplog.at_level("DEBUG"):
        outcomes = {name: ingest_file(PREFIX + name, settings=settings) for name in FILES}

    assert {name: o.error.split(":")[0] for name, o in outcomes.items()} == {n: rule for n, (_, rule) in FILES.items()}
    errors = [row[0] for row in db.execute("select error from ops.file_ledger")]
    sidecars = [store.read(o.moved_to + ".error.json").decode() for o in outcomes.values()]
    xcoms = [json.dumps(o.as_dict(), default=str) for o in outcomes.values()]  # what the load task returns
    assert len(errors) == len(sidecars) == len(FILES)
    assert leaked("\n".join(errors + sidecars + xcoms + [caplog.text])) == []


def test_an_error_the_loader_did_not_expect_is_told_without_its_message(settings, store, db, monkeypatch, caplog):
    """A reader that trips over a file with a message quoting it (as a pandas or csv error would): the file is
    quarantined, and the message is replaced by the error's class and place."""
    import elt.warehouse.loader as loader

    def trips(contract, header_line, **kwargs):
        raise ValueError(f"could not parse {header_line!r}")

    monkeypatch.setattr(loader, "map_header", trips)
    store.put(PREFIX + "patients_2026-11-14.csv", csv_bytes(PATIENTS, PATIENT_HEADER))
    with caplog.at_level("DEBUG"):
        outcome = ingest_file(PREFIX + "patients_2026-11-14.csv", settings=settings)

    assert outcome.status == "failed" and "/quarantine/" in outcome.moved_to
    error = db.execute("select status, error from ops.file_ledger").fetchone()
    assert error[0] == "quarantined" and error[1].startswith("load_error: ") and "ValueError" in error[1]
    assert "raised at elt/warehouse/loader.py:" in error[1] and "in copy_file" in error[1]  # where to look
    sidecar = store.read(outcome.moved_to + ".error.json").decode()
    assert leaked("\n".join([error[1], sidecar, json.dumps(outcome.as_dict()), caplog.text])) == []


@pytest.mark.e2e
def test_headerless_files_leave_no_value_in_the_task_log_xcom_ledger_sidecar_or_api(
        settings, store, db, airflow_home, monkeypatch, capfd):
    for name, (data, _) in FILES.items():
        store.put(PREFIX + name, data)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from elt.config import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    capfd.readouterr()
    run = DagBag(str(DAGS)).dags["medilink_ingest"].test()
    task_log = "".join(capfd.readouterr())  # dag.test() runs the tasks in this process: their log is its output
    task_log += "".join(path.read_text(errors="replace") for path in Path(airflow_home).rglob("*.log"))
    get_settings.cache_clear()

    assert run.state == "success"  # bad files are quarantined, not failures
    assert "unexpected_columns" in task_log and "patients_2026-11-14.csv" in task_log  # the log was captured
    statuses = db.execute("select status, error from ops.file_ledger order by key").fetchall()
    assert [status for status, _ in statuses] == ["quarantined"] * len(FILES)
    xcoms = _xcom_values(run.run_id)
    assert "unexpected_columns" in xcoms  # the outcomes are there
    sidecars = [store.read(obj.key).decode() for obj in store.list("medical_records/quarantine/")
                if obj.key.endswith(".error.json")]
    assert len(sidecars) == len(FILES)
    runs = db.execute("select coalesce(detail, '') from ops.pipeline_runs").fetchall()

    api_answers = _through_the_api(settings, monkeypatch)

    assert leaked(task_log) == []
    assert leaked(xcoms) == []
    assert leaked("\n".join(error for _, error in statuses)) == []
    assert leaked("\n".join(sidecars)) == []
    assert leaked(json.dumps(runs)) == []
    assert leaked(api_answers) == []


def _xcom_values(run_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return "\n".join(json.dumps(xcom.value, default=str) for xcom in
                         session.scalars(select(XComModel).where(XComModel.run_id == run_id)))


def _through_the_api(settings, monkeypatch) -> str:
    """The files posted to `POST /api/v1/drops` (refused: what the sender reads) and each quarantined file's run
    read back through `GET /api/v1/runs/<run_id>` (what an analyst reads): every answer's text."""
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings
    from tests.backend.fake_airflow import FakeAirflow

    airflow = FakeAirflow().start()
    try:
        app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="", airflow_url=airflow.url),
                         elt_settings=settings)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "t", "admin")
        answers = []
        for name in ("patients_2026-11-14.csv", "triage_visits_2026-11-14.csv"):
            drop_type = "medilink_patients" if name.startswith("patients") else "medilink_triage_visits"
            refused = client.post("/api/v1/drops", data={"drop_type": drop_type, "file": (BytesIO(FILES[name][0]), name)},
                                  content_type="multipart/form-data")
            assert refused.status_code == 422 and refused.get_json()["error"]["rule"] == "unexpected_columns"
            answers.append(refused.get_data(as_text=True))
        for number, name in enumerate(FILES):
            # The run that loaded the file, as Airflow's API reports it: its conf names the key.
            airflow.runs[("medilink_ingest", f"run_{number}")] = {"dag_run_id": f"run_{number}", "state": "success",
                                                                  "conf": {"key": PREFIX + name}}
            answer = client.get(f"/api/v1/runs/run_{number}")
            assert answer.status_code == 200 and answer.get_json()["drop"]["status"] == "quarantined"
            answers.append(answer.get_data(as_text=True))
        return "\n".join(answers)
    finally:
        airflow.stop()
