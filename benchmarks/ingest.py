"""Ingest of a 1,000,000-row Medilink medical_records CSV (161 MB as generated here) vs `psql \\copy` of it.

Both run in this one process tree against the same embedded Postgres: `\\copy` into a plain all-text
table (the floor: parse and write, nothing else) and `elt`'s ingest from the local S3 endpoint (stream,
contract validation in SQL, lineage columns, ledger, then the archive move). Five interleaved rounds
(`--rounds`), each timed run right after a checkpoint; medians are compared, because a run on a shared
2-core machine varies by a third from one round to the next. Prints every round, the load and the
archive move apart, both ratios, and the ingest's peak resident memory.
Targets: ratio <= 2.0 (issue 14; 2.5 in issue #3), peak memory < 400 MB.

    ./start.sh bench ingest [--rows N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from elt.config import Settings  # noqa: E402
from elt.devstack.servers import EmbeddedPostgres, LocalS3, free_port, pg_bin_dir  # noqa: E402
from elt.pipeline import prepare  # noqa: E402

HEADER = "facility_name,patient_first_name,patient_last_name,record_type,diagnosis,treatment,medications,notes\n"


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    facilities = [f"General Hospital {n}" for n in ("Ikeja", "Surulere", "Nassarawa", "Tarauni", "Gwagwalada")]
    firsts = ["Adebayo", "Chinedu", "Aisha", "Ngozi", "Ibrahim", "Funmilayo", "Emeka", "Zainab"]
    lasts = ["Okafor", "Adeyemi", "Bello", "Eze", "Abubakar", "Ogunleye", "Nwosu", "Usman"]
    kinds = ["Consultation", "Lab Result", "Prescription", "Imaging"]
    diagnoses = ["Hypertension", "Type 2 Diabetes", "Malaria", "Asthma", "Typhoid"]
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        chunk = []
        for index in range(rows):
            chunk.append(
                f"{rng.choice(facilities)},{rng.choice(firsts)},{rng.choice(lasts)},{rng.choice(kinds)},"
                f"{rng.choice(diagnoses)},Observation and review,Amlodipine 5mg;Paracetamol 500mg,"
                f"\"Seen at clinic, stable; review in {index % 28 + 1} days\"\n"
            )
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


INGEST = """
import json, sys, time
from elt.config import Settings
from elt.pipeline import ingest_file
settings = Settings(database_url=sys.argv[1], s3_endpoint_url=sys.argv[2], s3_bucket=sys.argv[3])
start = time.perf_counter()
outcome = ingest_file(sys.argv[4], settings=settings)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would include the parent's size at fork.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "outcome": outcome.as_dict()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        csv_path = root / "medical_records_2026-11-01.csv"
        print(f"generating {args.rows:,} rows ...", flush=True)
        write_csv(csv_path, args.rows)
        os.chmod(csv_path, 0o644)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"file: {size_mb:.0f} MB", flush=True)

        postgres = EmbeddedPostgres(root / "pg", free_port(), root / "pg.log")
        s3 = LocalS3(free_port(), root / "s3.log", bucket="bench")
        postgres.start()
        s3.start()
        try:
            postgres.create_database("bench")
            url = postgres.url("bench")
            settings = Settings(database_url=url, s3_endpoint_url=s3.endpoint_url, s3_bucket="bench")
            prepare(settings)
            psql = str(pg_bin_dir() / "psql")
            subprocess.run([psql, url, "-qc", "create table plain_copy (facility_name text, patient_first_name text, "
                            "patient_last_name text, record_type text, diagnosis text, treatment text, "
                            "medications text, notes text)"], check=True)
            variant = root / "variant.csv"
            env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
            copy_runs, ingests = [], []
            # Both sides are short and this machine is noisy: several rounds, interleaved, medians compared.
            for round_number in range(1, args.rounds + 1):
                # Each timed run starts right after a checkpoint, so neither side pays for the other's WAL.
                subprocess.run([psql, url, "-qc", "truncate plain_copy", "-c", "checkpoint"], check=True)
                start = time.perf_counter()
                subprocess.run([psql, url, "-qc", f"\\copy plain_copy from '{csv_path}' with (format csv, header true)"],
                               check=True)
                copy_runs.append(time.perf_counter() - start)
                # A distinct last row makes each round's object new bytes (not a duplicate of the last round).
                key = f"medical_records/input/medical_records_2026-11-{round_number:02d}.csv"
                extra = f"General Hospital Ikeja,Round,{round_number},Consultation,Malaria,Rest,None,bench\n".encode()
                shutil.copyfile(csv_path, variant)
                with open(variant, "ab") as out:
                    out.write(extra)
                s3.client().upload_file(str(variant), "bench", key)
                subprocess.run([psql, url, "-qc", "checkpoint"], check=True)
                result = subprocess.run([sys.executable, "-c", INGEST, url, s3.endpoint_url, "bench", key],
                                        check=True, capture_output=True, text=True, env=env, cwd=REPO)
                ingests.append(json.loads(result.stdout.strip().splitlines()[-1]))
                print(f"round {round_number}: \\copy {copy_runs[-1]:.2f} s, ingest {ingests[-1]['seconds']:.2f} s "
                      f"({', '.join(f'{k} {v:.2f}' for k, v in ingests[-1]['outcome']['timings'].items())})", flush=True)
        finally:
            s3.stop()
            postgres.stop()

    copy_seconds = statistics.median(copy_runs)
    ingest_seconds = statistics.median(i["seconds"] for i in ingests)
    load_seconds = statistics.median(i["seconds"] - i["outcome"]["timings"].get("move", 0) for i in ingests)
    move_seconds = statistics.median(i["outcome"]["timings"].get("move", 0) for i in ingests)
    peak_mb = max(i["peak_mb"] for i in ingests)
    outcome = ingests[-1]["outcome"]
    ratio, load_ratio = ingest_seconds / copy_seconds, load_seconds / copy_seconds
    print(f"""
rows: {args.rows:,}  file: {size_mb:.0f} MB   (medians of {args.rounds} interleaved rounds)
psql \\copy into a plain text table   : {copy_seconds:8.2f} s   ({', '.join(f'{t:.2f}' for t in copy_runs)})
elt ingest, whole (load + archive)   : {ingest_seconds:8.2f} s   ({', '.join(f"{i['seconds']:.2f}" for i in ingests)})
  load: S3 stream, COPY, rules,      : {load_seconds:8.2f} s   status={outcome['status']} loaded={outcome['rows_loaded']:,} rejected={outcome['rows_rejected']}
        lineage, ledger, commit
  archive, after the commit          : {move_seconds:8.2f} s   (waiting for the S3 copy made during the load, then DeleteObject)
ratio load / \\copy                  : {load_ratio:8.2f}   (target <= 2.0: {'met' if load_ratio <= 2.0 else 'NOT met'})
ratio whole ingest / \\copy          : {ratio:8.2f}   (target <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'})
ingest peak memory                   : {peak_mb:8.0f} MB (target < 400 MB: {'met' if peak_mb < 400 else 'NOT met'})
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
