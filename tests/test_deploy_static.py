"""Static checks of the deployment files, which no test can start here (no Docker engine in CI).

.env.example is the one list of configuration names and defaults. docker-compose.yaml, the Dockerfile and
the README's table of ports must agree with it; when they drift, `docker compose up` publishes a port
nobody documented or silently ignores a setting in .env. These tests only read files.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"

SERVICES = {
    "postgres",
    "warehouse-init",
    "minio",
    "minio-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "api",
    "dashboard",
}
# service -> (.env.example variable for the published host port, port inside the container)
PUBLISHED_PORTS = {
    "postgres": ("PG_PORT", 5432),
    "minio": ("S3_PORT", 9000),
    "airflow-apiserver": ("AIRFLOW_PORT", 8080),
    "api": ("API_PORT", 5000),
    "dashboard": ("DASHBOARD_PORT", 8501),
}

ENV_LINE = re.compile(r"^\s*(?P<commented>#\s*)?(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR:+alt} ... and bare $VAR.
BRACED_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
BARE_VAR = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
SHORT_PORT = re.compile(
    r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]*\]):)?(?P<host>\$\{[^}]+\}|[0-9]+):(?P<container>[0-9]+)(?:/(?:tcp|udp))?$"
)


# --- helpers -------------------------------------------------------------------------------------------
def env_example() -> dict[str, str]:
    """Every KEY=value in .env.example, active or commented out (`# KEY=value`); active lines win."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            target = commented if match["commented"] else active
            target.setdefault(match["key"], match["value"].strip())
    return {**commented, **active}


def compose_text() -> str:
    return COMPOSE_FILE.read_text()


def compose() -> dict:
    return yaml.safe_load(compose_text())


def interpolations(text: str) -> list[tuple[str, str, str | None, str | None]]:
    """(as written, name, operator, argument) of every variable Compose would interpolate; `$$` is a literal `$`."""
    text = text.replace("$$", "")
    found = [(m[0], m["name"], m["op"], m["arg"]) for m in BRACED_VAR.finditer(text)]
    found += [(m[0], m["name"], None, None) for m in BARE_VAR.finditer(BRACED_VAR.sub("", text))]
    return found


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck") or {}
    return (
        bool(check.get("test")) and not check.get("disable") and check.get("test") not in (["NONE"], "NONE")
    )


def app_image_services(spec: dict) -> dict[str, dict]:
    """Services built from the Dockerfile, and services that run the image those builds produce."""
    services = spec["services"]
    built_images = {svc.get("image") for svc in services.values() if "build" in svc} - {None}
    return {name: svc for name, svc in services.items() if "build" in svc or svc.get("image") in built_images}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                if sep:
                    env[key] = value
    return env


# --- .env.example itself -----------------------------------------------------------------------------
def test_env_example_defines_the_published_ports():
    env = env_example()
    for variable, _ in PUBLISHED_PORTS.values():
        assert variable in env, f".env.example does not define {variable} (active or as `# {variable}=...`)"
        assert env[variable].isdigit(), f".env.example: {variable}={env[variable]!r} is not a port number"


# --- docker-compose.yaml -----------------------------------------------------------------------------
def test_compose_defines_every_service():
    services = set(compose().get("services") or {})
    missing = SERVICES - services
    assert not missing, f"docker-compose.yaml lacks services {sorted(missing)}; it has {sorted(services)}"


def test_compose_variables_are_defined_in_env_example_with_the_same_defaults():
    env = env_example()
    found = interpolations(compose_text())
    assert found, "docker-compose.yaml interpolates no ${VAR} at all: the ports are not configurable"
    problems = []
    for written, name, op, arg in found:
        if name not in env:
            problems.append(
                f"{written} is used in docker-compose.yaml but .env.example does not define {name}"
            )
        elif op in (":-", "-") and arg != env[name]:
            problems.append(
                f"{written}: docker-compose.yaml defaults {name} to {arg!r}, .env.example to {env[name]!r}"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service_name", sorted(PUBLISHED_PORTS))
def test_published_host_ports_use_the_env_example_variables(service_name):
    variable, container_port = PUBLISHED_PORTS[service_name]
    default = env_example()[variable]
    service = compose()["services"].get(service_name)
    assert service is not None, f"docker-compose.yaml has no service {service_name}"
    published = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published[int(entry["target"])] = str(entry.get("published", ""))
        else:
            match = SHORT_PORT.match(str(entry))
            assert match, f"{service_name}: cannot read the port mapping {entry!r}"
            published[int(match["container"])] = match["host"]
    assert container_port in published, (
        f"{service_name} does not publish container port {container_port} (it publishes {sorted(published)})"
    )
    host = published[container_port]
    expected = f"${{{variable}:-{default}}}"
    assert host == expected, (
        f"{service_name} publishes container port {container_port} on host port {host!r}; "
        f"expected {expected!r} (the .env.example name and default)"
    )


# Services of the app image that read only through the API (with their users' keys) and never reach the database.
READ_THROUGH_THE_API = {"dashboard"}


def test_every_app_image_service_gets_a_database_url():
    spec = compose()
    services = {name: svc for name, svc in app_image_services(spec).items() if name not in READ_THROUGH_THE_API}
    assert services, "no service in docker-compose.yaml builds or uses the Dockerfile's image"
    missing = [
        name
        for name, svc in services.items()
        if not {"DATABASE_URL", "API_DATABASE_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"} & set(environment(svc))
    ]
    assert not missing, (
        f"services {missing} use the app image but get neither DATABASE_URL, API_DATABASE_URL nor "
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    )


# Variables that carry the warehouse owner's or Airflow's database credentials.
OWNER_CREDENTIALS = {"DATABASE_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_DATABASE_URL", "DBT_PG_USER",
                     "DBT_PG_PASSWORD", "PGPASSWORD", "PGUSER"}


def test_the_api_logs_in_as_its_own_logins_without_the_owners_credentials():
    from elt.warehouse.roles import API_LOGIN, DROPS_LOGIN

    env = environment(compose()["services"]["api"])
    assert not OWNER_CREDENTIALS & set(env), (
        f"the api service is given the owner's credentials {sorted(OWNER_CREDENTIALS & set(env))}: it must log in "
        f"as {API_LOGIN.name} and {DROPS_LOGIN.name} only"
    )
    url = urlsplit(env.get("API_DATABASE_URL", ""))
    assert url.hostname == "postgres" and url.username is None and url.password is None, (
        f"API_DATABASE_URL={env.get('API_DATABASE_URL')!r} must name the postgres service without a user or password"
    )
    for login in (API_LOGIN, DROPS_LOGIN):
        assert env.get(login.password_variable, "").startswith(f"${{{login.password_variable}:?"), (
            f"the api service does not take {login.password_variable} from .env (required, no default)"
        )


def test_the_dashboard_reads_through_the_api_with_no_database_or_airflow_credentials():
    from elt.warehouse.roles import LOGINS

    service = compose()["services"]["dashboard"]
    env = environment(service)
    given = set(env) & (OWNER_CREDENTIALS | {"API_DATABASE_URL", "AIRFLOW_ADMIN_PASSWORD", "API_AIRFLOW_PASSWORD"}
                        | {login.password_variable for login in LOGINS})
    assert not given, f"the dashboard is given {sorted(given)}: it reads through the API only"
    assert urlsplit(env["DASHBOARD_API_URL"]).hostname == "api"
    assert service["depends_on"]["api"]["condition"] == "service_healthy"
    assert service["command"] == ["python", "-m", "backend.dashboard"]


def test_warehouse_init_creates_every_login_before_the_api_starts():
    from elt.warehouse.roles import LOGINS

    services = compose()["services"]
    init = services["warehouse-init"]
    assert init.get("command") == ["elt", "init-db"] and init.get("restart") == "no"
    env = environment(init)
    missing = [login.password_variable for login in LOGINS if not env.get(login.password_variable, "").startswith(
        f"${{{login.password_variable}:?")]
    assert not missing, f"warehouse-init does not require {missing} from .env: their logins get no password"
    assert services["api"]["depends_on"].get("warehouse-init") == {"condition": "service_completed_successfully"}


def test_airflow_init_makes_the_export_buckets_the_connectors_declare_once_minio_is_up():
    """The connector DAGs run in the scheduler, after airflow-init; their s3 deliveries' buckets (derived from the
    declarations, as ./start.sh derives them) must exist on MinIO by then, or the first delivery fails."""
    services = compose()["services"]
    init = services["airflow-init"]
    assert init["depends_on"].get("minio") == {"condition": "service_healthy"}
    assert services["airflow-scheduler"]["depends_on"].get("airflow-init") == {
        "condition": "service_completed_successfully"}
    script = (ROOT / "docker" / "airflow" / "init.sh").read_text()
    assert "export_buckets(connectors.values())" in script and "ensure_bucket()" in script


def test_no_login_password_is_shipped_and_each_is_documented():
    from elt.warehouse.roles import LOGINS

    env = env_example()
    text = ENV_EXAMPLE.read_text()
    readme = README.read_text()
    for login in LOGINS:
        variable = login.password_variable
        assert env.get(variable) == "", f".env.example must list {variable} commented out and empty (no default)"
        assert re.search(rf"^{variable}=", text, re.M) is None, f".env.example ships an active {variable}"
        assert login.name in text, f".env.example does not say which login {variable} is the password of"
        assert variable in readme, f"README.md's Configuration does not mention {variable}"


def test_airflow_services_share_one_metadata_database():
    services = {name: svc for name, svc in compose()["services"].items() if name.startswith("airflow-")}
    assert services, "docker-compose.yaml has no airflow-* services"
    conns = {
        name: environment(svc).get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") for name, svc in services.items()
    }
    assert all(conns.values()), f"Airflow services without AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: {conns}"
    assert len(set(conns.values())) == 1, f"Airflow services disagree on the metadata database: {conns}"
    executors = {name: environment(svc).get("AIRFLOW__CORE__EXECUTOR") for name, svc in services.items()}
    assert len(set(executors.values())) == 1, f"Airflow services disagree on the executor: {executors}"
    module, _, name = next(iter(executors.values())).rpartition(".")
    from airflow.executors.local_executor import LocalExecutor

    executor = getattr(importlib.import_module(module), name)
    assert issubclass(executor, LocalExecutor), f"AIRFLOW__CORE__EXECUTOR is not a LocalExecutor: {executors}"


def test_connection_urls_point_at_compose_services():
    spec = compose()
    names = set(spec["services"])
    problems = []
    for service_name, svc in app_image_services(spec).items():
        env = environment(svc)
        for key in (
            "DATABASE_URL",
            "API_DATABASE_URL",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "S3_ENDPOINT_URL",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        ):
            if key in env:
                host = urlsplit(env[key]).hostname
                if host not in names:
                    problems.append(
                        f"{service_name}: {key} points at host {host!r}, which is not a compose service"
                    )
        if "DBT_PG_HOST" in env and env["DBT_PG_HOST"] not in names:
            problems.append(f"{service_name}: DBT_PG_HOST={env['DBT_PG_HOST']!r} is not a compose service")
    assert not problems, "\n".join(problems)


def test_depends_on_conditions_can_be_met():
    services = compose()["services"]
    problems = []
    for name, svc in services.items():
        depends_on = svc.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, spec in depends_on.items():
            condition = (spec or {}).get("condition", "service_started")
            if dep not in services:
                problems.append(f"{name} depends on {dep}, which is not a service")
            elif condition == "service_healthy" and not has_healthcheck(services[dep]):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            elif condition == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(
                    f"{name} waits for {dep} to complete, but {dep} has restart: {services[dep]['restart']!r}"
                )
    assert not problems, "\n".join(problems)


def test_named_volumes_are_declared():
    spec = compose()
    declared = set(spec.get("volumes") or {})
    problems = []
    for name, svc in spec["services"].items():
        for volume in svc.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")) and source not in declared:
                problems.append(
                    f"{name} mounts volume {source!r}, which the top-level volumes: does not declare"
                )
    assert not problems, "\n".join(problems)
    for service, path in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        targets = [
            str(v).split(":")[1] for v in spec["services"][service].get("volumes") or [] if ":" in str(v)
        ]
        assert path in targets, (
            f"{service} keeps its data in {path}, but no volume is mounted there ({targets})"
        )


# --- Dockerfile --------------------------------------------------------------------------------------
def test_dockerfile_base_image_is_python_311():
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms, "Dockerfile has no FROM"
    image = [token for token in froms[-1].split() if not token.startswith("--")][0]
    assert image.startswith("python:3.11-"), (
        f"Dockerfile's final base image is {image!r}, expected python:3.11-*"
    )


def test_dockerfile_installs_pinned_dependencies_then_the_package_without_deps():
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    pinned = [run for run in runs if "pip install" in run and "-r requirements.txt" in run]
    assert pinned, "Dockerfile never runs `pip install -r requirements.txt`"
    assert all(re.search(r"(?:-c|--constraint)[ =]constraints\.txt", run) for run in pinned), (
        f"Dockerfile installs requirements.txt without `-c constraints.txt`: {pinned}"
    )
    assert any("pip install" in run and "--no-deps" in run for run in runs), (
        "Dockerfile does not install the package itself with `pip install --no-deps`"
    )


def test_dockerfile_does_not_run_as_root():
    instructions = dockerfile_instructions()
    last_run = max((i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN"), default=-1)
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users and users[-1][0] > last_run, (
        "Dockerfile has no USER instruction after its last RUN: it runs as root"
    )
    user = users[-1][1].split(":")[0]
    assert user not in {"root", "0"}, f"Dockerfile's final USER is {user!r}"


def test_dockerfile_environment_and_default_command():
    env = dockerfile_env()
    expected = {
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        "AIRFLOW_HOME": "/opt/airflow",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    wrong = {key: env.get(key) for key, value in expected.items() if env.get(key) != value}
    assert not wrong, f"Dockerfile ENV differs from {expected}: has {wrong}"
    dags = env.get("AIRFLOW__CORE__DAGS_FOLDER", "")
    assert dags.endswith("/airflow/dags"), (
        f"AIRFLOW__CORE__DAGS_FOLDER={dags!r} is not the repository's airflow/dags"
    )
    cmds = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "Dockerfile has no CMD: the image does not serve the API"
    # The API through its one entry point (backend/serve.py: granian, the settings of the environment, the access
    # log without query strings), in exec form so that the server is PID 1 and gets SIGTERM. The entry point takes
    # only the address: nothing on the command line can change the workers, threads or log format.
    command = json.loads(cmds[-1]) if cmds[-1].startswith("[") else None
    assert command and command[:3] == ["python", "-m", "backend.serve"], (
        f"Dockerfile's default CMD does not serve the API with `python -m backend.serve` in exec form: {cmds[-1]}"
    )
    from backend.serve import parse_args

    address = parse_args(command[3:])
    exposed = [int(port) for keyword, args in dockerfile_instructions() if keyword == "EXPOSE" for port in args.split()]
    assert (address.host, address.port) == ("0.0.0.0", PUBLISHED_PORTS["api"][1]) and address.port in exposed, (
        f"Dockerfile's API listens on {address.host}:{address.port}, not on every interface of the container at the "
        "port that docker-compose.yaml publishes"
    )


def test_the_api_server_is_sized_from_the_settings_and_logs_no_query_strings(monkeypatch):
    from granian.constants import Interfaces

    from backend.config import ApiSettings
    from backend.serve import ACCESS_LOG_FORMAT, granian_options

    monkeypatch.setenv("API_WORKERS", "3")
    monkeypatch.setenv("API_THREADS", "12")
    monkeypatch.setenv("API_SHUTDOWN_GRACE_SECONDS", "45")
    options = granian_options(ApiSettings(), "127.0.0.1", 5001)
    assert (options["interface"], options["workers"], options["blocking_threads"]) == (Interfaces.WSGI, 3, 12)
    assert (options["address"], options["port"], options["workers_kill_timeout"]) == ("127.0.0.1", 5001, 45)
    assert options["respawn_failed_workers"] is True and options["log_access"] is True
    assert options["log_access_format"] == ACCESS_LOG_FORMAT
    assert "%(path)s" in ACCESS_LOG_FORMAT and "query_string" not in ACCESS_LOG_FORMAT
    monkeypatch.setenv("API_ACCESS_LOG", "false")  # for a deployment whose proxy logs every request already
    assert granian_options(ApiSettings(), "127.0.0.1", 5001)["log_access"] is False


@pytest.mark.parametrize("flag", ["--access-log-fmt", "--workers", "--blocking-threads", "--interface"])
def test_the_api_entry_point_takes_no_server_setting_on_its_command_line(flag, capsys):
    from backend.serve import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--port", "5000", flag, "1"])


# --- README ------------------------------------------------------------------------------------------
def test_readme_port_table_matches_env_example():
    if not README.exists():
        pytest.fail(
            f"{README} does not exist; it must document the published ports in a table with one row per "
            "port variable, e.g. `| Airflow UI | http://localhost:8080 | AIRFLOW_PORT |`"
        )
    env = env_example()
    rows = [line for line in README.read_text().splitlines() if line.lstrip().startswith("|")]
    problems = []
    for variable, _ in PUBLISHED_PORTS.values():
        mentioning = [row for row in rows if re.search(rf"\b{variable}\b", row)]
        if not mentioning:
            problems.append(f"README.md has no table row mentioning {variable}")
            continue
        port = env[variable]
        if not any(re.search(rf"(?<!\d){port}(?!\d)", row) for row in mentioning):
            problems.append(
                f"README.md rows mentioning {variable} do not show .env.example's default {port}: {mentioning}"
            )
        for row in mentioning:
            shown = set(re.findall(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)", row))
            if shown - {port}:
                problems.append(
                    f"README.md row for {variable} shows port {sorted(shown - {port})}, .env.example says {port}: "
                    f"{row.strip()}"
                )
    assert not problems, "\n".join(problems)
