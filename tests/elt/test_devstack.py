"""The local stack's promises: the bucket survives a restart, and CI runs what a developer runs."""

from __future__ import annotations

from pathlib import Path

from elt.devstack.servers import LocalS3, free_port

REPO = Path(__file__).resolve().parents[2]


def test_local_s3_objects_survive_a_restart_and_deletions_stick(tmp_path):
    first = LocalS3(free_port(), tmp_path / "s3.log", persist_dir=tmp_path / "s3", bucket="landing")
    first.start()
    first.client().put_object(Bucket="landing", Key="medical_records/input/a.csv", Body=b"a,b\n1,2\n")
    first.client().put_object(Bucket="landing", Key="medical_records/input/gone.csv", Body=b"x")
    first.sync()
    first.client().delete_object(Bucket="landing", Key="medical_records/input/gone.csv")
    first.stop()

    second = LocalS3(free_port(), tmp_path / "s3.log", persist_dir=tmp_path / "s3", bucket="landing")
    second.start()
    try:
        keys = [o["Key"] for o in second.client().list_objects_v2(Bucket="landing").get("Contents", [])]
        body = second.client().get_object(Bucket="landing", Key="medical_records/input/a.csv")["Body"].read()
    finally:
        second.stop()
    assert keys == ["medical_records/input/a.csv"]
    assert body == b"a,b\n1,2\n"


def test_ci_runs_exactly_the_readme_test_command():
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[-1] == "./start.sh test"
    assert "./start.sh test" in (REPO / "README.md").read_text()
