"""The dashboard's pages against the real API and marts (tests/dashboard/conftest.py): every page renders for a key
that may read it, the figures it shows are the API's (fetched here from the API itself), its filters are the API's
and change what is shown, a key sees only the pages its role may read, and errors say what happened."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from backend.dashboard.views import VIEWS
from tests.dashboard.conftest import dashboard


def plain(value):
    """A table's cell as the API's JSON has it: pandas shows a null number as NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def rows_of(table, columns: tuple[str, ...]) -> Counter:
    """The table's rows (those columns) as a multiset, to compare with the API's rows (`api_rows`)."""
    return Counter(tuple(plain(v) for v in row) for row in zip(*(table[c] for c in columns), strict=True))


def api_rows(rows: list[dict], columns: tuple[str, ...]) -> Counter:
    return Counter(tuple(row[c] for c in columns) for row in rows)


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.file)
def test_every_page_renders_for_an_admin_with_demo_data(api_url, keys, monkeypatch, view):
    at = dashboard(api_url, keys["admin"], monkeypatch, view.file)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)
    assert at.title[0].value == view.title
    if view.reads:
        assert at.dataframe or at.metric, f"{view.file} shows no figures"
        assert any("as of 20" in c.value for c in at.caption), "no section says when its mart was built"


GA = "General & Acute"


def shown(at, key: str):
    """The table the page shows under `key` (ui.table; None when the section shows none)."""
    try:
        return at.main.get_by_key(key).dataframe[0].value
    except (KeyError, IndexError):
        return None


def selectbox(at, key: str):
    return next(s for s in at.selectbox if s.key == key)


def test_bed_occupancy_shows_the_apis_figures(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["analyst"], monkeypatch, "01_bed_occupancy")
    assert not at.exception and not at.error
    national = sorted(fetch("/api/v1/beds/national", "analyst", sector=GA), key=lambda r: r["period_start"])
    latest = national[-1]
    (metric,) = at.metric
    assert metric.label == f"England, {latest['financial_year']} Q{latest['quarter']}"
    assert metric.value == f"{latest['occupancy_rate']:.1%}"
    # The quarter shown by default is the newest loaded; the regions are the API's for it.
    newest = fetch("/api/v1/beds/periods", "analyst")[0]
    assert selectbox(at, "quarter").value == (newest["financial_year"], newest["quarter"])
    regions = fetch("/api/v1/beds/occupancy", "analyst", level="region", sector=GA,
                    financial_year=newest["financial_year"], quarter=newest["quarter"])
    table = shown(at, "regions")
    columns = ("region_code", "period_start", "occupancy_rate", "quarter_on_quarter_change", "year_on_year_change")
    assert regions and rows_of(table, columns) == api_rows(regions, columns)
    above = fetch("/api/v1/beds/occupancy", "analyst", level="trust", sector=GA, is_above_92_pct="true",
                  financial_year=newest["financial_year"], quarter=newest["quarter"])
    if above:
        assert sorted(shown(at, "above_92")["org_code"]) == sorted(r["org_code"] for r in above)
    else:  # the generated workbooks' trusts are all below 92% in general and acute
        assert shown(at, "above_92") is None and "No trust was above 92% in this quarter." in texts(at.info)
    # Every section says where its figures come from, and offers the API's CSV.
    assert any("`analytics.bed_occupancy_national` · as of 20" in c.value for c in at.caption)
    assert len(at.get("download_button")) >= 4


def test_the_quarter_filter_changes_the_regions_to_the_apis_for_that_quarter(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["analyst"], monkeypatch, "01_bed_occupancy")
    before = shown(at, "regions")
    older = fetch("/api/v1/beds/periods", "analyst")[-1]
    selectbox(at, "quarter").set_value((older["financial_year"], older["quarter"])).run()
    assert not at.exception and not at.error
    regions = fetch("/api/v1/beds/occupancy", "analyst", level="region", sector=GA,
                    financial_year=older["financial_year"], quarter=older["quarter"])
    columns = ("region_code", "period_start", "occupancy_rate", "quarter_on_quarter_change")
    after = shown(at, "regions")
    assert rows_of(after, columns) == api_rows(regions, columns)
    assert rows_of(after, columns) != rows_of(before, columns)


def test_the_state_filter_shows_the_apis_facilities_of_that_state(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["analyst"], monkeypatch, "02_clinics")
    everything = fetch("/api/v1/facilities", "analyst")
    assert sorted(shown(at, "facilities")["facility_id"]) == sorted(f["facility_id"] for f in everything)
    state = sorted({f["state"] for f in everything})[0]
    selectbox(at, "/api/v1/facilities?state").set_value(state).run()
    assert not at.exception and not at.error
    in_state = fetch("/api/v1/facilities", "analyst", state=state)
    table = shown(at, "facilities")
    assert 0 < len(in_state) < len(everything)
    assert sorted(table["facility_id"]) == sorted(f["facility_id"] for f in in_state)
    assert set(table["state"]) == {state}


def test_the_triage_figures_are_the_apis_for_the_facility_chosen(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["analyst"], monkeypatch, "02_clinics")
    facilities = fetch("/api/v1/facilities", "analyst")
    # By default the busiest facility (most triage visits, as the API counts them; withheld counts last).
    busiest = max(facilities, key=lambda f: (f["triage_visit_count"] or -1, [-ord(c) for c in f["facility_name"]]))
    picker = selectbox(at, "/api/v1/triage-trends?facility_id")
    assert picker.value == busiest["facility_id"]
    for facility in (busiest, next(f for f in facilities if f["facility_id"] != busiest["facility_id"])):
        picker.set_value(facility["facility_id"]).run()
        assert not at.exception and not at.error
        last = max(fetch("/api/v1/triage-trends", "analyst", facility_id=facility["facility_id"]),
                   key=lambda r: r["visit_date"])
        (metric,) = at.metric
        assert metric.label == f"Last 7 days to {last['visit_date']}"
        assert metric.value == ("withheld" if last["visit_count_7d"] is None else f"{last['visit_count_7d']:,}")
        picker = selectbox(at, "/api/v1/triage-trends?facility_id")


def test_the_claims_page_shows_the_apis_pmpm_and_the_payer_filter_narrows_it(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["analyst"], monkeypatch, "03_claims")
    assert not at.exception and not at.error
    pmpm = fetch("/api/v1/claims/pmpm", "analyst", claim_type="all")
    table = shown(at, "pmpm")
    columns = ("payer", "plan", "month", "paid_pmpm", "allowed_pmpm", "member_months")
    assert rows_of(table, columns) == api_rows(pmpm, columns)
    payer = sorted({r["payer"] for r in pmpm})[0]
    selectbox(at, "/api/v1/claims/pmpm?payer").set_value(payer).run()
    narrowed = shown(at, "pmpm")
    assert set(narrowed["payer"]) == {payer}
    assert len(narrowed) == len([r for r in pmpm if r["payer"] == payer]) < len(pmpm)


def test_the_pipeline_page_shows_the_apis_files_runs_and_marts(api_url, keys, monkeypatch, fetch):
    import requests

    at = dashboard(api_url, keys["admin"], monkeypatch, "05_pipeline")
    assert not at.exception and not at.error
    assert sorted(shown(at, "files")["file_id"]) == sorted(f["file_id"] for f in fetch("/api/v1/drops"))
    runs = shown(at, "runs")
    assert sorted(zip(runs["dag_id"], runs["state"], strict=True)) == sorted(
        (r["dag_id"], r["state"]) for r in fetch("/api/v1/pipeline-runs"))
    assert sorted(runs["state"]) == ["failed", "success"]
    ready = requests.get(api_url + "/ready", timeout=30).json()
    assert sorted(shown(at, "marts")["mart"]) == sorted(ready["marts"])
    selectbox(at, "/api/v1/pipeline-runs?state").set_value("failed").run()
    assert list(shown(at, "runs")["dag_id"]) == ["claims_marts"]


def test_the_pipeline_page_shows_the_rejected_rows_of_the_file_chosen(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["admin"], monkeypatch, "05_pipeline")
    assert not at.exception and not at.error
    files = fetch("/api/v1/drops")
    with_rejects = [f["file_id"] for f in files if f["rows_rejected"]]
    assert len(with_rejects) >= 2  # the generated drops carry bad rows: two files to choose between
    choose = selectbox(at, "/api/v1/rejects?file_id")
    assert choose.options == [choose.format_func(f) for f in sorted(with_rejects, reverse=True)]  # newest first
    columns = ("row_number", "column_name", "rule", "message")
    for file_id in (with_rejects[0], with_rejects[-1]):
        selectbox(at, "/api/v1/rejects?file_id").set_value(file_id).run()
        table = shown(at, "rejects")
        expected = fetch("/api/v1/rejects", file_id=file_id)
        assert list(table.columns) == list(columns)  # never a value the row held: the API serves none
        assert expected and rows_of(table, columns) == api_rows(expected, columns)
        # Each file's rows count what the ledger says it rejected (a row may break several rules).
        assert len(set(table["row_number"])) == next(f["rows_rejected"] for f in files if f["file_id"] == file_id)
        assert any(f"{len(expected):,} row" in c.value and "ops.load_rejects" in c.value for c in at.caption)
        assert any(f"/api/v1/rejects?[('file_id', {file_id})]" in b.proto.id for b in at.get("download_button"))


def test_an_analyst_sees_no_patient_level_page_and_no_ledger(api_url, keys, monkeypatch):
    at = dashboard(api_url, keys["analyst"], monkeypatch)
    with pytest.raises(ValueError, match="navigation"):
        at.switch_page("pages/04_claim_anomalies.py")
    at.switch_page("pages/05_pipeline.py").run()
    assert shown(at, "marts") is not None  # freshness: every key
    assert shown(at, "files") is None and shown(at, "runs") is None and shown(at, "rejects") is None
    assert "for the admin role; your key is analyst" in texts(at.info)


def test_a_clinician_sees_the_anomalies_the_api_lists(api_url, keys, monkeypatch, fetch):
    at = dashboard(api_url, keys["clinician"], monkeypatch, "04_claim_anomalies")
    assert not at.exception and not at.error
    flagged = fetch("/api/v1/claims/anomaly-scores", "clinician", anomaly_score_from=0.01)
    table = shown(at, "anomalies")
    assert flagged and sorted(zip(table["payer"], table["claim_id"], strict=True)) == sorted(
        (r["payer"], r["claim_id"]) for r in flagged)
    # Each claim's reasons, named by their rule ids as the API gives them.
    why = dict(zip(zip(table["payer"], table["claim_id"], strict=True), table["why"], strict=True))
    for row in flagged:
        assert [part.split(":")[0] for part in why[(row["payer"], row["claim_id"])].split("; ")] == row["rule_ids"]


def test_the_drop_page_offers_a_key_only_the_drop_types_its_role_may_drop(api_url, keys, monkeypatch):
    from elt.config import Settings
    from elt.contracts import ROLES, load_contracts

    contracts = load_contracts(Settings().contracts_dir)
    for role in ("analyst", "admin"):
        at = dashboard(api_url, keys[role], monkeypatch, "06_drop_a_file")
        assert not at.exception and not at.error
        allowed = sorted(name for name, c in contracts.items() if ROLES.index(c.drop_role) <= ROLES.index(role))
        assert selectbox(at, "drop_type").options == allowed
    assert len(allowed) == len(contracts)  # an admin may drop every type


def test_without_a_key_the_page_says_how_to_get_one(api_url, monkeypatch):
    at = dashboard(api_url, None, monkeypatch)
    assert "./start.sh api-key create" in texts(at.info) and not at.dataframe


def test_a_refused_key_says_the_api_refused_it(api_url, monkeypatch):
    at = dashboard(api_url, "hwk_999_" + "x" * 40, monkeypatch)
    assert "The API refused this key" in texts(at.error) and not at.dataframe
    with pytest.raises(ValueError):
        at.switch_page("pages/01_bed_occupancy.py")


def test_an_api_that_does_not_answer_is_said_to_be_down(keys, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    at = dashboard(f"http://127.0.0.1:{port}", keys["analyst"], monkeypatch)
    assert "The API did not answer" in texts(at.error)


def test_the_csv_download_is_the_apis_csv_of_the_same_filters(api_url, keys, monkeypatch):
    import requests

    from backend.dashboard.client import Api

    at = dashboard(api_url, keys["analyst"], monkeypatch, "02_clinics")
    state = selectbox(at, "/api/v1/facilities?state").options[1]
    selectbox(at, "/api/v1/facilities?state").set_value(state).run()
    buttons = [b for b in at.get("download_button") if "/api/v1/facilities?" in b.proto.id]
    assert buttons, "the facility table has no download"
    direct = requests.get(api_url + "/api/v1/facilities", params={"state": state, "format": "csv"},
                          headers={"Authorization": f"Bearer {keys['analyst']}"}, timeout=30)
    downloaded = Api(api_url, keys["analyst"]).csv("/api/v1/facilities", {"state": state, "lga": None})
    assert downloaded == direct.content and downloaded.count(b"\n") == 1 + len(shown(at, "facilities"))


def test_the_date_range_filter_shows_the_apis_days_for_it(api_url, keys, monkeypatch, fetch):
    from datetime import date

    at = dashboard(api_url, keys["analyst"], monkeypatch, "02_clinics")
    facility_id = selectbox(at, "/api/v1/triage-trends?facility_id").value
    every_day = sorted(r["visit_date"] for r in fetch("/api/v1/triage-trends", "analyst", facility_id=facility_id))
    start, end = every_day[2], every_day[-4]
    next(d for d in at.date_input if d.key == "/api/v1/triage-trends?visit_date").set_value(
        (date.fromisoformat(start), date.fromisoformat(end))).run()
    assert not at.exception and not at.error, texts(at.error)
    in_range = fetch("/api/v1/triage-trends", "analyst", facility_id=facility_id, visit_date_from=start,
                     visit_date_to=end)
    assert in_range and all(start <= r["visit_date"] <= end for r in in_range)
    last = max(in_range, key=lambda r: r["visit_date"])
    (metric,) = at.metric
    assert last["visit_date"] == end and metric.label == f"Last 7 days to {end}"
    assert metric.value == ("withheld" if last["visit_count_7d"] is None else f"{last['visit_count_7d']:,}")
    assert any(f"· {len(in_range)} rows" in c.value for c in at.caption)
