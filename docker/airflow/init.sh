#!/usr/bin/env bash
# One-shot setup that the compose service `airflow-init` runs before any other Airflow service starts.
#
# 1. `airflow db migrate` creates or upgrades the metadata schema in the `airflow` database. Being the
#    first Airflow command to run on the shared AIRFLOW_HOME volume, it also writes airflow.cfg there
#    with a generated fernet key, API secret key and JWT secret; every Airflow service reads that same
#    file, so tokens issued by the scheduler are accepted by the api-server.
# 2. Writes SimpleAuthManager's passwords file from AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD (.env),
#    so the UI login is the one configured rather than a generated one printed to a log. It is rewritten
#    on every start, so a changed password in .env takes effect on the next `docker compose up`.
# 3. Makes the buckets the declared s3 deliveries write to (airflow/connectors/*.yml) on the local MinIO, as
#    ./start.sh does on its endpoint: derived from the declarations, so a new connector needs no edit here.
# Between them it creates the `dbt_build` pool that every family's marts build runs in (without it, that task
# would wait forever).
set -euo pipefail

: "${AIRFLOW_HOME:?AIRFLOW_HOME must be set (the image sets it)}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set it in docker-compose.yaml}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: the dbt_build pool (one slot: one family's dbt build at a time; elt/dag_factory.py)"
airflow pools set dbt_build 1 "One dbt build at a time: every family's marts build includes the shared ledger view."

echo "airflow-init: writing the SimpleAuthManager passwords file"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
user = os.environ.get("AIRFLOW_ADMIN_USER") or "admin"
password = os.environ.get("AIRFLOW_ADMIN_PASSWORD") or "admin"
path.parent.mkdir(parents=True, exist_ok=True)
path.touch(mode=0o600, exist_ok=True)
path.chmod(0o600)
path.write_text(json.dumps({user: password}) + "\n")
PY

echo "airflow-init: the export buckets the declared s3 deliveries name (local MinIO only)"
python - <<'PY'
from elt.config import get_settings
from elt.connectors.spec import export_buckets, load_declared
from elt.storage.s3 import ObjectStore

settings = get_settings()
connectors, problems = load_declared(settings.connectors_dir)  # a bad file is left out: `elt connectors check`
for bucket in export_buckets(connectors.values()):
    ObjectStore(settings, bucket=bucket).ensure_bucket()
    print(f"  bucket {bucket}")
PY

echo "airflow-init: done"
