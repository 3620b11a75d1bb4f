# One image for every application service in docker-compose.yaml: the Airflow components (api-server,
# scheduler, dag-processor, triggerer, and the one-shot airflow-init) and the Flask API. The default
# command serves the API; the compose file gives each Airflow service its own command.
#
#   docker build -t health-warehouse:local .
#   docker run --rm -p 5000:5000 -e API_DATABASE_URL=postgresql://HOST:5432/warehouse \
#       -e API_DB_PASSWORD=... -e API_DROPS_DB_PASSWORD=... health-warehouse:local
# (the API logs in as its own logins, health_api and health_api_drops, which `elt init-db` creates: never give
# it the owner's DATABASE_URL)
FROM python:3.11-slim-bookworm

# Airflow's home (airflow.cfg with the generated secrets, task logs, SimpleAuthManager passwords) is a
# named volume in compose, shared by the Airflow services so that all of them use the same JWT secret.
# DAGs are read straight from the repository copy in the image.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/health-warehouse/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    DO_NOT_TRACK=1 \
    SCARF_ANALYTICS=false \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    API_WORKERS=2 \
    API_THREADS=8

# Same uid/gid as the official Airflow image, so volumes move between the two without chown.
RUN groupadd --system --gid 50000 app \
    && useradd --system --uid 50000 --gid app --home-dir /opt/airflow --no-create-home \
        --shell /usr/sbin/nologin app \
    && python -m venv /opt/venv

WORKDIR /opt/health-warehouse

# Dependencies first, in their own layer: it is rebuilt only when the pins change, not on every code edit.
# Airflow needs exact pins; constraints.txt holds them for everything requirements.txt pulls in.
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

# The repository (see .dockerignore), then the package itself without resolving dependencies a second
# time. Editable, as ./start.sh installs it: elt.config.REPO_ROOT then points at this copy, so the dbt
# project (dbt/) and the contracts are found where they are in a checkout. `elt parse` writes
# dbt/target/manifest.json (no database needed), which medilink_marts renders its per-model dbt tasks from.
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q elt backend airflow \
    && elt parse \
    && mkdir -p /opt/airflow dbt/target dbt/logs \
    && chown -R app:app /opt/airflow dbt

# The code stays owned by root and read-only to the app user; it writes only to Airflow's home and to
# dbt's target/ and logs/.
USER app

EXPOSE 5000 8080 8501

# granian's main process is PID 1 (it gets SIGTERM; see API_SHUTDOWN_GRACE_SECONDS). Workers, threads and the
# access log format come from backend/serve.py, which reads API_WORKERS and API_THREADS: only the address is given.
CMD ["python", "-m", "backend.serve", "--host", "0.0.0.0", "--port", "5000"]
