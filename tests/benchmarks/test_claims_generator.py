"""benchmarks/claims.py's generator (`bench claims`, issue 15 §5): at a tiny size, its files go through the contracts
whole. Every claims file and member file loads from the S3 endpoint through the real loader with as many rows as the
file holds (counted here with pandas, not taken from the generator) and no reject, in the layout its payer writes;
and the data has what the marts need to do real work (re-sent claims, suspected duplicates, denials, members with
claims in several months, readmissions). No timing is measured or asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from elt.pipeline import ingest_file

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "claims.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_claims_under_test", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset(bench, tmp_path_factory):
    folder = tmp_path_factory.mktemp("claims-bench")
    return bench.generate(folder, lines=1200, members=400, months=3, nights=1, seed=3)


def frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_every_generated_file_loads_whole_through_the_contracts(dataset, settings, store, db):
    files = [f for month in [*dataset.base, *dataset.nights] for f in month]
    assert {f.key.split("/")[0] for f in files} == {"claims", "eligibility"}
    for generated in files:
        store.put(generated.key, generated.path.read_bytes())

    outcomes = {f.key: ingest_file(f.key, settings=settings) for f in files}

    rows_in = {f.key: len(frame(f.path)) for f in files}
    assert {key: (o.status, o.rows_loaded, o.rows_rejected) for key, o in outcomes.items()} == {
        key: ("loaded", rows, 0) for key, rows in rows_in.items()}
    assert db.execute("select count(*) from ops.load_rejects").fetchone()[0] == 0
    # The header picked each payer's own layout (and the member files the plain payer layout).
    layouts = dict(db.execute("select key, layout from ops.file_ledger").fetchall())
    assert layouts == {f.key: f.key.split("provider=")[1].split("/")[0] if f.key.startswith("claims/") else "payer"
                       for f in files}
    claims_in = sum(rows for key, rows in rows_in.items() if key.startswith("claims/"))
    spans_in = sum(rows for key, rows in rows_in.items() if key.startswith("eligibility/"))
    assert db.execute("select count(*) from raw.claims__valid").fetchone()[0] == claims_in
    assert db.execute("select count(*) from raw.eligibility__valid").fetchone()[0] == spans_in
    base_claims = sum(len(frame(f.path)) for month in dataset.base for f in month if f.key.startswith("claims/"))
    assert base_claims == 1200  # --lines is the base's claim lines


def test_the_generated_claims_give_the_marts_work(dataset):
    bluecross = pd.concat([frame(f.path).assign(file=f.key) for month in [*dataset.base, *dataset.nights]
                           for f in month if "provider=bluecross" in f.key and f.key.startswith("claims/")], ignore_index=True)
    files_per_claim = bluecross.groupby("ClaimID")["file"].nunique()
    assert (files_per_claim > 1).sum() > 0  # re-sent in a later month's file
    same_service = bluecross.drop_duplicates("ClaimID").groupby(
        ["MemberID", "ProviderNPI", "ServiceFromDate", "ProcedureCode"])["ClaimID"].nunique()
    assert (same_service > 1).sum() > 0  # suspected duplicates under another claim number
    assert (bluecross["Status"] == "Denied").mean() == pytest.approx(0.07, abs=0.04)
    months_per_member = bluecross.groupby("MemberID")["file"].nunique()
    assert (months_per_member >= 3).sum() > 10
    aetna = pd.concat([frame(f.path) for month in dataset.base for f in month if "provider=aetna" in f.key
                       and f.key.startswith("claims/")], ignore_index=True)
    stays = aetna[aetna["admit_date"] != ""].assign(
        admit=lambda d: pd.to_datetime(d["admit_date"], format="%m/%d/%Y"),
        discharge=lambda d: pd.to_datetime(d["discharge_date"], format="%m/%d/%Y")).sort_values("admit")
    gaps = stays.groupby("patient_id")["admit"].shift(-1) - stays["discharge"]
    assert ((gaps > pd.Timedelta(0)) & (gaps <= pd.Timedelta(days=30))).sum() > 0  # readmissions within 30 days
