"""The `elt` command: prepare the warehouse, ingest drops, inspect the ledger, build marts, make demo data."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime, timedelta

from elt.config import get_settings


def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("(no rows)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "")) for r in rows)) for c in columns}
    print("  ".join(c.ljust(min(widths[c], 60)) for c in columns))
    for row in rows:
        print("  ".join(str(row[c] if row[c] is not None else "")[:60].ljust(min(widths[c], 60)) for c in columns))


def cmd_init_db(args: argparse.Namespace) -> int:
    from elt.pipeline import prepare

    prepare(get_settings(), force=True)  # also repairs a raw table or view changed by hand
    print("warehouse ready: schemas ops and raw, one raw table per contract")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from elt.pipeline import discover_new_files, ingest_file, prepare

    settings = get_settings()
    prepare(settings)
    keys = [args.key] if args.key else discover_new_files(drop_type=args.drop_type, settings=settings)
    if not keys:
        print("no files waiting")
        return 0
    outcomes = [ingest_file(key, dry_run=args.dry_run, settings=settings) for key in keys]
    if args.format == "json":
        print(json.dumps([o.as_dict() for o in outcomes], indent=2, default=str))
    else:
        for outcome in outcomes:
            print(("[dry run] " if args.dry_run else "") + outcome.summary())
    return 0 if all(o.status in {"loaded", "duplicate"} for o in outcomes) else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from elt.contracts import load_contracts
    from elt.readers.validate import validate_bytes

    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    if args.drop_type not in contracts:
        print(f"error: unknown drop type {args.drop_type!r}; known: {', '.join(sorted(contracts))}", file=sys.stderr)
        return 2
    path = Path(args.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    contract = contracts[args.drop_type]
    try:
        report = validate_bytes(contract, data, name=str(path), limits=settings.workbook_limits())
    except Exception as exc:  # noqa: BLE001 - a bug, not the file: said without the message, which may quote it
        from elt.runs import describe_failure

        print(f"error: elt validate failed on an error it did not expect ({describe_failure(exc)}); the file was "
              "not judged. Please report it.", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(f"{report.file}: {report.status} ({report.drop_type} v{report.contract_version}): "
              f"{report.rows_read} rows read, {report.rows_valid} valid, {report.rows_rejected} rejected")
        print(f"  period: {_period_line(contract, report)}")
        for error in report.errors:
            print(f"  file error [{error['rule']}]: {error['message']}")
        for reject in report.rejects[: args.limit]:
            print(f"  row {reject['row']}, {reject['column']} [{reject['rule']}]: {reject['message']}")
        if len(report.rejects) > args.limit:
            print(f"  ... {len(report.rejects) - args.limit} more (use --limit or --format json)")
    return 0 if report.status in {"valid", "has_rejects"} else 1


def _period_line(contract, report) -> str:
    """The reporting period the file establishes, and where it comes from; or why there is none."""
    period = report.period
    if period is not None:
        dates = "" if period["start"] == period["label"] else f", {period['start']} to {period['end']}"
        return f"{period['label']}{dates} (from the {period['source']})"
    from elt.readers import reader_for

    reader = reader_for(contract)
    if reader.states_period:
        return f"not established (the {reader.noun} states its period; see the error)"
    if contract.period.key_date_pattern and report.errors and report.errors[0]["rule"] == "bad_period":
        return "the date in the file name does not exist"
    if contract.period.key_date_pattern:
        return (f"none in the file name (it does not match {contract.period.key_date_pattern}): the loader uses "
                "the day the file lands")
    return "none: the loader uses the day the file lands"


def cmd_put(args: argparse.Namespace) -> int:
    from pathlib import Path

    from elt.pipeline import contracts_for
    from elt.storage.s3 import ObjectStore

    settings = get_settings()
    path = Path(args.path)
    if not path.is_file():
        print(f"error: no such file {path}", file=sys.stderr)
        return 2
    name = args.name or path.name
    try:
        contracts = contracts_for(settings, drop_type=args.drop_type)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    given = dict(field.split("=", 1) for field in args.field)
    keys = {c.drop_type: _put_key(c, name, given) for c in contracts.values()}
    matching = [c for c in contracts.values() if keys[c.drop_type] and c.matches(keys[c.drop_type])]
    if len(matching) != 1:
        expected = "\n".join(f"  {c.drop_type:<28} {c.landing.prefix}  name matching {c.landing.key_pattern}"
                              + "".join(f" --field {n}={'YYYY-MM' if f.type == 'month' else f.pattern}"
                                        for n, f in c.landing.upload_fields.items())
                              for c in sorted(contracts.values(), key=lambda c: c.drop_type))
        print(f"error: {name!r} matches {'no drop type' if not matching else 'several drop types'}. Name the file "
              f"(--name) as its drop type expects and give the fields it needs (--field), or pass --drop-type:\n"
              f"{expected}", file=sys.stderr)
        return 2
    contract = matching[0]
    key = keys[contract.drop_type]
    store = ObjectStore(settings)
    store.ensure_bucket()
    store.put(key, path.read_bytes(), content_type="text/csv" if name.endswith(".csv") else "application/octet-stream")
    print(f"uploaded {path} to s3://{store.bucket}/{key} ({contract.drop_type}). It loads with the next "
          f"ingest run; now: `elt ingest --key {key}`; then `elt files` shows what happened to it.")
    return 0


def _put_key(contract, name: str, given: dict[str, str]) -> str | None:
    """The key `elt put` lands a file under, as the API would (its contract's upload fields fill the folders); None
    when a field the contract needs is missing or not what it takes."""
    from elt.contracts import UploadFieldError

    try:
        return contract.landing.upload_key(name, given)
    except UploadFieldError:
        return None


def cmd_files(args: argparse.Namespace) -> int:
    from elt.pipeline import connect
    from elt.warehouse.ledger import list_files

    with connect(get_settings()) as conn:
        rows = list_files(conn, status=args.status, limit=args.limit)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    _print_table([{k: v for k, v in row.items() if k not in {"error", "archived_key"}} for row in rows])
    # What went wrong, in full: the table is for scanning, this is for acting on.
    for row in rows:
        where = f", now at {row['archived_key']}" if row["archived_key"] else ""
        if row["error"]:
            print(f"\nfile {row['file_id']} ({row['status']}{where}):\n  {row['error']}")
        if row["rows_rejected"]:
            print(f"\nfile {row['file_id']}: {row['rows_rejected']} row(s) rejected; see `elt rejects {row['file_id']}`")
    return 0


def cmd_rejects(args: argparse.Namespace) -> int:
    from elt.pipeline import connect
    from elt.warehouse.ledger import list_rejects

    with connect(get_settings()) as conn:
        rows = list_rejects(conn, args.file_id, limit=args.limit)
    print(json.dumps(rows, indent=2, default=str)) if args.format == "json" else _print_table(rows)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from elt.transform import DbtError, build

    try:
        build(full_refresh=args.full_refresh, select=args.select, settings=get_settings())
    except DbtError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from elt.transform import DbtError, generate_docs

    try:
        target = generate_docs(settings=get_settings())
    except DbtError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"dbt docs written to {target} (index.html, manifest.json, catalog.json); the API serves them at /dbt-docs/")
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    from elt.transform import DbtError, parse

    try:
        print(parse(settings=get_settings()))
    except DbtError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def cmd_families(args: argparse.Namespace) -> int:
    """The source families (FAMILIES_DIR), checked against the contracts; exit 1 naming the file when one is bad."""
    from elt.contracts import ContractError
    from elt.families import FamilyError, declared_families, missing_dbt_paths

    settings = get_settings()
    try:
        families = declared_families(settings)
    except (FamilyError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    missing = missing_dbt_paths(families, settings.dbt_project_dir)
    for problem in missing:
        print(f"error: {problem}", file=sys.stderr)
    if missing:
        return 1
    rows = [{"family": f.family, "ingest_dag": f.ingest_dag_id, "runs": f.schedule_text(),
             "drop_types": ", ".join(f.drop_types), "marts": f.marts.refreshed,
             "dbt_paths": ", ".join(f.marts.dbt_paths)} for f in families.values()]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def cmd_connectors_list(args: argparse.Namespace) -> int:
    """The declared connectors (CONNECTORS_DIR), each checked on its own, with its last run."""
    from elt.connectors.spec import ConnectorSpecError, load_connectors

    settings = get_settings()
    try:
        connectors = load_connectors(settings.connectors_dir)
    except ConnectorSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    last = _last_runs(settings) if connectors else {}
    rows = [{"connector": c.name, "moves": c.what(), "schedule": c.schedule or "by hand",
             "personal_data": "yes" if c.personal_data else "no", **last.get(c.name, _NO_RUN)}
            for c in connectors.values()]
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_table(rows) if rows else print(f"no connectors declared in {settings.connectors_dir}")
    return 0


_NO_RUN = {"last_run": None, "last_status": None}


def _last_runs(settings) -> dict[str, dict]:
    from elt.pipeline import connect

    try:
        with connect(settings) as conn:
            rows = conn.execute("select distinct on (connector) connector, started_at, status from "
                                "ops.connector_runs order by connector, run_id desc").fetchall()
    except _warehouse_unreachable():
        return {}  # the list is still useful without the warehouse
    return {name: {"last_run": f"{started:%Y-%m-%d %H:%M}", "last_status": status} for name, started, status in rows}


def _warehouse_unreachable() -> tuple[type[Exception], ...]:
    import psycopg

    return (psycopg.OperationalError, psycopg.errors.UndefinedTable)


def cmd_connectors_check(args: argparse.Namespace) -> int:
    """Every declaration (or NAME's) checked against the contracts: exit 1 naming the file and field."""
    from elt.connectors.spec import ConnectorSpecError, check_connector, load_connector
    from elt.contracts import load_contracts

    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    paths = sorted([*settings.connectors_dir.glob("*.yml"), *settings.connectors_dir.glob("*.yaml")])
    if args.name:
        paths = [p for p in paths if p.stem == args.name]
        if not paths:
            print(f"error: no connector {args.name!r} in {settings.connectors_dir}", file=sys.stderr)
            return 1
    problems = 0
    for path in paths:
        try:
            connector = load_connector(path)
            check_connector(connector, contracts, path.name)
            print(f"ok     {path.name}: {connector.what()}")
        except ConnectorSpecError as exc:
            problems += 1
            print(f"error  {exc}", file=sys.stderr)
    return 1 if problems else 0


def cmd_connectors_run(args: argparse.Namespace) -> int:
    from elt.connectors.base import ConnectorError
    from elt.connectors.engine import RunOptions, run_connector
    from elt.pipeline import prepare

    settings = get_settings()
    prepare(settings)
    options = RunOptions(trigger="cli", full_reload=args.full_reload, since=args.since, dry_run=args.dry_run)
    try:
        outcome = run_connector(args.name, options, settings=settings)
    except ConnectorError as exc:
        print(f"error: {exc}\n(`elt connectors runs {args.name}` shows the run's record)", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(outcome.as_dict(), indent=2, default=str))
    else:
        print(("[dry run] " if args.dry_run else "") + outcome.summary())
    return 0


def cmd_connectors_runs(args: argparse.Namespace) -> int:
    from elt.pipeline import connect

    where, params = ("where connector = %s", [args.name]) if args.name else ("", [])
    with connect(get_settings()) as conn:
        cur = conn.execute(
            "select run_id, connector, run_key, trigger, status, started_at, finished_at, rows, bytes, location, "  # noqa: S608
            f"as_of, cursor_before, cursor_after, error from ops.connector_runs {where} order by run_id desc limit %s",
            [*params, args.limit])
        names = [c.name for c in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur]
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    _print_table([{k: v for k, v in row.items() if k != "error"} for row in rows])
    for row in rows:
        if row["error"]:
            print(f"\nrun {row['run_id']} ({row['connector']}, {row['status']}):\n  {row['error']}")
    return 0


def _connectors_parser(sub) -> None:
    connectors = sub.add_parser("connectors", help="declared sources and destinations (CONNECTORS_DIR): list, "
                                "check, run one, and its run records")
    verbs = connectors.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="the declared connectors and their last runs")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(func=cmd_connectors_list)
    check = verbs.add_parser("check", help="check the declarations against the contracts (no run)")
    check.add_argument("name", nargs="?", help="only this connector")
    check.set_defaults(func=cmd_connectors_check)
    run = verbs.add_parser("run", help="run one connector now (recorded with trigger `cli`)")
    run.add_argument("name")
    run.add_argument("--full-reload", action="store_true", help="deliver again though delivered; pull from the start")
    run.add_argument("--since", help="pulls: start from this cursor value instead of the last good run's")
    run.add_argument("--dry-run", action="store_true", help="count what would move; write nothing")
    run.add_argument("--format", choices=["text", "json"], default="text")
    run.set_defaults(func=cmd_connectors_run)
    runs = verbs.add_parser("runs", help="the run records (ops.connector_runs), newest first")
    runs.add_argument("name", nargs="?", help="only this connector")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--format", choices=["text", "json"], default="text")
    runs.set_defaults(func=cmd_connectors_runs)


def cmd_demo(args: argparse.Namespace) -> int:
    from elt.contracts import load_contracts
    from elt.demo import generate_medilink_drops
    from elt.storage.s3 import ObjectStore

    end = datetime.now(UTC).date() - timedelta(days=1)
    drop = generate_medilink_drops(end_date=end, days=args.days, seed=args.seed)
    settings = get_settings()
    prefix = load_contracts(settings.contracts_dir)["medilink_facilities"].landing.prefix  # every Medilink drop's
    store = ObjectStore(settings)
    store.ensure_bucket()
    for name, data in sorted(drop.files.items()):
        store.put(f"{prefix}{name}", data, content_type="text/csv")
    print(f"uploaded {len(drop.files)} Medilink demo files to s3://{store.bucket}/{prefix} "
          f"({len(drop.bad_rows)} deliberately bad rows)")
    return 0


def cmd_bi_user(args: argparse.Namespace) -> int:
    """Create, list or drop a BI login (elt/warehouse/bi_users.py), as the warehouse owner."""
    from elt.pipeline import connect
    from elt.warehouse import bi_users

    settings = get_settings()
    try:
        if args.action != "list":
            bi_users.check_name(args.name)  # before reaching for the database
        with connect(settings) as conn:
            if args.action == "list":
                _print_table(bi_users.list_logins(conn))
                return 0
            if args.action == "drop":
                bi_users.drop(conn, args.name)
                print(f"dropped BI login {args.name}")
                return 0
            login = bi_users.create(conn, args.name, settings.database_url)
    except bi_users.BiUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_bi_login(login)
    return 0


def _print_bi_login(login) -> None:
    print(f"created BI login {login.name} (member of bi_reader: reads the analytics schema only). Its password is "
          "shown this once and stored nowhere; keep it in your BI tool or a password manager now.\n")
    print(f"  connection URL: {login.url()}\n")
    for field, value in login.fields():
        print(f"  {field + ':':<10}{value}")
    print("\nSettings for Power BI, Tableau, Metabase and Superset: README.md, 'Connect a BI tool'. "
          f"To remove it: bi-user drop {login.name}")


def _field(text: str) -> str:
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init-db", help="create (or repair) the ops schema, raw tables, roles and logins").set_defaults(func=cmd_init_db)

    ingest = sub.add_parser("ingest", help="load waiting files (all drop types unless narrowed)")
    ingest.add_argument("--drop-type", help="only this drop type")
    ingest.add_argument("--key", help="only this object key")
    ingest.add_argument("--dry-run", action="store_true", help="validate and count, then roll back; move nothing")
    ingest.add_argument("--format", choices=["text", "json"], default="text")
    ingest.set_defaults(func=cmd_ingest)

    validate = sub.add_parser("validate", help="check a local file against its contract (no database needed)")
    validate.add_argument("path")
    validate.add_argument("--drop-type", required=True, help="e.g. medilink_triage_visits")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    validate.add_argument("--limit", type=int, default=50, help="rejects to print in text format")
    validate.set_defaults(func=cmd_validate)

    put = sub.add_parser("put", help="upload a local file to the landing prefix of its drop type (no S3 tools needed)")
    put.add_argument("path")
    put.add_argument("--drop-type", help="the drop type; by default the one whose key pattern the file name matches")
    put.add_argument("--name", help="the name to land it under (default: the file's own name)")
    put.add_argument("--field", action="append", default=[], type=_field, metavar="NAME=VALUE",
                     help="a value the drop type's key is built from, as an API upload gives it (claims: "
                          "--field payer=aetna --field month=2024-01)")
    put.set_defaults(func=cmd_put)

    files = sub.add_parser("files", help="the file ledger, newest first")
    files.add_argument("--status", help="only files in this state (loaded, rejected, quarantined, ...)")
    files.add_argument("--limit", type=int, default=50)
    files.add_argument("--format", choices=["text", "json"], default="text")
    files.set_defaults(func=cmd_files)

    rejects = sub.add_parser("rejects", help="row-level rejects of one file (values are not shown)")
    rejects.add_argument("file_id", type=int)
    rejects.add_argument("--limit", type=int, default=200)
    rejects.add_argument("--format", choices=["text", "json"], default="text")
    rejects.set_defaults(func=cmd_rejects)

    build = sub.add_parser("build", help="dbt build: staging, core and analytics marts with their tests")
    build.add_argument("--full-refresh", action="store_true")
    build.add_argument("--select", help="dbt selection, e.g. facility_performance+")
    build.set_defaults(func=cmd_build)

    sub.add_parser("docs", help="dbt docs generate: the documentation site the API serves at /dbt-docs/") \
        .set_defaults(func=cmd_docs)

    parse = sub.add_parser("parse", help="dbt parse: write dbt/target/manifest.json, which the marts DAGs' "
                           "per-model dbt tasks are rendered from (no database needed)")
    parse.set_defaults(func=cmd_parse)

    families = sub.add_parser("families", help="the source families (elt/families), checked against the contracts: "
                              "each one's drop types, ingest DAG and when it runs (no database needed)")
    families.add_argument("--format", choices=["text", "json"], default="text")
    families.set_defaults(func=cmd_families)

    bi_user = sub.add_parser("bi-user", help="create, list or drop a Postgres login for a BI tool (member of "
                             "bi_reader: the analytics schema only); its password is printed once")
    bi_actions = bi_user.add_subparsers(dest="action", required=True)
    for action, text in (("create", "create login NAME with a new password and print how to connect"),
                         ("drop", "drop login NAME (one bi-user create made)")):
        bi_actions.add_parser(action, help=text).add_argument(
            "name", help="lower-case letters, digits and _ (e.g. metabase)")
    bi_actions.add_parser("list", help="the logins in bi_reader")
    bi_user.set_defaults(func=cmd_bi_user)
    _connectors_parser(sub)

    demo = sub.add_parser("demo", help="upload generated Medilink demo drops to the landing bucket")
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import psycopg
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    settings = get_settings()
    try:
        return args.func(args)
    except psycopg.OperationalError as exc:
        parts = settings.pg_parts()
        print(f"error: cannot reach the warehouse Postgres at {parts['host']}:{parts['port']}/{parts['dbname']} "
              f"({str(exc).splitlines()[0]}).\nIs ./start.sh running? Otherwise set DATABASE_URL.", file=sys.stderr)
    except (EndpointConnectionError, NoCredentialsError) as exc:
        print(f"error: cannot reach object storage ({exc}).\nIs ./start.sh running? Otherwise set "
              "S3_ENDPOINT_URL (or AWS credentials for AWS S3).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
