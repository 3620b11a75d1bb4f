"""POST /api/v1/drops, POST /api/v1/drops/from-url and GET /api/v1/runs/<run_id> on a real warehouse database and
landing bucket, with a loopback server answering like Airflow 3's REST API (tests/backend/fake_airflow.py).

A drop is stored with its bytes unchanged under its drop type's landing prefix, registered in the ledger as
'discovered' and its ingest DAG started with conf {"key": key}; every refusal stores nothing and says why;
once stored, nothing is lost when Airflow is away. Who may drop what is the contract's (drop_role,
revision_role); a run is shown to the key that started it and to admins. The tests' client is a clinician
key unless a test says otherwise (Medilink visits are patient-level).
"""

from __future__ import annotations

import socket
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from urllib.parse import parse_qs, urlsplit

import pytest

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from backend.fetch import FetchPolicy
from elt.contracts import load_contracts
from elt.preflight import sniff
from tests.backend.conftest import api_settings
from tests.conftest import shared_data
from tests.elt.kh03_fixtures import Kh03Spec, build_kh03

KH03_REAL = "Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
KH03_NAME = "Beds-Open-Overnight-Q2-2020-21.xlsx"  # the generated workbook is July to September 2020


@pytest.fixture(scope="module")
def medilink() -> dict[str, bytes]:
    from elt.demo import generate_medilink_drops

    return generate_medilink_drops(end_date=date(2026, 11, 14), days=1, seed=5).files


@pytest.fixture(scope="module")
def kh03() -> bytes:
    return build_kh03()


@pytest.fixture
def drop_keys(settings) -> dict[str, str]:
    return {role: create_key(settings.database_url, f"drops {role}", role) for role in ("analyst", "clinician", "admin")}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def make_client(settings, airflow, drop_keys, login_passwords):
    """A test client of an app on this test's warehouse and bucket, sending a key of `role`; the app logs in as
    its own logins, so a drop is registered as health_api_drops."""

    def make(role: str | None = "clinician", fetch_policy: FetchPolicy | None = None, **overrides):
        api = api_settings(settings.database_url, login_passwords, **{"rate_limit": "", "airflow_url": airflow.url,
                                                                       **overrides})
        app = create_app(api, elt_settings=settings)
        if fetch_policy:
            app.config["FETCH_POLICY"] = fetch_policy
        client = app.test_client()
        if role:
            client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {drop_keys[role]}"
        return client

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def upload(client, drop_type, name, data):
    return client.post("/api/v1/drops", data={"drop_type": drop_type, "file": (BytesIO(data), name)},
                       content_type="multipart/form-data")


def stored_keys(store) -> list[str]:
    return sorted(obj.key for obj in store.list(""))


def ledger(db) -> list[tuple]:
    return db.execute("select file_id, key, status, drop_type from ops.file_ledger order by file_id").fetchall()


# --- accepted --------------------------------------------------------------------------------------------------
def test_a_csv_drop_is_stored_registered_and_its_dag_started(client, store, db, airflow, medilink):
    data = medilink["triage_visits_2026-11-14.csv"]
    response = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv", data)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    key = "medical_records/input/triage_visits_2026-11-14.csv"
    assert store.read(key) == data
    assert ledger(db) == [(body["drop_id"], key, "discovered", "medilink_triage_visits")]
    (trigger,) = airflow.triggers()
    assert trigger.path == "/api/v2/dags/medilink_ingest/dagRuns"
    assert trigger.body["conf"] == {"key": key} and trigger.body["logical_date"] is None
    import hashlib

    assert body == {
        "drop_id": body["drop_id"], "key": key, "drop_type": "medilink_triage_visits",
        "file_name": "triage_visits_2026-11-14.csv", "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "dag_id": "medilink_ingest", "run_id": trigger.body["dag_run_id"],
        "status_url": f"/api/v1/runs/{trigger.body['dag_run_id']}", "message": body["message"], "warning": None,
    }
    assert response.headers["Location"] == body["status_url"]
    assert f"drop {body['drop_id']}" in body["message"] and body["status_url"] in body["message"]


@pytest.mark.parametrize("source", ["generated", "shared"])
def test_a_kh03_workbook_passes_every_check_and_starts_nhs_beds_ingest(client, store, db, airflow, kh03, source):
    if source == "shared":
        data, name = shared_data("kh03", KH03_REAL).read_bytes(), KH03_REAL
    else:
        data, name = kh03, KH03_NAME
    response = upload(client, "nhs_kh03_overnight", name, data)
    assert response.status_code == 202, response.get_json()
    key = f"nhs/kh03/{name}"
    assert store.read(key) == data
    assert [(row[1], row[2]) for row in ledger(db)] == [(key, "discovered")]
    (trigger,) = airflow.triggers()
    assert trigger.path == "/api/v2/dags/nhs_beds_ingest/dagRuns" and trigger.body["conf"] == {"key": key}
    assert response.get_json()["dag_id"] == "nhs_beds_ingest"


def test_the_same_bytes_again_are_answered_with_the_loaded_drop_and_not_stored(client, store, db, airflow, kh03,
                                                                                settings):
    from elt.pipeline import ingest_file

    first = upload(client, "nhs_kh03_overnight", KH03_NAME, kh03).get_json()
    assert ingest_file(first["key"], settings=settings).status == "loaded"  # what the triggered run does
    triggers = len(airflow.triggers())

    again = upload(client, "nhs_kh03_overnight", "Beds-Open-Overnight-Q2-2020-21-copy.xlsx", kh03)

    assert again.status_code == 200
    body = again.get_json()
    assert (body["drop_id"], body["key"], body["run_id"]) == (first["drop_id"], first["key"], None)
    assert "nothing new to load" in body["message"]
    assert not [key for key in stored_keys(store) if not key.startswith("nhs/kh03/archive/")]
    assert len(airflow.triggers()) == triggers
    assert [row[2] for row in ledger(db)] == ["loaded"]


def test_a_file_name_is_reduced_to_its_safe_base_name(client, store, medilink):
    response = upload(client, "medilink_facilities", "../../archive/x/facilities_2026-11-14.csv",
                      medilink["facilities_2026-11-14.csv"])
    assert response.status_code == 202
    assert stored_keys(store) == ["medical_records/input/facilities_2026-11-14.csv"]


CLAIMS = (b"ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,DiagnosisCode,ProcedureCode,BilledAmount\n"
          b"C1,M1,1234567890,2024-01-31,2024-01-30,E11.9,99213,120.00\n")


def test_a_claims_batch_is_stored_under_its_payer_and_month_and_its_dag_started(client, store, airflow, db):
    """Claims keys carry provider=<payer>/year=/month= folders: the upload names the payer and the month as form
    fields (the contract's upload_fields) and the key is built from them; the claims family's ingest DAG loads it."""
    response = client.post("/api/v1/drops", data={"drop_type": "claims", "payer": "bluecross", "month": "2024-01",
                                                  "file": (BytesIO(CLAIMS), "batch_7.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["key"] == "claims/provider=bluecross/year=2024/month=01/batch_7.csv"
    assert stored_keys(store) == [body["key"]] and store.read(body["key"]) == CLAIMS
    assert body["dag_id"] == "claims_ingest" and body["status_url"] == f"/api/v1/runs/{body['run_id']}"
    (trigger,) = airflow.triggers()
    assert trigger.path == "/api/v2/dags/claims_ingest/dagRuns" and trigger.body["conf"] == {"key": body["key"]}
    assert [row[1:] for row in ledger(db)] == [(body["key"], "discovered", "claims")]


@pytest.mark.parametrize(("fields", "code", "says"), [
    ({"month": "2024-01"}, "missing_field", "claims drops: the field `payer` is needed"),
    ({"payer": "bluecross"}, "missing_field", "claims drops: the field `month` is needed"),
    ({"payer": "../../medical_records/input", "month": "2024-01"}, "invalid_field", "`payer` must be a value matching"),
    ({"payer": "BlueCross", "month": "2024-01"}, "invalid_field", "`payer` must be a value matching"),
    ({"payer": "bluecross", "month": "2024-13"}, "invalid_field", "`month` must be a month, written YYYY-MM"),
    ({"payer": "bluecross", "month": "2024-01/.."}, "invalid_field", "`month` must be a month"),
])
def test_a_claims_batch_without_its_fields_is_refused_and_nothing_stored(client, store, db, fields, code, says):
    response = client.post("/api/v1/drops", data={"drop_type": "claims", **fields,
                                                  "file": (BytesIO(CLAIMS), "batch_7.csv")},
                           content_type="multipart/form-data")
    body = response.get_json()
    assert response.status_code == 400 and body["error"]["code"] == code and says in body["error"]["message"]
    assert "../" not in body["error"]["message"].replace("`payer` must be a value matching", "")
    assert stored_keys(store) == [] and ledger(db) == []


# --- refused, nothing stored -------------------------------------------------------------------------------------
def test_refusals_store_nothing_and_say_what_to_do(client, store, db, airflow, medilink, kh03):
    triage = medilink["triage_visits_2026-11-14.csv"]
    cases = [
        # (drop type, name, bytes) -> (status, code, words the message must carry)
        (("medilink_nonsense", "triage_visits_2026-11-14.csv", triage), (400, "unknown_drop_type", "medilink_patients")),
        (("medilink_triage_visits", "triage_visits_2026-11-14.xlsx", kh03), (415, "unsupported_extension", ".csv")),
        (("nhs_kh03_overnight", "kh03.csv", triage), (415, "unsupported_extension", ".xlsx or .xls")),
        (("nhs_kh03_overnight", "kh03.pdf", kh03), (415, "unsupported_extension", ".xlsx or .xls")),
        (("medilink_triage_visits", "triage_visits_2026-11-14.csv", kh03), (415, "content_mismatch", "rename it to .xlsx")),
        (("nhs_kh03_overnight", KH03_NAME, triage), (415, "content_mismatch", "plain text")),
        (("nhs_kh03_overnight", "kh03.xls", kh03), (415, "content_mismatch", "an Excel .xlsx workbook")),
        (("medilink_triage_visits", "triage_visits_2026-11-14.csv", b"a,b\x00c\n"), (415, "content_mismatch", "UTF-8")),
        (("medilink_triage_visits", "triage_visits_2026-11-14.csv", b""), (400, "empty_file", "empty")),
        (("medilink_triage_visits", "patients_2026-11-14.csv", medilink["patients_2026-11-14.csv"]),
         (400, "name_not_accepted", "triage_visits")),
        (("medilink_triage_visits", "triage_visits_2026-11-14.csv",
          triage.replace(b"triage_level", b"triage_lvl", 1)), (422, "contract_violation", "did you mean triage_level?")),
        (("nhs_kh03_overnight", KH03_NAME, build_kh03(Kh03Spec(total_overrides={("R1H", "available"): 1.0}))),
         (422, "contract_violation", "Total")),
        (("nhs_kh03_overnight", "Beds-Open-Overnight-Q3-2024-25.xlsx", kh03),
         (422, "contract_violation", "file name says")),
    ]
    for (drop_type, name, data), (status, code, words) in cases:
        response = upload(client, drop_type, name, data)
        error = response.get_json()["error"]
        assert (response.status_code, error["code"]) == (status, code), (name, error)
        assert words in error["message"], (name, error["message"])
    assert stored_keys(store) == [] and ledger(db) == [] and airflow.requests == []


def test_a_contract_refusal_names_the_rule(client, kh03):
    broken = build_kh03(Kh03Spec(total_overrides={("R1H", "available"): 1.0}))
    error = upload(client, "nhs_kh03_overnight", KH03_NAME, broken).get_json()["error"]
    assert error["status"] == 422 and error["rule"] == "total_mismatch"
    error = upload(client, "medilink_triage_visits", "triage_visits_x.csv", b"nothing,we,know\n1,2,3\n").get_json()["error"]
    assert error["rule"] == "unexpected_columns"
    error = upload(client, "medilink_triage_visits", "triage_visits_x.csv", b"x").get_json()["error"]
    assert error["rule"] == "unexpected_columns" and error["status"] == 422


def test_a_name_the_drop_type_does_not_take_shows_its_pattern(client, medilink):
    error = upload(client, "medilink_triage_visits", "visits.csv", medilink["triage_visits_2026-11-14.csv"]).get_json()["error"]
    assert error["code"] == "name_not_accepted" and error["key_pattern"] == r"^(?:[^/]+/)?triage_visits[^/]*\.csv$"
    assert error["key_pattern"] in error["message"]


def test_unknown_drop_types_are_listed(client, medilink):
    error = upload(client, "", "x.csv", b"a\n").get_json()["error"]
    assert error["code"] == "unknown_drop_type" and "nhs_kh03_overnight" in error["allowed"]


def test_a_file_waiting_under_the_key_is_never_overwritten(client, store, db, airflow, medilink):
    key = "medical_records/input/triage_visits_2026-11-14.csv"
    first = medilink["triage_visits_2026-11-14.csv"]
    assert upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv", first).status_code == 202
    second = first + b"Clinic,Ada,Obi,3,cough,,,\n"
    response = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv", second)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "already_waiting"
    assert store.read(key) == first and len(ledger(db)) == 1 and len(airflow.triggers()) == 1


def test_a_file_over_the_limit_is_a_413(make_client, store, medilink):
    client = make_client(upload_max_bytes=1000)
    data = medilink["triage_visits_2026-11-14.csv"]
    assert len(data) > 1000
    response = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv", data)
    assert response.status_code == 413 and "API_UPLOAD_MAX_BYTES" in response.get_json()["error"]["message"]
    # A body beyond MAX_CONTENT_LENGTH (the limit and room for the form) is refused before it is parsed.
    huge = b"a,b\n" * 400_000
    response = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv", huge)
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    assert stored_keys(store) == []


def test_a_missing_file_part_is_a_400(client):
    response = client.post("/api/v1/drops", data={"drop_type": "medilink_triage_visits"},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and "-F file=@" in response.get_json()["error"]["message"]


def test_dropping_needs_a_key(make_client, medilink, store):
    data = medilink["triage_visits_2026-11-14.csv"]
    response = upload(make_client(role=None), "medilink_triage_visits", "triage_visits_2026-11-14.csv", data)
    assert response.status_code == 401
    assert stored_keys(store) == []


# --- who may drop what: each contract's drop_role and revision_role ------------------------------------------------
PATIENT_LEVEL_DROPS = [
    ("medilink_patients", "patients_2026-11-14.csv"), ("medilink_medical_records", "medical_records_2026-11-14.csv"),
    ("medilink_triage_visits", "triage_visits_2026-11-14.csv"),
]


@pytest.mark.parametrize(("drop_type", "name"), PATIENT_LEVEL_DROPS)
def test_an_analyst_may_not_drop_patient_level_files_a_clinician_may(make_client, store, db, airflow, medilink,
                                                                     drop_type, name):
    response = upload(make_client("analyst"), drop_type, name, medilink[name])
    error = response.get_json()["error"]
    assert (response.status_code, error["code"], error["required_role"]) == (403, "forbidden", "clinician")
    assert drop_type in error["message"] and "clinician" in error["message"] and "analyst" in error["message"]
    assert stored_keys(store) == [] and ledger(db) == [] and airflow.requests == []
    assert upload(make_client("clinician"), drop_type, name, medilink[name]).status_code == 202
    assert stored_keys(store) == [f"medical_records/input/{name}"]


def test_the_role_to_drop_is_read_from_the_contract(settings, airflow, drop_keys, tmp_path, medilink, store):
    """No list of drop types and roles in the API: a contract that asks for admin gets admin."""
    for path in settings.contracts_dir.glob("*.yml"):
        (tmp_path / path.name).write_text(path.read_text())
    facilities = tmp_path / "medilink_facilities.yml"
    facilities.write_text(facilities.read_text().replace("drop_role: analyst", "drop_role: admin"))
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="", airflow_url=airflow.url),
                     elt_settings=settings.model_copy(update={"contracts_dir": tmp_path}))
    data, name = medilink["facilities_2026-11-14.csv"], "facilities_2026-11-14.csv"
    for role, status in (("analyst", 403), ("clinician", 403), ("admin", 202)):
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {drop_keys[role]}"
        assert upload(client, "medilink_facilities", name, data).status_code == status, role
    document = app.test_client().get("/openapi.json").get_json()["paths"]["/api/v1/drops"]["post"]
    assert document["x-drop-roles"]["medilink_facilities"] == {"drop_role": "admin", "revision_role": "admin"}


def test_the_openapi_document_tells_the_role_of_every_drop_type(client, settings):

    contracts = load_contracts(settings.contracts_dir)
    operation = client.get("/openapi.json").get_json()["paths"]["/api/v1/drops"]["post"]
    assert operation["x-drop-roles"] == {name: {"drop_role": c.drop_role, "revision_role": c.revision_role or c.drop_role}
                                         for name, c in contracts.items()}
    for name, contract in contracts.items():
        assert f"`{name}`: {contract.drop_role}" in operation["description"]
    assert operation["x-drop-roles"]["medilink_patients"]["drop_role"] == "clinician"
    assert operation["x-drop-roles"]["nhs_kh03_overnight"] == {"drop_role": "analyst", "revision_role": "admin"}
    assert operation["x-drop-fields"] == {name: sorted(c.landing.upload_fields) for name, c in contracts.items()}
    assert operation["x-drop-fields"]["claims"] == ["month", "payer"]  # claims.yml's landing.upload_fields
    assert operation["x-drop-fields"]["medilink_patients"] == operation["x-drop-fields"]["nhs_kh03_overnight"] == []


def test_an_analyst_may_add_a_kh03_quarter_but_only_an_admin_may_replace_a_loaded_one(make_client, store, db,
                                                                                     settings, airflow):
    """The first edition of a quarter is the analyst's to drop; a revision supersedes figures that are served."""
    from elt.pipeline import ingest_file

    analyst, admin = make_client("analyst"), make_client("admin")
    first = upload(analyst, "nhs_kh03_overnight", KH03_NAME, build_kh03())
    assert first.status_code == 202, first.get_json()
    assert ingest_file(first.get_json()["key"], settings=settings).status == "loaded"  # what the run does

    revised = build_kh03(Kh03Spec(published="20th December 2020"))  # the same quarter, published again
    response = upload(analyst, "nhs_kh03_overnight", "Beds-Open-Overnight-Q2-2020-21-revised.xlsx", revised)
    error = response.get_json()["error"]
    assert (response.status_code, error["code"], error["required_role"]) == (403, "forbidden", "admin")
    loaded = first.get_json()["drop_id"]
    assert f"loaded file {loaded}" in error["message"] and "2020-07-01 to 2020-09-30" in error["message"]
    assert [row[0] for row in ledger(db)] == [loaded] and len(airflow.triggers()) == 1

    # Another quarter is new: the analyst may add it.
    q3 = build_kh03(Kh03Spec(period_text="October to December 2020", period_end="December"))
    assert upload(analyst, "nhs_kh03_overnight", "Beds-Open-Overnight-Q3-2020-21.xlsx", q3).status_code == 202
    # The revision, by an admin.
    response = upload(admin, "nhs_kh03_overnight", "Beds-Open-Overnight-Q2-2020-21-revised.xlsx", revised)
    assert response.status_code == 202, response.get_json()


# --- Airflow away: stored, registered, a warning ------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["unreachable", "wrong_password", "unknown_dag"])
def test_when_airflow_cannot_start_the_run_the_file_is_kept_with_a_warning(make_client, store, db, airflow, medilink,
                                                                          failure):
    overrides = {"unreachable": {"airflow_url": f"http://127.0.0.1:{closed_port()}", "airflow_timeout_seconds": 2},
                 "wrong_password": {"airflow_password": "not-it"}, "unknown_dag": {}}[failure]
    if failure == "unknown_dag":
        airflow.dags = ("nhs_beds_ingest",)  # medilink_ingest not parsed (yet)
    client = make_client(**overrides)
    response = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv",
                      medilink["triage_visits_2026-11-14.csv"])
    assert response.status_code == 202
    body = response.get_json()
    assert body["run_id"] is None and body["status_url"] is None and body["dag_id"] == "medilink_ingest"
    assert "next scheduled run (02:00 UTC)" in body["warning"] and "Airflow UI" in body["warning"]
    assert stored_keys(store) == ["medical_records/input/triage_visits_2026-11-14.csv"]
    assert [row[2] for row in ledger(db)] == ["discovered"] and body["drop_id"] == ledger(db)[0][0]
    assert "Location" not in response.headers


# --- from a URL ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def file_server(medilink, kh03):
    files = {"/files/triage_visits_2026-11-14.csv": medilink["triage_visits_2026-11-14.csv"],
             f"/nhs/{KH03_NAME}": kh03, "/download": kh03, "/files/batch_7.csv": CLAIMS}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/moved":
                return self._send(302, b"", location=f"/nhs/{KH03_NAME}")
            if self.path == "/nhs/Beds-Open-Overnight-by-id.xlsx":  # a named link to an unnamed download
                return self._send(302, b"", location="/download")
            if self.path == "/moved-off-list":
                return self._send(302, b"", location=f"http://127.0.0.1:{self.server.server_port}/nhs/{KH03_NAME}")
            data = files.get(self.path)
            return self._send(200, data) if data is not None else self._send(404, b"not here")

        def _send(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{httpd.server_port}"
    httpd.shutdown()


# The file server is on loopback: these tests allow http and private addresses for "localhost" only.
LOCAL = FetchPolicy(allowed_hosts=("localhost",), max_bytes=1_000_000, allow_http=True, allow_private_addresses=True)


def from_url(client, url, drop_type, **more):
    return client.post("/api/v1/drops/from-url", json={"url": url, "drop_type": drop_type, **more})


def test_a_claims_batch_fetched_by_url_gives_its_fields_in_the_body(make_client, file_server, store, db):
    client = make_client(fetch_policy=LOCAL)
    missing = from_url(client, f"{file_server}/files/batch_7.csv", "claims")
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "missing_field"
    response = from_url(client, f"{file_server}/files/batch_7.csv", "claims",
                        fields={"payer": "aetna", "month": "2024-02"})
    assert response.status_code == 202, response.get_json()
    key = "claims/provider=aetna/year=2024/month=02/batch_7.csv"
    assert response.get_json()["key"] == key and store.read(key) == CLAIMS
    assert [row[1:] for row in ledger(db)] == [(key, "discovered", "claims")]


def test_a_file_fetched_by_url_takes_the_upload_path(make_client, file_server, store, db, airflow, kh03, medilink):
    client = make_client(fetch_policy=LOCAL)
    response = from_url(client, f"{file_server}/moved", "nhs_kh03_overnight")  # named after where it ends up
    assert response.status_code == 202, response.get_json()
    assert store.read(f"nhs/kh03/{KH03_NAME}") == kh03
    assert airflow.triggers()[0].body["conf"] == {"key": f"nhs/kh03/{KH03_NAME}"}
    response = from_url(client, f"{file_server}/files/triage_visits_2026-11-14.csv", "medilink_triage_visits")
    assert response.status_code == 202 and response.get_json()["key"].endswith("triage_visits_2026-11-14.csv")
    response = from_url(client, f"{file_server}/download", "nhs_kh03_overnight", name="Beds-Open-Overnight-extra.xlsx")
    assert response.status_code == 202 and response.get_json()["file_name"] == "Beds-Open-Overnight-extra.xlsx"
    response = from_url(client, f"{file_server}/nhs/Beds-Open-Overnight-by-id.xlsx", "nhs_kh03_overnight")
    assert response.status_code == 202 and response.get_json()["file_name"] == "Beds-Open-Overnight-by-id.xlsx"
    assert [row[2] for row in ledger(db)] == ["discovered"] * 4 and len(airflow.triggers()) == 4


def test_a_fetch_by_url_takes_every_upload_check(make_client, file_server, store):
    client = make_client(fetch_policy=LOCAL)
    response = from_url(client, f"{file_server}/files/triage_visits_2026-11-14.csv", "nhs_kh03_overnight")
    assert response.status_code == 415
    response = from_url(client, f"{file_server}/download", "nhs_kh03_overnight")  # no extension in the URL
    assert response.status_code == 415 and "without an extension" in response.get_json()["error"]["message"]
    assert stored_keys(store) == []


@pytest.mark.parametrize(("path", "policy", "status", "code"), [
    ("/moved-off-list", LOCAL, 400, "host_not_allowed"),      # a redirect to a host not on the list
    ("/missing.xlsx", LOCAL, 502, "fetch_failed"),
    (f"/nhs/{KH03_NAME}", FetchPolicy(allowed_hosts=("localhost",), max_bytes=1000, allow_http=True,
                                      allow_private_addresses=True), 413, "too_large"),
    (f"/nhs/{KH03_NAME}", None, 400, "scheme_not_allowed"),  # the settings' policy: https only
])
def test_a_url_can_be_refused(make_client, file_server, store, path, policy, status, code):
    response = from_url(make_client(fetch_policy=policy), file_server + path, "nhs_kh03_overnight")
    error = response.get_json()["error"]
    assert (response.status_code, error["code"]) == (status, code), error
    assert stored_keys(store) == []


def test_only_the_allowed_hosts_are_fetched_from(make_client, store):
    client = make_client()  # API_FETCH_ALLOWED_HOSTS: www.england.nhs.uk
    for url in ("https://evil.example/kh03.xlsx", "https://www.england.nhs.uk.evil.example/kh03.xlsx"):
        error = from_url(client, url, "nhs_kh03_overnight").get_json()["error"]
        assert error["code"] == "host_not_allowed" and "www.england.nhs.uk" in error["message"]
        assert "POST /api/v1/drops" in error["message"]
    client = make_client(fetch_allowed_hosts="localhost")  # on the list, but loopback: never fetched
    error = from_url(client, "https://localhost/kh03.xlsx", "nhs_kh03_overnight").get_json()["error"]
    assert error["code"] == "private_address"


@pytest.mark.parametrize("url", ["https://www.england.nhs.uk:99999/kh03.xlsx", "https://www.england.nhs.uk:x/kh03.xlsx",
                                 "https://[www.england.nhs.uk/kh03.xlsx"])
def test_a_url_that_does_not_parse_is_a_400_not_a_server_error(client, store, url):
    response = from_url(client, url, "nhs_kh03_overnight")
    error = response.get_json()["error"]
    assert (response.status_code, error["code"]) == (400, "invalid_url")
    assert "check the URL" in error["message"] and stored_keys(store) == []


@pytest.mark.parametrize("body", [None, [], {"url": "https://www.england.nhs.uk/x.xlsx"},
                                  {"url": "https://www.england.nhs.uk/x.xlsx", "drop_type": "x", "extra": 1}])
def test_a_body_that_is_not_the_json_described_is_a_400(client, body):
    response = client.post("/api/v1/drops/from-url", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_body"


# --- runs -----------------------------------------------------------------------------------------------------------
def test_a_run_says_how_the_load_is_going(client, airflow, medilink, db):
    body = upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv",
                  medilink["triage_visits_2026-11-14.csv"]).get_json()
    response = client.get(body["status_url"])
    assert response.status_code == 200
    run = response.get_json()
    assert run["run_id"] == body["run_id"] and run["dag_id"] == "medilink_ingest" and run["state"] == "queued"
    assert run["key"] == body["key"] and run["queued_at"] and run["run_type"] == "manual"
    assert run["drop"] == {"drop_id": body["drop_id"], "drop_type": "medilink_triage_visits", "status": "discovered",
                           "rows_loaded": None, "rows_rejected": None, "error": None}
    # It is looked for in every ingest DAG; its end state comes from Airflow as it is.
    airflow.runs[("medilink_ingest", body["run_id"])].update(state="success", end_date="2026-11-15T02:03:00Z")
    db.execute("update ops.file_ledger set status = 'quarantined', error = 'missing_columns: ...' where file_id = %s",
               (body["drop_id"],))
    run = client.get(body["status_url"]).get_json()
    assert (run["state"], run["end_date"], run["drop"]["status"]) == ("success", "2026-11-15T02:03:00Z", "quarantined")
    assert [r.path.split("/")[4] for r in airflow.calls("GET", "/api/v2/dags/")] == ["medilink_ingest"] * 2


def test_a_run_of_the_nhs_dag_is_found_too_by_an_admin(make_client, airflow):
    airflow.runs[("nhs_beds_ingest", "scheduled__2026-11-15T02:00:00+00:00")] = {
        "dag_run_id": "scheduled__2026-11-15T02:00:00+00:00", "state": "running", "run_type": "scheduled",
        "queued_at": None, "start_date": "2026-11-15T02:00:01Z", "end_date": None, "conf": {}, "note": None}
    run = make_client("admin").get("/api/v1/runs/scheduled__2026-11-15T02:00:00+00:00").get_json()
    assert (run["dag_id"], run["state"], run["key"], run["drop"]) == ("nhs_beds_ingest", "running", None, None)
    # Nobody's drop started it: only admins see it.
    assert make_client("clinician").get("/api/v1/runs/scheduled__2026-11-15T02:00:00+00:00").status_code == 404


def test_an_unknown_run_is_a_404_and_a_bad_id_a_400(make_client, airflow):
    client = make_client("admin")
    response = client.get("/api/v1/runs/manual__nothing")
    assert response.status_code == 404 and "medilink_ingest" in response.get_json()["error"]["message"]
    # Every family's ingest DAG is asked, in the order of the families' files (elt/families/*.yml).
    assert [r.path.split("/")[4] for r in airflow.calls("GET")] == ["claims_ingest", "medilink_ingest",
                                                                    "nhs_beds_ingest"]
    assert client.get("/api/v1/runs/a%20b").status_code == 400
    assert client.get("/api/v1/runs/" + "x" * 251).status_code == 400


def test_a_run_and_its_files_ledger_error_are_shown_only_to_the_key_that_started_it_and_admins(
        settings, make_client, airflow, drop_keys, db, kh03):
    """Another caller cannot read a run, nor so the ledger error of the file it loaded; it is answered as a run that
    does not exist."""
    starter = make_client("analyst")
    body = upload(starter, "nhs_kh03_overnight", KH03_NAME, kh03).get_json()
    db.execute("update ops.file_ledger set status = 'quarantined', error = 'bad_value: Org Code R1H ...' "
               "where file_id = %s", (body["drop_id"],))
    other_analyst = create_key(settings.database_url, "another analyst", "analyst")
    for headers in ({"Authorization": f"Bearer {other_analyst}"}, {"Authorization": f"Bearer {drop_keys['clinician']}"}):
        response = starter.get(body["status_url"], headers=headers)
        error = response.get_json()["error"]
        assert (response.status_code, error["code"]) == (404, "run_not_found")  # as if there were no such run
        assert "bad_value" not in response.get_data(as_text=True)
    unknown = starter.get("/api/v1/runs/api_drop_999_20261203T101500123456Z",
                          headers={"Authorization": f"Bearer {other_analyst}"})
    assert unknown.get_json()["error"]["message"] == error["message"].replace(body["run_id"], "api_drop_999_20261203T101500123456Z")
    assert [r.path for r in airflow.calls("GET")] == []  # nothing was even asked of Airflow for them
    mine = starter.get(body["status_url"]).get_json()
    assert mine["drop"]["error"] == "bad_value: Org Code R1H ..."
    assert make_client("admin").get(body["status_url"]).get_json()["drop"]["drop_id"] == body["drop_id"]
    assert db.execute("select key_id, object_key, file_id from ops.api_runs where run_id = %s",
                      (body["run_id"],)).fetchall() == [(int(drop_keys["analyst"].split("_")[1]), body["key"],
                                                          body["drop_id"])]


def test_runs_answer_503_when_airflow_is_away(make_client):
    client = make_client("admin", airflow_url=f"http://127.0.0.1:{closed_port()}", airflow_timeout_seconds=2)
    response = client.get("/api/v1/runs/manual__x")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "airflow_unavailable"


def test_runs_need_a_key(make_client):
    assert make_client(role=None).get("/api/v1/runs/manual__x").status_code == 401


# --- the marts run that an ingest run's published data started ---------------------------------------------------
def drop_a_visit_file(client, medilink) -> dict:
    return upload(client, "medilink_triage_visits", "triage_visits_2026-11-14.csv",
                  medilink["triage_visits_2026-11-14.csv"]).get_json()


def test_no_marts_run_is_named_before_the_load_publishes_nor_after_it_published_nothing(client, airflow, medilink):
    body = drop_a_visit_file(client, medilink)
    run = client.get(body["status_url"]).get_json()
    assert (run["state"], run["marts"]) == ("queued", None)
    assert "has not published yet" in run["message"] and "medilink_marts" in run["message"]
    (asked,) = airflow.asset_event_calls()
    query = parse_qs(urlsplit(asked.path).query)
    assert (query["source_dag_id"], query["source_run_id"]) == (["medilink_ingest"], [body["run_id"]])
    # An event of another run of the same DAG is not this run's.
    airflow.publish("medilink_ingest", "scheduled__2026-11-15T02:00:00+00:00", timestamp="2026-11-15T02:05:00Z",
                    created=(("medilink_marts", "asset_triggered__2026-11-15T02:05:01", "success"),))
    airflow.runs[("medilink_ingest", body["run_id"])].update(state="success")
    run = client.get(body["status_url"]).get_json()
    assert (run["state"], run["marts"]) == ("success", None)
    assert "published no new raw data" in run["message"]


def test_the_marts_run_the_published_data_started_is_followed_to_its_state(client, airflow, medilink):
    body = drop_a_visit_file(client, medilink)
    airflow.runs[("medilink_ingest", body["run_id"])].update(state="success")
    event = airflow.publish("medilink_ingest", body["run_id"], timestamp="2026-11-15T10:00:00Z")
    run = client.get(body["status_url"]).get_json()  # published; the scheduler has not created the marts run yet
    assert run["marts"] == {"dag_id": "medilink_marts", "run_id": None, "state": "waiting"}
    assert "not started a run for it yet" in run["message"]
    # Another DAG scheduled on the same asset is not the marts DAG.
    airflow.created(event, "raw_audit", "asset_triggered__audit", "running", start_date="2026-11-15T10:00:30Z")
    airflow.created(event, "medilink_marts", "asset_triggered__first", "running")
    run = client.get(body["status_url"]).get_json()
    assert (run["state"], run["marts"]) == ("success", {"dag_id": "medilink_marts", "run_id": "asset_triggered__first",
                                                        "state": "running"})
    assert "medilink_marts run asset_triggered__first builds the marts" in run["message"]
    # The run's publish task cleared and run again: its newer event started another marts run, the one to follow.
    airflow.publish("medilink_ingest", body["run_id"], timestamp="2026-11-15T11:00:00Z",
                    created=(("medilink_marts", "asset_triggered__second", "success"),))
    event["created_dagruns"][-1]["state"] = "failed"
    run = client.get(body["status_url"]).get_json()
    assert run["marts"] == {"dag_id": "medilink_marts", "run_id": "asset_triggered__second", "state": "success"}


def test_the_marts_dag_is_the_family_of_the_runs_dag(make_client, airflow, kh03):
    client = make_client("analyst")
    body = upload(client, "nhs_kh03_overnight", KH03_NAME, kh03).get_json()
    airflow.publish("nhs_beds_ingest", body["run_id"], asset="nhs_beds_raw", timestamp="2026-11-15T10:00:00Z",
                    created=(("nhs_beds_marts", "asset_triggered__beds", "queued"),))
    run = client.get(body["status_url"]).get_json()
    assert (run["dag_id"], run["marts"]) == ("nhs_beds_ingest", {"dag_id": "nhs_beds_marts",
                                                                 "run_id": "asset_triggered__beds", "state": "queued"})
    query = parse_qs(urlsplit(airflow.asset_event_calls()[0].path).query)
    assert query["source_dag_id"] == ["nhs_beds_ingest"]


@pytest.mark.parametrize("failure", ["down", "http_500"])
def test_airflow_failing_to_name_the_marts_run_still_answers_the_load(client, airflow, medilink, failure):
    """Airflow 3.3.2 answers the events call 500 while a marts run it created has not started (its
    DagRunAssetReference needs a start_date): the load's state is still told."""
    body = drop_a_visit_file(client, medilink)
    airflow.runs[("medilink_ingest", body["run_id"])].update(state="success")
    airflow.publish("medilink_ingest", body["run_id"], timestamp="2026-11-15T10:00:00Z",
                    created=(("medilink_marts", "asset_triggered__x", "success"),))
    airflow.events_down, airflow.events_status = failure == "down", 500 if failure == "http_500" else None
    response = client.get(body["status_url"])
    assert response.status_code == 200
    run = response.get_json()
    assert (run["state"], run["drop"]["status"]) == ("success", "discovered")
    assert run["marts"] == {"dag_id": "medilink_marts", "run_id": None, "state": "unknown"}
    assert "Airflow did not say which medilink_marts run" in run["message"]
    assert len(airflow.asset_event_calls()) == 1


def test_a_marts_run_is_told_only_through_the_run_that_started_it(settings, make_client, airflow, medilink):
    starter = make_client("clinician")
    body = drop_a_visit_file(starter, medilink)
    airflow.publish("medilink_ingest", body["run_id"], timestamp="2026-11-15T10:00:00Z",
                    created=(("medilink_marts", "asset_triggered__x", "running"),))
    airflow.runs[("medilink_marts", "asset_triggered__x")] = {"dag_run_id": "asset_triggered__x", "state": "running"}
    other = {"Authorization": f"Bearer {create_key(settings.database_url, 'another clinician', 'clinician')}"}
    assert starter.get(body["status_url"], headers=other).status_code == 404
    assert airflow.asset_event_calls() == []  # nothing was asked of Airflow for another key's run
    assert starter.get(body["status_url"]).get_json()["marts"]["run_id"] == "asset_triggered__x"
    # The marts run is not an ingest run a drop started: it is not served on its own, even to the starter.
    assert starter.get("/api/v1/runs/asset_triggered__x").status_code == 404


# --- content sniffing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "found"), [
    (b"PK\x03\x04rest", "xlsx"), (bytes.fromhex("D0CF11E0A1B11AE1") + b"rest", "xls"),
    (b"\xef\xbb\xbfname,state\nAminu,Kano\n", "csv"), ("naïve,café\n".encode("cp1252"), "csv"),
    ("naïve,café\n".encode(), "csv"), (b"a,b\x00\n", None), (b"\x81\x8d\x8f\x90\x9d", None),
])
def test_content_is_recognised_by_its_first_bytes_or_as_text(data, found):
    assert sniff(data) == found
