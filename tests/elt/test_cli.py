"""What a new user does from the shell: put a file into the landing bucket, ingest it, and read from
`elt files` and `elt rejects` exactly what happened to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from elt.cli import main

PREFIX = "medical_records/input/"
TRIAGE_HEADER = "facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,recommendations"


@pytest.fixture
def cli_env(settings, monkeypatch):
    """The `elt` command pointed at the test's database and bucket, as ./start.sh points it at the stack."""
    from elt.config import get_settings

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_put_lands_a_file_under_its_drop_types_prefix(cli_env, store, tmp_path, capsys):
    path = tmp_path / "triage_visits_2026-12-01.csv"
    path.write_text(TRIAGE_HEADER + "\nGeneral Hospital,Ada,Obi,3,Cough,BP: 120/80,,\n")
    assert main(["put", str(path)]) == 0
    assert store.read(PREFIX + path.name) == path.read_bytes()
    assert "medilink_triage_visits" in capsys.readouterr().out


def test_demo_lands_its_drops_where_the_medilink_contracts_expect_them(cli_env, store, capsys):
    from elt.demo import generate_medilink_drops

    assert main(["demo", "--days", "2", "--seed", "7"]) == 0
    landed = {obj.key for obj in store.list(PREFIX)}
    names = set(generate_medilink_drops(end_date=datetime.now(UTC).date() - timedelta(days=1), days=2, seed=7).files)
    assert landed == {PREFIX + name for name in names} and len(names) == 6  # facilities, patients, 2 x 2 daily files
    assert f"to s3://{cli_env.s3_bucket}/{PREFIX} " in capsys.readouterr().out


def test_put_refuses_a_name_no_contract_expects_and_says_what_would_fit(cli_env, store, tmp_path, capsys):
    path = tmp_path / "export.csv"
    path.write_text(TRIAGE_HEADER + "\n")
    assert main(["put", str(path)]) == 2
    err = capsys.readouterr().err
    assert "matches no drop type" in err and "triage_visits" in err and "medical_records/input/" in err
    assert list(store.list("")) == []
    # Named on the command line, it lands under the name the drop type expects.
    assert main(["put", str(path), "--name", "triage_visits_2026-12-01.csv"]) == 0
    assert [obj.key for obj in store.list("")] == [PREFIX + "triage_visits_2026-12-01.csv"]


def test_files_says_in_full_why_a_file_was_quarantined_and_where_it_went(cli_env, store, tmp_path, capsys):
    broken = tmp_path / "triage_visits_2026-12-01.csv"
    broken.write_text(TRIAGE_HEADER.replace("patient_last_name", "patient_lastname") + "\nA,B,C,3,x,,,\n")
    partly_bad = tmp_path / "triage_visits_2026-12-02.csv"
    partly_bad.write_text(TRIAGE_HEADER + "\nGeneral Hospital,Ada,Obi,3,Cough,,,\n,Ada,Obi,9,Cough,,,\n")
    for path in (broken, partly_bad):
        assert main(["put", str(path)]) == 0
    assert main(["ingest"]) == 1  # one file was not loaded
    capsys.readouterr()

    assert main(["files"]) == 0
    out = capsys.readouterr().out
    # The misspelled column's position and the one it should have been, untruncated, and where the file now sits.
    assert ("header column 3 is not a column of contract medilink_triage_visits v1 (did you mean patient_last_name?); "
            "missing: patient_last_name") in out
    assert "now at medical_records/quarantine/" in out
    # The other file loaded one row; its second row broke two rules: where to read them.
    assert "2 row(s) rejected" not in out and "1 row(s) rejected; see `elt rejects" in out
    file_id = next(line.split()[1] for line in out.splitlines() if "row(s) rejected" in line).rstrip(":")
    assert main(["rejects", file_id]) == 0
    rejects = capsys.readouterr().out
    assert "facility_name" in rejects and "required" in rejects and "triage_level" in rejects


def test_put_builds_a_claims_key_from_its_fields_as_an_upload_does(cli_env, store, tmp_path, capsys):
    path = tmp_path / "batch_1.csv"
    path.write_bytes(b"ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,DiagnosisCode,ProcedureCode,BilledAmount\n")
    assert main(["put", str(path), "--drop-type", "claims"]) == 2  # no payer, no month: where would it go?
    err = capsys.readouterr().err
    assert "--field payer=^[a-z][a-z0-9_]{1,39}$ --field month=YYYY-MM" in err
    assert main(["put", str(path), "--field", "payer=aetna", "--field", "month=2024-13"]) == 2
    capsys.readouterr()
    assert main(["put", str(path), "--field", "payer=aetna", "--field", "month=2024-01"]) == 0
    key = "claims/provider=aetna/year=2024/month=01/batch_1.csv"
    assert store.read(key) == path.read_bytes() and key in capsys.readouterr().out
