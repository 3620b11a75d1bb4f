"""A contract can have an upload's key built from fields the uploader gives (`landing.upload_folder` and
`upload_fields`: a claims batch's payer and month), and a declaration that could not build a safe key is refused."""

from __future__ import annotations

from datetime import date

import pytest
import yaml

from elt.config import get_settings
from elt.contracts import ContractError, UploadFieldError, load_contract, load_contracts

CONTRACTS_DIR = get_settings().contracts_dir


def test_the_claims_key_is_built_from_payer_and_month_and_matches_its_own_pattern():
    claims = load_contracts(CONTRACTS_DIR)["claims"]
    key = claims.landing.upload_key("b.csv", {"payer": "aetna", "month": " 2024-02 "})
    assert key == "claims/provider=aetna/year=2024/month=02/b.csv" and claims.matches(key)
    assert claims.landing.upload_fields["month"].parse("2024-12") == date(2024, 12, 1)
    for given, field, missing in [({"month": "2024-02"}, "payer", True), ({"payer": "aetna", "month": ""}, "month", True),
                                  ({"payer": "a/b", "month": "2024-02"}, "payer", False)]:
        with pytest.raises(UploadFieldError) as refused:
            claims.landing.upload_key("b.csv", given)
        assert (refused.value.field, refused.value.missing) == (field, missing) and "a/b" not in str(refused.value)


@pytest.mark.parametrize(("landing", "says"), [
    ({"upload_folder": "provider={payer}/year={month:%Y}/"}, "upload_folder names the fields ['month', 'payer']"),
    ({"upload_fields": {"payer": {"pattern": "^[a-z]+$"}}}, "upload_fields declares ['payer']"),
    ({"upload_folder": "provider={payer}/", "upload_fields": {"payer": {}}}, "needs a pattern"),
    ({"upload_folder": "provider={payer}", "upload_fields": {"payer": {"pattern": "^[a-z]+$"}}}, "must end with /"),
    ({"upload_folder": "p={payer.__class__}/", "upload_fields": {"payer": {"pattern": "^[a-z]+$"}}}, "upload_folder"),
])
def test_a_folder_that_names_other_fields_than_it_declares_is_refused(tmp_path, landing, says):
    raw = yaml.safe_load((CONTRACTS_DIR / "medilink_facilities.yml").read_text())
    raw["landing"] = {**raw["landing"], **landing}
    path = tmp_path / "medilink_facilities.yml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ContractError, match="medilink_facilities.yml") as refused:
        load_contract(path)
    assert says in str(refused.value)


@pytest.mark.parametrize("value", ["../x", "a/b", ".hidden", "x" * 65, "a b", ""])
def test_a_text_field_never_takes_a_slash_a_leading_dot_or_a_long_value_whatever_its_pattern(value):
    from elt.contracts import UploadField

    field = UploadField(pattern=".*")
    with pytest.raises(ValueError, match="a value matching"):
        field.parse(value)
