"""`dbt build` from scratch vs the nightly `dbt build` after one more day of Medilink drops (about 1% new rows).

One run, one embedded Postgres: CSVs for 100 days (10,000 medical records and 3,000 triage visits a day, so
1,000,000 records and 300,000 visits, plus a facilities and a patients file) go through `elt`'s real
ingest from the local S3 endpoint into the raw tables and the ledger. Then, each after `vacuum analyze` and
a checkpoint, and each nightly run after one more day's files are ingested:
  1. the full build (the first `dbt build`);
  2. the nightly `dbt build` (the facts incremental): the figure compared with 1;
  3. the nightly `dbt build` without the row-level tests (not_null, unique, accepted_values, between,
     expression_is_true) of the four large relations (the two facts and their staging views): what
     scoping those tests to the new rows (a `where` config) could save at most;
  4. the nightly `dbt run`: models only, no tests at all;
  5. `dbt run` of one view: dbt's own start-up;
  6. after one more day, `dbt run` of the two incremental facts alone: the least any nightly build costs
     (start-up, then the new day merged into each fact), before a mart is refreshed or a test runs;
  7. `dbt build --full-refresh` on the same data: what every night cost before the facts were incremental.
  8. the nightly as Airflow runs it: the `medilink_marts` DAG under Airflow as ./start.sh runs it (api-server,
     scheduler, dag-processor, triggerer; LocalExecutor), triggered and timed from the trigger to the run's
     end, against one `dbt build --select <medilink's dbt paths>` (the DAG's selection) in the same run, each after one
     more day; in alternating order, `--dag-rounds` times each, after one untimed run of the DAG.
Then, on a second database cloned from the first before any build and given `--history-factor` (4) times the
days (400 days: 4,000,000 records, 1,200,000 visits, the same patients and the same day's size):
  9. the nightly build after one more day, on today's base and on the long one, interleaved over `--rounds` (3)
     nights each: cost independent of history means the same nightly on both;
  10. the full build (the first build) of the long base, against its nightly.
Both build what `medilink_marts` builds each night (NIGHTLY_SELECTION: the Medilink family's dbt folders and the
shared ledger view, as elt/families/medilink.yml declares them).
Prints the wall times, their ratios to 1, and where the time goes: dbt start-up, then node time per kind of
node and the slowest nodes (run_results.json; 4 threads, so node times add up to more than the wall time).
Targets: nightly / full <= 0.15 (issue "large facts are incremental"); issue 14: 8. DAG run / dbt build <= 1.3,
9. long / today's <= 1.25, 10. nightly / full on the long base <= 0.10.
The dbt project is copied into the run's folder, so the DAG's dbt target and the manifest it renders from are
the run's own.

    ./start.sh bench dbt [--days N] [--records-per-day N] [--visits-per-day N] [--dag-rounds N] [--only dag]
                    [--history-factor N] [--rounds N]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from statistics import median

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sibling(name: str):
    """A module beside this file, loaded by path: this file may itself be loaded by path (bench api does), and
    benchmarks/ cannot go on sys.path in that process, where this file's name would hide dbt's own package."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


_airflow_stack = _sibling("airflow_stack")
AirflowStack, DagRunTimes, python_path = _airflow_stack.AirflowStack, _airflow_stack.DagRunTimes, _airflow_stack.python_path

from elt.config import Settings  # noqa: E402
from elt.devstack.servers import EmbeddedPostgres, LocalS3, free_port, pg_bin_dir  # noqa: E402
from elt.families import declared_families  # noqa: E402
from elt.pipeline import ingest_file, prepare  # noqa: E402
from elt.transform import parse, run_dbt  # noqa: E402

PREFIX = "medical_records/input/"
FACTS = ("fct_medical_records", "fct_triage_visits")
DAG_ID = declared_families(Settings())["medilink"].marts_dag_id  # made by airflow/dags/family_marts.py
BUILD_TASK = "dbt_build"  # elt.dbt_watch.BUILD_TASK (not imported: that module needs Airflow's task SDK loaded)
LARGE_RELATIONS = ("stg_medilink__medical_records", "stg_medilink__triage_visits", "fct_medical_records",
                   "fct_triage_visits")
ROW_LEVEL_TESTS = ("not_null", "unique", "accepted_values", "between", "expression_is_true")
# What medilink_marts builds each night: the Medilink family's dbt paths (elt.families.Family.dbt_select()).
NIGHTLY_SELECTION = ("--select", *declared_families(Settings())["medilink"].dbt_select())
FIRST_DAY = date(2026, 1, 1)
FACILITIES = [
    ("General Hospital Ikeja", "Lagos", "Ikeja", "Hospital"), ("Maitama District Hospital", "FCT", "Abuja Municipal", "Hospital"),
    ("Primary Health Center Nassarawa", "Kano", "Nassarawa", "Primary Health Center"),
    ("University College Hospital Ibadan", "Oyo", "Ibadan North", "Teaching Hospital"),
    ("Barau Dikko Teaching Hospital", "Kaduna", "Kaduna North", "Teaching Hospital"),
    ("Primary Health Center Nsukka", "Enugu", "Nsukka", "Primary Health Center"),
    ("General Hospital Onitsha", "Anambra", "Onitsha North", "Hospital"),
    ("Aminu Kano Teaching Hospital", "Kano", "Tarauni", "Teaching Hospital"),
    ("Maiduguri Family Clinic", "Borno", "Maiduguri", "Clinic"), ("Central Hospital Benin", "Edo", "Oredo", "Hospital"),
    ("General Hospital Calabar", "Cross River", "Calabar Municipal", "Hospital"),
    ("Jos North Community Clinic", "Plateau", "Jos North", "Clinic"),
]
FIRSTS = ["Adebayo", "Chinedu", "Aisha", "Ngozi", "Ibrahim", "Funmilayo", "Emeka", "Zainab", "Tunde", "Amaka", "Musa",
          "Halima", "Segun", "Chioma", "Yusuf", "Kemi", "Obinna", "Fatima", "Femi", "Nneka", "Sani", "Bisi", "Ifeanyi",
          "Hauwa", "Kunle", "Ada", "Garba", "Titi", "Uche", "Maryam", "Dayo", "Ebere", "Bello", "Yemi", "Kelechi",
          "Rakiya", "Gbenga", "Nkechi", "Aliyu", "Bukola"]
LASTS = ["Okafor", "Adeyemi", "Bello", "Eze", "Abubakar", "Ogunleye", "Nwosu", "Usman", "Okonkwo", "Balogun", "Danjuma",
         "Obi", "Lawal", "Chukwu", "Suleiman", "Afolabi", "Nnamdi", "Ibrahim", "Adeleke", "Onyeka", "Musa", "Ogundipe",
         "Eze-Uzo", "Garba", "Akinola", "Okeke", "Yakubu", "Ojo", "Uzor", "Aminu", "Fashola", "Nwachukwu", "Sani",
         "Olawale", "Ikenna", "Mohammed", "Adewale", "Onuoha", "Tanko", "Oyelaran"]
COMPLAINTS = [("Fever and headache", "Malaria", "Malaria RDT;Antimalarials"), ("Cough for two weeks", "Tuberculosis;Cough",
              "Sputum AFB;Chest X-ray"), ("High blood pressure review", "Hypertension", "Continue amlodipine"),
              ("Painful urination", "Urinary Tract Infection", "Urinalysis;Nitrofurantoin for 5 days"),
              ("Diarrhoea and vomiting", "Gastroenteritis;Dehydration", "ORS;Zinc"),
              ("Routine check-up", "", "Follow-up in 3 months")]
RECORDS = [("Consultation", "Malaria", "Oral antimalarials", "Artemether-lumefantrine 80/480mg"),
           ("Prescription", "Hypertension", "Medication dispensed", "Amlodipine 5mg daily"),
           ("Lab Result", "Type 2 Diabetes", "", ""), ("Imaging", "Suspected Fracture", "", "N/A")]


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_patients(rng: random.Random, per_facility: int) -> list[tuple[str, str, str]]:
    """(facility, first, last), unique per facility, so that every visit and record resolves to one patient."""
    names = [(first, last) for first in FIRSTS for last in LASTS]
    return [(facility[0], *name) for facility in FACILITIES for name in rng.sample(names, per_facility)]


def write_day(folder: Path, day: date, patients, rng: random.Random, records: int, visits: int) -> list[Path]:
    triage = folder / f"triage_visits_{day:%Y-%m-%d}.csv"
    write_csv(triage, ["facility_name", "patient_first_name", "patient_last_name", "triage_level", "chief_complaint",
                       "vital_signs", "conditions", "recommendations"],
              ([*rng.choice(patients), str(rng.randint(1, 5)), complaint,
                f"BP: {rng.randint(100, 170)}/{rng.randint(60, 100)}, HR: {rng.randint(60, 110)}", conditions, advice]
               for complaint, conditions, advice in (rng.choice(COMPLAINTS) for _ in range(visits))))
    medical = folder / f"medical_records_{day:%Y-%m-%d}.csv"
    write_csv(medical, ["facility_name", "patient_first_name", "patient_last_name", "record_type", "diagnosis",
                        "treatment", "medications", "notes"],
              ([*rng.choice(patients), kind, diagnosis, treatment, medication, f"Seen on {day}, review in {rng.randint(1, 28)} days"]
               for kind, diagnosis, treatment, medication in (rng.choice(RECORDS) for _ in range(records))))
    return [triage, medical]


def ingest(s3: LocalS3, settings: Settings, paths: list[Path]) -> float:
    """Upload and ingest the files; the two drop types load side by side (loads into one table take turns)."""
    start = time.perf_counter()
    client = s3.client()
    for path in paths:
        client.upload_file(str(path), settings.s3_bucket, PREFIX + path.name)
    by_type: dict[str, list[str]] = {}
    for path in paths:
        by_type.setdefault(path.name.rsplit("_", 1)[0], []).append(PREFIX + path.name)

    def load(keys: list[str]) -> None:
        for key in keys:
            outcome = ingest_file(key, settings=settings)
            if outcome.status != "loaded":
                raise RuntimeError(outcome.summary())

    with ThreadPoolExecutor(max_workers=len(by_type)) as pool:
        list(pool.map(load, by_type.values()))
    return time.perf_counter() - start


def timed_build(settings: Settings, url: str, target: Path, command: str, *extra: str) -> tuple[float, dict]:
    subprocess.run([str(pg_bin_dir() / "psql"), url, "-qc", "vacuum analyze", "-c", "checkpoint"], check=True)
    start = time.perf_counter()
    run_dbt([command, "--target-path", str(target), *extra], settings=settings)
    seconds = time.perf_counter() - start
    return seconds, json.loads((target / "run_results.json").read_text())


def copy_project(root: Path) -> Path:
    """The dbt project without its target and logs: the DAG's dbt writes its target, and renders from the manifest,
    in the run's folder, not in the checkout."""
    project = root / "dbt"
    shutil.copytree(REPO / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    return project


def vacuum(url: str) -> None:
    subprocess.run([str(pg_bin_dir() / "psql"), url, "-qc", "vacuum analyze", "-c", "checkpoint"], check=True)


def dag_vs_build(root: Path, postgres: EmbeddedPostgres, s3: LocalS3, settings: Settings, url: str, target: Path,
                 nights: list[list[Path]]) -> tuple[list[DagRunTimes], list[tuple[float, dict]]]:
    """8. `medilink_marts` under Airflow against `dbt build` of its selection: one untimed run of the DAG, then for
    each night one more day ingested and either the DAG or the build, in the order D B B D D B B D ..."""
    parse(settings=settings)  # the manifest the DAG renders its tasks from, as ./start.sh writes it
    stack = AirflowStack(root / "airflow", postgres, [REPO / "airflow" / "dags" / "family_marts.py"],
                         {"DATABASE_URL": url, "DBT_PROJECT_DIR": str(settings.dbt_project_dir),
                          "PYTHONPATH": python_path()})
    runs: list[DagRunTimes] = []
    builds: list[tuple[float, dict]] = []
    stack.start()
    try:
        stack.wait_for_dag(DAG_ID)
        vacuum(url)
        warm = stack.run(DAG_ID)  # its dbt's first parse into its own target folder; the first task processes
        print(f"8. {DAG_ID} untimed first run: {warm.state} in {warm.seconds:.1f} s", flush=True)
        for index, night in enumerate(nights):
            ingest(s3, settings, night)
            if index % 4 in (0, 3):
                vacuum(url)
                runs.append(checked(stack.run(DAG_ID), stack))
                print(f"8. {DAG_ID} run: {runs[-1].seconds:.1f} s", flush=True)
            else:
                builds.append(timed_build(settings, url, target, "build", *NIGHTLY_SELECTION))
                print(f"8. dbt build of {DAG_ID}'s selection: {builds[-1][0]:.1f} s", flush=True)
    finally:
        stack.stop()
    return runs, builds


def checked(run: DagRunTimes, stack: AirflowStack) -> DagRunTimes:
    """The run, if it succeeded with every task; else the tasks that did not, and where the logs are."""
    failed = {task: state for task, (state, *_) in run.tasks.items() if state != "success"}
    if run.state != "success" or failed:
        raise RuntimeError(f"{DAG_ID} run {run.run_id} ended {run.state}; tasks not successful: {failed}; "
                           f"logs in {stack.stack.logs} (kept until this benchmark exits)")
    return run


def dag_lines(runs: list[DagRunTimes], builds: list[tuple[float, dict]]) -> tuple[str, float]:
    """Figure 8's lines and its ratio (medians)."""
    dag = median(run.seconds for run in runs)
    build = median(seconds for seconds, _ in builds)
    lines = [f"8. `{DAG_ID}` under Airflow, trigger to end     : {dag:7.2f} s  (runs: "
             + ", ".join(f"{run.seconds:.2f}" for run in runs) + ")"]
    for run in runs:
        _, _, start, end = run.tasks[BUILD_TASK]
        last = max(task_end for task, (_, _, _, task_end) in run.tasks.items() if task != BUILD_TASK and task_end)
        lines.append(f"    run started {run.started:5.2f} s after the trigger; {BUILD_TASK} ran {start:5.2f} to {end:5.2f} s "
                     f"({end - start:5.2f} s); the last other task ended {last - end:+5.2f} s after it, the run {run.ended - end:5.2f} s; "
                     f"{len(run.tasks)} tasks: {run.states()}")
        lines.append("      CPU seconds from the trigger to the end (includes 0.5 s polling after it): "
                     + ", ".join(f"{name} {seconds:.1f}" for name, seconds in (run.cpu or {}).items()))
    lines.append(f"   one `dbt build` of its selection, same run   : {build:7.2f} s  (builds: "
                 + ", ".join(f"{seconds:.2f}" for seconds, _ in builds) + ")")
    lines.append(phases(builds[-1][0], builds[-1][1]))
    return "\n".join(lines), dag / build


def dag_ratio_line(ratio: float) -> str:
    return f"ratio 8. DAG run / dbt build of its selection       : {ratio:7.3f}   (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})"


def phases(wall: float, results: dict) -> str:
    """dbt's own time outside the nodes (start-up, parse, hooks), then per kind of node, then the slowest."""
    nodes = results["results"]
    elapsed = results["elapsed_time"]
    kinds: dict[str, list[float]] = {}
    for node in nodes:
        kind = node["unique_id"].split(".")[0]
        if kind == "model":
            kind = "model " + node["unique_id"].split(".")[2]
        kinds.setdefault(kind, []).append(node["execution_time"])
    lines = [f"    dbt start-up and parse (wall - run)   {wall - elapsed:7.2f} s",
             f"    run (4 threads)                       {elapsed:7.2f} s, of which node time per kind:"]
    for kind, times in sorted(kinds.items(), key=lambda item: -sum(item[1])):
        lines.append(f"      {kind:<36} {sum(times):7.2f} s  ({len(times)} nodes)")
    lines.append("    slowest nodes:")
    for node in sorted(nodes, key=lambda n: -n["execution_time"])[:8]:
        rows = node["adapter_response"].get("rows_affected")
        lines.append(f"      {node['unique_id'].split('.', 2)[2]:<60} {node['execution_time']:6.2f} s"
                     + (f"  rows {rows:,}" if isinstance(rows, int) and rows >= 0 and node["unique_id"].startswith("model.") else ""))
    return "\n".join(lines)


@dataclass
class History:
    """Figures 9 and 10: the same nightly on today's base and on a base `factor` times as many days long."""

    factor: int
    days: int
    settings: Settings | None = None
    url: str = ""
    target: Path | None = None
    extra_days: list[list[Path]] = field(default_factory=list)  # day `days + 4 + i`: the long base, then today's nights
    long_nights: list[list[Path]] = field(default_factory=list)
    generate_seconds: float = 0.0
    ingest_seconds: float = 0.0
    full_seconds: float = 0.0
    full_results: dict = field(default_factory=dict)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (today's nightly, long nightly)
    long_results: dict = field(default_factory=dict)


def generate_history(csvs: Path, patients, args, first_new_day: int) -> History:
    """The long base's days after today's base and its four nights, and each base's nights for the rounds: the
    same generator and day size as today's base (its own random stream, so today's figures are unchanged)."""
    history = History(factor=args.history_factor, days=args.days)
    rng = random.Random(8)
    start = time.perf_counter()
    last_long_day = args.history_factor * args.days
    for offset in range(first_new_day, max(last_long_day, first_new_day + args.rounds)):
        history.extra_days.append(write_day(csvs, FIRST_DAY + timedelta(days=offset), patients, rng,
                                            args.records_per_day, args.visits_per_day))
    for offset in range(last_long_day, last_long_day + args.rounds):
        history.long_nights.append(write_day(csvs, FIRST_DAY + timedelta(days=offset), patients, rng,
                                             args.records_per_day, args.visits_per_day))
    history.generate_seconds = time.perf_counter() - start
    return history


def load_history(history: History, postgres: EmbeddedPostgres, s3: LocalS3, template: str, nights: list[list[Path]],
                 root: Path) -> None:
    """The long base: a copy of today's raw tables and ledger (before any build), then the days after them."""
    name = template + "_long"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}" template "{template}"')
    s3.client().create_bucket(Bucket=name.replace("_", "-"))
    history.url = postgres.url(name)
    history.settings = Settings(database_url=history.url, s3_endpoint_url=s3.endpoint_url,
                                s3_bucket=name.replace("_", "-"), dbt_project_dir=REPO / "dbt")
    long_days = [*nights, *history.extra_days][:history.days * (history.factor - 1)]
    history.ingest_seconds = ingest(s3, history.settings, [path for day in long_days for path in day])
    history.target = root / "target-long"
    run_dbt(["parse", "--target-path", str(history.target)], settings=history.settings)


def measure_history(history: History, s3: LocalS3, settings: Settings, url: str, target: Path, today_nights) -> None:
    """10. the long base's full build; 9. nightly builds after one more day, today's base and the long one in turn."""
    history.full_seconds, history.full_results = timed_build(history.settings, history.url, history.target, "build",
                                                             *NIGHTLY_SELECTION)
    print(f"10. full build of the long base: {history.full_seconds:.1f} s", flush=True)
    for today_night, long_night in zip(today_nights, history.long_nights, strict=True):
        ingest(s3, settings, today_night)
        today_seconds, _ = timed_build(settings, url, target, "build", *NIGHTLY_SELECTION)
        ingest(s3, history.settings, long_night)
        long_seconds, history.long_results = timed_build(history.settings, history.url, history.target, "build",
                                                         *NIGHTLY_SELECTION)
        history.rounds.append((today_seconds, long_seconds))
        print(f"9. nightly build, today's base {today_seconds:.1f} s, long base {long_seconds:.1f} s", flush=True)


def history_report(history: History) -> str:
    today = statistics.median(seconds for seconds, _ in history.rounds)
    long = statistics.median(seconds for _, seconds in history.rounds)
    lines = [f"{history.factor}x base: {history.factor * history.days} days, generated in {history.generate_seconds:.1f} s "
             f"(the days after today's base), copied from today's raw tables and topped up in {history.ingest_seconds:.1f} s.",
             f"10. full build of the {history.factor}x base, first `dbt build {' '.join(NIGHTLY_SELECTION)}` : "
             f"{history.full_seconds:7.2f} s",
             phases(history.full_seconds, history.full_results),
             f"9. nightly `dbt build {' '.join(NIGHTLY_SELECTION)}` after one more day, today's base and the "
             f"{history.factor}x base in turn:"]
    for number, (today_seconds, long_seconds) in enumerate(history.rounds, 1):
        lines.append(f"   night {number}: today's {today_seconds:6.2f} s, {history.factor}x {long_seconds:6.2f} s, "
                     f"ratio {long_seconds / today_seconds:5.3f}")
    lines.append(f"   the last {history.factor}x nightly:")
    lines.append(phases(history.rounds[-1][1], history.long_results))
    lines += [
        "",
        f"ratio 9. nightly, {history.factor}x base / today's base (medians) : {long / today:7.3f}   "
        f"(target <= 1.25: {'met' if long / today <= 1.25 else 'NOT met'}; median {long:.2f} s / {today:.2f} s)",
        f"ratio 9. / 10. nightly / full build, {history.factor}x base : {long / history.full_seconds:7.3f}   "
        f"(target <= 0.10: {'met' if long / history.full_seconds <= 0.10 else 'NOT met'})",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--records-per-day", type=int, default=10_000)
    parser.add_argument("--visits-per-day", type=int, default=3_000)
    parser.add_argument("--patients-per-facility", type=int, default=1_000)
    parser.add_argument("--dag-rounds", type=int, default=2, help="figure 8: DAG runs and builds, each (default 2)")
    parser.add_argument("--only", choices=["dag"], help="dag: figure 8 alone (after one untimed first build)")
    parser.add_argument("--history-factor", type=int, default=4, help="the long base is this many times the days "
                        "(figures 9 and 10; 1 leaves them out)")
    parser.add_argument("--rounds", type=int, default=3, help="nightly builds on each base for figure 9")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1",
                      DO_NOT_TRACK="1", AIRFLOW__COSMOS__ENABLE_TELEMETRY="False")

    with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        csvs = root / "csv"
        csvs.mkdir()
        rng = random.Random(7)
        start = time.perf_counter()
        patients = make_patients(rng, args.patients_per_facility)
        write_csv(csvs / f"facilities_{FIRST_DAY:%Y-%m-%d}.csv", ["name", "state", "lga", "lat", "lon", "type"],
                  ([name, state, lga, f"{rng.uniform(5, 13):.4f}", f"{rng.uniform(3, 14):.4f}", kind]
                   for name, state, lga, kind in FACILITIES))
        write_csv(csvs / f"patients_{FIRST_DAY:%Y-%m-%d}.csv", ["facility_name", "first_name", "last_name", "sex", "dob", "phone"],
                  ([*patient, rng.choice("MF"), f"{rng.randint(1940, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    f"080{rng.randint(10_000_000, 99_999_999)}"] for patient in patients))
        base = [csvs / f"facilities_{FIRST_DAY:%Y-%m-%d}.csv", csvs / f"patients_{FIRST_DAY:%Y-%m-%d}.csv"]
        for offset in range(args.days):
            base += write_day(csvs, FIRST_DAY + timedelta(days=offset), patients, rng, args.records_per_day, args.visits_per_day)
        nights = [write_day(csvs, FIRST_DAY + timedelta(days=args.days + night), patients, rng, args.records_per_day,
                            args.visits_per_day) for night in range(4 + 2 * args.dag_rounds)]
        print(f"generated {len(base)} base files ({args.days} days) and {len(nights)} x {len(nights[0])} new ones "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
        history = (generate_history(csvs, patients, args, args.days + len(nights))
                   if args.history_factor > 1 and args.only != "dag" else None)

        postgres = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
        s3 = LocalS3(free_port(), root / "s3.log", bucket="bench")
        postgres.start()
        s3.start()
        try:
            postgres.create_database("bench")
            url = postgres.url("bench")
            settings = Settings(database_url=url, s3_endpoint_url=s3.endpoint_url, s3_bucket="bench",
                                dbt_project_dir=copy_project(root))
            prepare(settings)
            base_ingest = ingest(s3, settings, base)
            print(f"ingested the base in {base_ingest:.1f} s", flush=True)
            if history:
                load_history(history, postgres, s3, "bench", nights, root)
                print(f"the {history.factor}x base: generated in {history.generate_seconds:.1f} s, "
                      f"topped up in {history.ingest_seconds:.1f} s", flush=True)
            # Parse once: every timed run below shares this target folder, so it starts with a partial parse
            # (as on a worker that keeps dbt/target between nights).
            target = root / "target"
            run_dbt(["parse", "--target-path", str(target)], settings=settings)

            full_seconds, full_results = timed_build(settings, url, target, "build")
            print(f"1. full build: {full_seconds:.1f} s", flush=True)
            if args.only == "dag":
                text, dag_ratio = dag_lines(*dag_vs_build(root, postgres, s3, settings, url, target, nights[4:]))
                print(f"\n{text}\n\n{dag_ratio_line(dag_ratio)}")
                return 0
            new_ingest = ingest(s3, settings, nights[0])
            nightly_seconds, nightly_results = timed_build(settings, url, target, "build")
            print(f"2. nightly build: {nightly_seconds:.1f} s", flush=True)
            ingest(s3, settings, nights[1])
            row_tests = [f"{relation},test_name:{test}" for relation in LARGE_RELATIONS for test in ROW_LEVEL_TESTS]
            scoped_seconds, scoped_results = timed_build(settings, url, target, "build", "--exclude", *row_tests)
            print(f"3. nightly build without the large relations' row-level tests: {scoped_seconds:.1f} s", flush=True)
            ingest(s3, settings, nights[2])
            run_seconds, run_results = timed_build(settings, url, target, "run")
            print(f"4. nightly models only: {run_seconds:.1f} s", flush=True)
            view_seconds, _ = timed_build(settings, url, target, "run", "--select", "stg_ops__file_ledger")
            print(f"5. one view: {view_seconds:.1f} s", flush=True)
            ingest(s3, settings, nights[3])
            facts_seconds, facts_results = timed_build(settings, url, target, "run", "--select", *FACTS)
            print(f"6. the facts alone: {facts_seconds:.1f} s", flush=True)
            refresh_seconds, _ = timed_build(settings, url, target, "build", "--full-refresh")
            print(f"7. full refresh: {refresh_seconds:.1f} s", flush=True)
            dag_runs, dag_builds = dag_vs_build(root, postgres, s3, settings, url, target, nights[4:])
            if history:
                measure_history(history, s3, settings, url, target, history.extra_days[:args.rounds])
            counts = subprocess.run(
                [str(pg_bin_dir() / "psql"), url, "-tAc",
                 "select (select count(*) from core.fct_medical_records) || ' ' || (select count(*) from core.fct_triage_visits)"],
                check=True, capture_output=True, text=True).stdout.split()
        finally:
            s3.stop()
            postgres.stop()

    records, visits = (int(n) for n in counts)
    new_rows = args.records_per_day + args.visits_per_day
    base_rows = args.days * new_rows
    ratio = nightly_seconds / full_seconds
    print(f"""
base: {base_rows:,} fact rows ({args.days} days), ingested in {base_ingest:.1f} s; each night: {new_rows:,} rows
({new_rows / base_rows:.1%}) in {len(nights[0])} files, ingested in {new_ingest:.1f} s. Facts at the end: {records:,}
medical records, {visits:,} triage visits.

1. full build, first `dbt build`                    : {full_seconds:7.2f} s
{phases(full_seconds, full_results)}
2. nightly `dbt build`, facts incremental           : {nightly_seconds:7.2f} s
{phases(nightly_seconds, nightly_results)}
3. nightly, without the large relations' row tests  : {scoped_seconds:7.2f} s
{phases(scoped_seconds, scoped_results)}
4. nightly `dbt run`, models without tests          : {run_seconds:7.2f} s
{phases(run_seconds, run_results)}
5. `dbt run` of one view (dbt's fixed cost)         : {view_seconds:7.2f} s
6. nightly `dbt run` of the two facts alone         : {facts_seconds:7.2f} s
{phases(facts_seconds, facts_results)}
7. `dbt build --full-refresh`, same data            : {refresh_seconds:7.2f} s

ratio 2. nightly build / 1. full build              : {ratio:7.3f}   (target <= 0.15: {'met' if ratio <= 0.15 else 'NOT met'})
ratio 2. nightly build / 7. full refresh            : {nightly_seconds / refresh_seconds:7.3f}
ratio 3. without large row tests / 1. full build    : {scoped_seconds / full_seconds:7.3f}
ratio 4. models only / 1. full build                : {run_seconds / full_seconds:7.3f}
ratio 5. one view / 1. full build                   : {view_seconds / full_seconds:7.3f}
ratio 6. the facts alone / 1. full build            : {facts_seconds / full_seconds:7.3f}   (the floor of any nightly build)
""")
    text, dag_ratio = dag_lines(dag_runs, dag_builds)
    print(f"""{text}

{dag_ratio_line(dag_ratio)}
""")
    if history:
        print(history_report(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
