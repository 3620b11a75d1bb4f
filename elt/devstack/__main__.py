"""`python -m elt.devstack up`: what ./start.sh runs after installing dependencies.

Starts, on loopback, the embedded Postgres (databases `warehouse` and `airflow`), a local S3 endpoint
with the landing bucket, Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor) and
the API under granian (`python -m backend.serve`, as the image runs it) and the dashboard (`python -m
backend.dashboard`, Streamlit, reading through the API); uploads demo drops and triggers
`medilink_ingest` on first start (its asset runs `medilink_marts`) and every other nightly family's marts DAG
(`claims_marts`: its marts built empty until its files come); prints where everything is; then
supervises until Ctrl-C, when it stops every process it started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

import psycopg
from psycopg import sql

from elt.config import REPO_ROOT
from elt.devstack.clinic import CONNECTION_VARIABLE as CLINIC_CONNECTION
from elt.devstack.clinic import create_clinic_ehr
from elt.devstack.servers import EmbeddedPostgres, LocalS3, port_is_free, stop_process, wait_for
from elt.warehouse.roles import API_LOGIN, BI_LOGIN, DROPS_LOGIN, LOGINS

log = logging.getLogger("devstack")
# The family whose drops `elt demo` writes (elt/demo.py: Medilink clinic CSVs): its ingest DAG is triggered on the
# first start, and its marts DAG, scheduled on the asset that run publishes, builds the marts.
DEMO_FAMILY = "medilink"


def families() -> dict:
    """The source families (elt/families, FAMILIES_DIR), checked against the contracts: the stack reports each one's
    ingest DAG and says where its drops land."""
    from elt.config import get_settings
    from elt.families import declared_families

    return declared_families(get_settings())


def landing_prefixes() -> list[str]:
    """Where the families' drops land (their contracts' landing prefixes), in order."""
    from elt.config import get_settings
    from elt.contracts import load_contracts
    from elt.families import load_families

    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    families = load_families(settings.families_dir, contracts)
    return sorted({contracts[drop_type].landing.prefix for f in families.values() for drop_type in f.drop_types})


def declared_connectors() -> list:
    """The declared connectors (CONNECTORS_DIR); a file that does not load is logged and left out (`./start.sh elt
    connectors check` says why)."""
    from elt.config import get_settings
    from elt.connectors.spec import load_declared

    connectors, problems = load_declared(get_settings().connectors_dir)
    for problem in problems:
        log.warning("connector left out: %s", problem)
    return list(connectors.values())


# Variables that carry the warehouse owner's or Airflow's database credentials: the API's process is not given them.
OWNER_VARIABLES = ("DATABASE_URL", "AIRFLOW_DATABASE_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "DBT_PG_USER",
                   "DBT_PG_PASSWORD", "PGPASSWORD", "PGUSER", CLINIC_CONNECTION)


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def ensure_login_passwords(env_file: Path, env: dict[str, str]) -> list[str]:
    """Give every project login (elt/warehouse/roles.py) a password: one that `env` (the environment and .env)
    does not set is generated and written to `env_file`, so it stays the same on the next start. No default
    password is shipped. Returns the variables it generated."""
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    generated = []
    for variable in (login.password_variable for login in LOGINS):
        if env.get(variable):
            continue
        env[variable] = secrets.token_urlsafe(24)
        line = f"{variable}={env[variable]}"
        empty = [i for i, text in enumerate(lines) if text.strip() == f"{variable}="]
        if empty:  # an active `VAR=` line would shadow one appended below it (./start.sh keeps the first)
            lines[empty[0]] = line
        else:
            lines.append(line)
        generated.append(variable)
    if generated:
        env_file.write_text("\n".join(lines) + "\n")
        env_file.chmod(0o600)  # it holds passwords now
    return generated


def api_environment(env: dict[str, str]) -> dict[str, str]:
    """The API's environment: where the warehouse is (API_DATABASE_URL, without the owner's user and password)
    and the passwords of its own two logins, but no owner, Airflow or BI credentials."""
    api_env = {key: value for key, value in env.items() if key not in OWNER_VARIABLES}
    others = {login.password_variable for login in LOGINS} - {API_LOGIN.password_variable, DROPS_LOGIN.password_variable}
    api_env = {key: value for key, value in api_env.items() if key not in others}
    if not api_env.get("API_DATABASE_URL") and env.get("DATABASE_URL"):
        parts = urlsplit(env["DATABASE_URL"])
        api_env["API_DATABASE_URL"] = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return api_env


# What the dashboard's process is given of the stack's environment, besides its own DASHBOARD_* settings: it reads
# through the API with its users' keys, so no database URL, password, S3 or Airflow credential is among them.
DASHBOARD_INHERITS = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONUNBUFFERED", "DO_NOT_TRACK",
                      "VIRTUAL_ENV")


def dashboard_environment(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key in DASHBOARD_INHERITS or key.startswith("DASHBOARD_")}


@dataclass
class Service:
    name: str
    command: list[str]
    log_file: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    env: dict = field(default_factory=dict)

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=REPO_ROOT, start_new_session=True)


class Stack:
    def __init__(self) -> None:
        self.data_dir = (REPO_ROOT / _env("DATA_DIR", ".data")).resolve()
        self.logs = self.data_dir / "logs"
        self.pg_port = int(_env("PG_PORT", "5433"))
        self.s3_port = int(_env("S3_PORT", "9000"))
        self.airflow_port = int(_env("AIRFLOW_PORT", "8080"))
        self.api_port = int(_env("API_PORT", "5000"))
        self.dashboard_port = int(_env("DASHBOARD_PORT", "8501"))
        self.bucket = _env("S3_BUCKET", "health-landing")
        self.postgres: EmbeddedPostgres | None = None
        self.s3: LocalS3 | None = None
        self.services: list[Service] = []
        self.env = dict(os.environ)
        self.deliveries_triggered: set[str] = set()  # connectors whose first delivery this start triggered
        self.connectors = declared_connectors()  # read once a start: the status loop looks at them every 5 s

    # --- infrastructure -------------------------------------------------------------------------------
    def start_postgres(self) -> None:
        if os.environ.get("DATABASE_URL"):
            url = os.environ["DATABASE_URL"]
            self.env.setdefault("AIRFLOW_DATABASE_URL", url.rsplit("/", 1)[0] + "/airflow")
            log.info("using the existing Postgres at DATABASE_URL (embedded server not started)")
            return
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", self.pg_port, self.logs / "postgres.log")
        self.postgres.start()
        for database in ("warehouse", "airflow"):
            self.postgres.create_database(database)
        self.env["DATABASE_URL"] = self.postgres.url("warehouse")
        # The demo's clinic system beside the warehouse, which airflow/connectors/clinic_ehr_pull.yml pulls from.
        self.env.update(create_clinic_ehr(self.postgres.url("warehouse")))
        self.env.setdefault("S3_BUCKET", self.bucket)
        self.env["AIRFLOW_DATABASE_URL"] = self.postgres.url("airflow")

    def start_s3(self) -> None:
        if os.environ.get("S3_ENDPOINT_URL"):
            log.info("using the S3 endpoint at S3_ENDPOINT_URL (local endpoint not started)")
            return
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            log.info("S3_ENDPOINT_URL is unset and AWS credentials are set: using AWS S3 bucket %s", self.bucket)
            return
        self.s3 = LocalS3(self.s3_port, self.logs / "s3.log", persist_dir=self.data_dir / "s3", bucket=self.bucket)
        self.s3.start()
        self.env.update(S3_ENDPOINT_URL=self.s3.endpoint_url, AWS_ACCESS_KEY_ID="local",
                        AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION=_env("AWS_DEFAULT_REGION", "us-east-1"))
        from elt.connectors.spec import export_buckets

        client = self.s3.client()
        for bucket in export_buckets(self.connectors):
            client.create_bucket(Bucket=bucket)  # moto answers an existing bucket of ours with success

    # --- Airflow -------------------------------------------------------------------------------------
    def airflow_env(self) -> None:
        home = self.data_dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        secrets_file = home / "secrets.json"
        if not secrets_file.exists():
            secrets_file.write_text(json.dumps({"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}))
            secrets_file.chmod(0o600)
        keys = json.loads(secrets_file.read_text())
        user, password = _env("AIRFLOW_ADMIN_USER", "admin"), _env("AIRFLOW_ADMIN_PASSWORD", "admin")
        passwords = home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({user: password}))
        passwords.chmod(0o600)
        meta = self.env["AIRFLOW_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
        base = f"http://localhost:{self.airflow_port}"
        self.env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "airflow" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "elt.executor.LocalExecutorWithDbt",  # LocalExecutor, dbt preloaded
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.airflow_port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow-tasks"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # The scheduler's pause when a loop found nothing to do (Airflow's default 1 s): a run starts and ends
            # up to this long after its trigger and its last task (docs/decisions/0015).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
            "SCARF_ANALYTICS": "false",
            "PYTHONUNBUFFERED": "1",
        })

    def airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).with_name("airflow")), *args], env=self.env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def start_airflow(self) -> None:
        log.info("migrating the Airflow metadata database (first start takes a minute)")
        result = self.airflow("db", "migrate")
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        from elt.dag_factory import DBT_POOL, DBT_POOL_DESCRIPTION

        result = self.airflow("pools", "set", DBT_POOL, "1", DBT_POOL_DESCRIPTION)  # without it dbt_build never runs
        if result.returncode != 0:
            raise RuntimeError(f"airflow pools set {DBT_POOL} failed:\n{result.stderr[-3000:]}")
        airflow = str(Path(sys.executable).with_name("airflow"))
        for name, args in [
            ("airflow-api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.airflow_port), "--workers", "1"]),
            ("airflow-scheduler", ["scheduler"]),
            ("airflow-dag-processor", ["dag-processor"]),
            ("airflow-triggerer", ["triggerer"]),
        ]:
            service = Service(name, [airflow, *args], self.logs / f"{name}.log", env=self.env)
            service.start()
            self.services.append(service)

    def start_api(self) -> None:
        # The image's server and settings (backend/serve.py: granian, API_WORKERS, API_THREADS), on loopback.
        command = [sys.executable, "-m", "backend.serve", "--host", "127.0.0.1", "--port", str(self.api_port)]
        service = Service("api", command, self.logs / "api.log", env=api_environment(self.env))
        service.start()
        self.services.append(service)

    def start_dashboard(self) -> None:
        # Streamlit, headless, usage statistics off (backend/dashboard/__main__.py), on loopback. It reads through the
        # API with each user's key: its environment holds no database, Airflow or login credentials at all.
        env = dashboard_environment(self.env)
        env.update(DASHBOARD_API_URL=f"http://127.0.0.1:{self.api_port}", DASHBOARD_ADDRESS="127.0.0.1",
                   DASHBOARD_PORT=str(self.dashboard_port))
        service = Service("dashboard", [sys.executable, "-m", "backend.dashboard"], self.logs / "dashboard.log", env=env)
        service.start()
        self.services.append(service)

    # --- demo and status ---------------------------------------------------------------------------------
    def warehouse_has_files(self) -> bool:
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            if not conn.execute("select to_regclass('ops.file_ledger') is not null").fetchone()[0]:
                return False
            return conn.execute("select count(*) from ops.file_ledger").fetchone()[0] > 0

    def upload_demo(self) -> bool:
        """Upload demo drops on the very first start (before Airflow, so its first run finds them)."""
        marker = self.data_dir / "demo-uploaded"
        if _env("DEMO_DATA", "true").lower() not in {"1", "true", "yes"} or marker.exists() or self.warehouse_has_files():
            return False
        log.info("uploading generated Medilink demo drops")
        subprocess.run([str(Path(sys.executable).with_name("elt")), "demo"], env=self.env, check=True)
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        return True

    def trigger_first_run(self) -> None:
        first = first_runs(families(), DEMO_FAMILY)
        log.info("waiting for Airflow to parse %s, then triggering the first runs", ", ".join(first.parsed))
        wait_for(lambda: all(self.airflow("dags", "list", "-o", "plain", timeout=120).stdout.find(dag) >= 0
                             for dag in first.parsed),
                 timeout=300, what=f"DAGs {', '.join(first.parsed)} to be parsed",
                 log_file=self.logs / "airflow-dag-processor.log")
        for dag_id in first.triggered:
            result = self.airflow("dags", "trigger", dag_id)
            if result.returncode != 0:
                log.warning("could not trigger %s: %s", dag_id, result.stderr[-1000:])

    def last_runs(self) -> list[tuple[str, str, str]]:
        """(dag_id, run_id, state) of the latest run of each family's DAGs (those that have run)."""
        try:
            with psycopg.connect(self.env["AIRFLOW_DATABASE_URL"], connect_timeout=3) as conn:
                return conn.execute(
                    "select distinct on (dag_id) dag_id, run_id, state from dag_run where dag_id = any(%s) "
                    "order by dag_id, id desc",
                    ([dag_id for f in families().values() for dag_id in (f.ingest_dag_id, f.marts_dag_id)],)
                ).fetchall()
        except psycopg.Error:
            return []

    def api_ready(self) -> dict | None:
        """The API's /ready answer (503 included: it says which marts are not built yet)."""
        try:
            with urlopen(f"http://127.0.0.1:{self.api_port}/ready", timeout=3) as response:  # noqa: S310
                return json.loads(response.read())
        except HTTPError as error:
            try:
                return json.loads(error.read())
            except ValueError:
                return None
        except Exception:  # noqa: BLE001
            return None

    def file_counts(self) -> dict[str, int]:
        """Files in the ledger by status."""
        try:
            with psycopg.connect(self.env["DATABASE_URL"], connect_timeout=3) as conn:
                return dict(conn.execute("select status, count(*) from ops.file_ledger group by status order by status"))
        except psycopg.Error:
            return {}

    def write_stack_env(self) -> None:
        """Where the running stack is, for `./start.sh elt ...` and other tools started beside it."""
        keys = ["DATABASE_URL", "AIRFLOW_DATABASE_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                CLINIC_CONNECTION]  # the demo clinic database: `elt connectors run clinic_ehr_pull` beside the stack
        lines = [f"{key}={self.env[key]}" for key in keys if self.env.get(key)]
        path = self.data_dir / "stack.env"
        path.write_text("# Written by ./start.sh while the stack runs; read by ./start.sh elt.\n" + "\n".join(lines) + "\n")
        path.chmod(0o600)

    def banner(self) -> None:
        user, password = _env("AIRFLOW_ADMIN_USER", "admin"), _env("AIRFLOW_ADMIN_PASSWORD", "admin")
        s3 = self.s3.endpoint_url if self.s3 else self.env.get("S3_ENDPOINT_URL", "AWS S3")
        print(f"""
==================================================================================================
 Health warehouse is up (Ctrl-C stops everything)

 Airflow UI    http://localhost:{self.airflow_port}        login {user} / {password}
 API           http://localhost:{self.api_port}/docs   (every endpoint; readiness: /ready)
               key: ./start.sh api-key create --name NAME --role analyst|clinician|admin
 Dashboard     http://localhost:{self.dashboard_port}   (paste an API key in its sidebar)
 Postgres      {self.env['DATABASE_URL']}   (Airflow metadata: database airflow)
               BI tools: user {BI_LOGIN.name}, password BI_DB_PASSWORD in .env (analytics schema only)
 S3 endpoint   {s3}   bucket {self.bucket}, drops under {" and ".join(landing_prefixes())}
 Data          {self.data_dir}   (logs in {self.logs})

 Load waiting drops:   ./start.sh elt ingest        Ledger:  ./start.sh elt files
 Upload a file:        curl -H "Authorization: Bearer $KEY" -F drop_type=nhs_kh03_overnight \\
                            -F file=@Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx http://localhost:{self.api_port}/api/v1/drops
==================================================================================================
""", flush=True)

    def supervise(self) -> None:
        last_state, last_print = None, 0.0
        while True:
            for service in self.services:
                if service.process and service.process.poll() is not None:
                    if service.restarts >= 3:
                        raise RuntimeError(f"{service.name} keeps exiting; see {service.log_file}")
                    service.restarts += 1
                    log.warning("%s exited (code %s); restarting (%d/3). Log: %s", service.name,
                                service.process.returncode, service.restarts, service.log_file)
                    service.start()
            self.run_new_deliveries()
            run = self.last_runs()
            now = time.monotonic()
            if run != last_state or now - last_print > 300:
                run_text = "; ".join(f"{dag} {state} ({run_id})" for dag, run_id, state in run) or "no runs yet"
                print(f"[{time.strftime('%H:%M:%S')}] {run_text}; files {self.file_counts()}; "
                      f"{marts_status((self.api_ready() or {}).get('marts'))}", flush=True)
                last_state, last_print = run, now
            time.sleep(5)

    def run_new_deliveries(self) -> None:
        """Trigger, once a start, the DAG of each declared connector that has never succeeded, so the stack shows
        their run records: a pull at once (the clinic database), a mart delivery as soon as its mart is built (the
        bed occupancy export: when a KH03 workbook has loaded; Airflow's first scheduled run, before that, failed
        saying the mart is not built)."""
        pending = [c for c in self.connectors if (c.pull is not None or c.deliver.mart)
                   and c.name not in self.deliveries_triggered]
        if not pending:
            return
        try:
            with psycopg.connect(self.env["DATABASE_URL"], connect_timeout=3) as conn:
                ready = [c for c in pending if (c.pull is not None or _built(conn, c.deliver.mart)) and not conn.execute(
                    "select exists (select from ops.connector_runs where connector = %s and status = 'succeeded')", (c.name,)).fetchone()[0]]
        except psycopg.Error:
            return
        for connector in ready:
            if self.airflow("dags", "trigger", connector.dag_id).returncode == 0:  # else not parsed yet: next round
                log.info("triggered %s (the connector's first run)", connector.dag_id)
                self.deliveries_triggered.add(connector.name)

    def check_ports(self) -> None:
        wanted = [("AIRFLOW_PORT", self.airflow_port), ("API_PORT", self.api_port),
                  ("DASHBOARD_PORT", self.dashboard_port)]
        if not os.environ.get("DATABASE_URL"):
            wanted.append(("PG_PORT", self.pg_port))
        if not os.environ.get("S3_ENDPOINT_URL") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            wanted.append(("S3_PORT", self.s3_port))
        busy = [f"{name}={port}" for name, port in wanted if not port_is_free(port)]
        if busy:
            raise RuntimeError(f"port(s) already in use: {', '.join(busy)}. Is another ./start.sh running? "
                               "Otherwise set free ports in .env.")

    def stop(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abandon the clean-up half way
        print("\nstopping: dashboard, API, Airflow, S3 endpoint, Postgres ...", flush=True)
        for service in reversed(self.services):
            stop_process(service.process)
        if self.s3:
            self.s3.stop()
        if self.postgres:
            self.postgres.stop()
        print("stopped; data kept in", self.data_dir, flush=True)


@dataclass(frozen=True)
class FirstRuns:
    parsed: tuple[str, ...]  # DAGs to wait for
    triggered: tuple[str, ...]  # DAGs to trigger, in order


def first_runs(declared: dict, demo: str) -> FirstRuns:
    """The demo family's ingest run (its marts follow on the asset), and the marts run of every other family whose
    marts are nightly: without files they build empty, so /ready (which wants every nightly mart built) is true on
    a fresh stack. Marts rebuilt on arrival (the beds) wait for their first drop, as /ready lets them."""
    others = [f.marts_dag_id for name, f in declared.items() if name != demo and f.marts.refreshed == "nightly"]
    demo_family = declared[demo]
    return FirstRuns(parsed=(demo_family.ingest_dag_id, demo_family.marts_dag_id, *others),
                     triggered=(demo_family.ingest_dag_id, *others))


def marts_status(marts: dict[str, dict] | None) -> str:
    """The status line's words on the marts of /ready: how many nightly marts are built, and of the bed marts
    (built when a KH03 workbook loads) what is there and what is still empty. None (or no marts): /ready did not
    answer: the API is not up yet, or /ready waited 3 s on a table that dbt was swapping in."""
    if not marts:
        return "marts: no answer from the API's /ready (not up yet, or dbt is swapping a mart in); the next line says"
    nightly = [m for m in marts.values() if m.get("refreshed") != "on_arrival"]
    text = f"nightly marts the API serves: {sum(1 for m in nightly if m.get('built'))} of {len(nightly)} built"
    beds = {name: m for name, m in marts.items() if m.get("refreshed") == "on_arrival"}
    if not beds:
        return text
    if not any(m.get("built") for m in beds.values()):
        return text + "; bed marts not built yet (upload a KH03 workbook)"
    empty = sorted(name.split(".")[-1] for name, m in beds.items() if not m.get("has_rows"))
    with_rows = len(beds) - len(empty)
    if not empty:
        return text + f"; bed marts built, all {len(beds)} with rows"
    return (text + f"; bed marts built, {with_rows} of {len(beds)} with rows (empty: {', '.join(empty)}: no workbook "
            "loaded so far has the sheets they come from)")


def _built(conn: psycopg.Connection, table: str) -> bool:
    """The mart exists and has a build (rows with built_at)."""
    if not conn.execute("select to_regclass(%s) is not null", (table,)).fetchone()[0]:
        return False
    schema, name = table.split(".")
    query = sql.SQL("select max(built_at) is not null from {}").format(sql.Identifier(schema, name))
    try:
        return conn.execute(query).fetchone()[0]
    except psycopg.errors.UndefinedColumn:
        conn.rollback()
        return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def up() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stack = Stack()
    # Explicit handlers: a shell that starts us in the background may have set SIGINT to "ignore".
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        stack.check_ports()
        for variable in ensure_login_passwords(REPO_ROOT / ".env", stack.env):
            log.info("generated %s (a random password) into .env", variable)
        stack.start_postgres()
        stack.start_s3()
        subprocess.run([str(Path(sys.executable).with_name("elt")), "init-db"], env=stack.env, check=True)
        # medilink_marts renders one task per dbt model from dbt/target/manifest.json (no database needed).
        subprocess.run([str(Path(sys.executable).with_name("elt")), "parse"], env=stack.env, check=True,
                       stdout=subprocess.DEVNULL)
        demo = stack.upload_demo()
        stack.airflow_env()
        stack.start_airflow()
        stack.start_api()
        stack.start_dashboard()
        wait_for(lambda: urlopen(f"http://127.0.0.1:{stack.airflow_port}/api/v2/monitor/health", timeout=3),  # noqa: S310
                 timeout=240, what="Airflow api-server", log_file=stack.logs / "airflow-api-server.log")
        stack.write_stack_env()
        if demo:
            stack.trigger_first_run()
        stack.banner()
        stack.supervise()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - tell the user what failed and where to look, then clean up
        log.error("start failed: %s", exc)
        stack.stop()
        return 1
    stack.stop()
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command != "up":
        sys.exit(f"usage: python -m elt.devstack up (got {command!r})")
    sys.exit(up())
