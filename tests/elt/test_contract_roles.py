"""Who may drop a file is declared with its contract (`drop_role`, `revision_role`), and a contract cannot declare
that analysts, who see de-identified marts only, may drop patient-level files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from elt.config import get_settings
from elt.contracts import ROLES, ContractError, load_contract, load_contracts

CONTRACTS_DIR = get_settings().contracts_dir


def test_every_shipped_drop_type_with_personal_data_needs_a_clinician_or_an_admin():
    contracts = load_contracts(CONTRACTS_DIR)
    with_personal_data = {name for name, c in contracts.items() if c.personal_data}
    assert {"medilink_patients", "medilink_medical_records", "medilink_triage_visits", "claims"} <= with_personal_data
    for name in with_personal_data:
        assert contracts[name].drop_role in ("clinician", "admin"), name
    assert (contracts["nhs_kh03_overnight"].drop_role, contracts["nhs_kh03_overnight"].revision_role) == (
        "analyst", "admin")


def _write(tmp_path: Path, base: str, **changes) -> Path:
    raw = yaml.safe_load((CONTRACTS_DIR / base).read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = tmp_path / base
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("base", ["medilink_patients.yml", "medilink_triage_visits.yml", "claims.yml"])
def test_a_contract_with_personal_data_cannot_let_analysts_drop_it(tmp_path, base):
    with pytest.raises(ContractError) as refused:
        load_contract(_write(tmp_path, base, drop_role="analyst"))
    assert "drop_role" in str(refused.value) and "personal_data" in str(refused.value)


def test_a_contract_that_declares_no_role_is_dropped_by_admins_only(tmp_path):
    contract = load_contract(_write(tmp_path, "medilink_facilities.yml", drop_role=None))
    assert contract.drop_role == ROLES[-1] == "admin"


@pytest.mark.parametrize(("base", "changes", "words"), [
    ("nhs_kh03_overnight.yml", {"drop_role": "clinician", "revision_role": "analyst"}, "below drop_role"),
    ("claims.yml", {"revision_role": "admin"}, "supersede"),  # claims batches add rows: nothing to revise
])
def test_a_revision_role_must_make_sense(tmp_path, base, changes, words):
    with pytest.raises(ContractError) as refused:
        load_contract(_write(tmp_path, base, **changes))
    assert words in str(refused.value)


def test_the_role_to_drop_a_revision_is_the_revision_role():
    kh03 = load_contracts(CONTRACTS_DIR)["nhs_kh03_overnight"]
    assert (kh03.role_to_drop(replaces_loaded_period=False), kh03.role_to_drop(replaces_loaded_period=True)) == (
        "analyst", "admin")
