"""The landing bucket's lifecycle rules follow the drop contracts (terraform/modules/contract_prefixes).

The module has no provider, so Terraform applies it here offline against a copy of the contracts: a new drop
type's archive prefix must appear in its output without an edit under terraform/. The AWS module itself cannot be
initialised offline; the static test below checks that it feeds the module's output to the lifecycle rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from elt.contracts import load_contracts

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "terraform" / "modules" / "contract_prefixes"
TERRAFORM = shutil.which("terraform")


def _apply(workdir: Path, contracts_dir: Path) -> list[str]:
    (workdir / "main.tf").write_text(
        f'module "contracts" {{\n  source        = "{MODULE}"\n  contracts_dir = "{contracts_dir}"\n}}\n'
        'output "archive_prefixes" { value = module.contracts.archive_prefixes }\n')
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(workdir / ".tf")}
    for command in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
        subprocess.run([TERRAFORM, *command], cwd=workdir, env=env, check=True, capture_output=True, timeout=120)
    shown = subprocess.run([TERRAFORM, "output", "-json", "archive_prefixes"], cwd=workdir, env=env, check=True,
                           capture_output=True, text=True, timeout=60)
    return json.loads(shown.stdout)


@pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH: install it to check terraform/modules/")
def test_the_archive_prefixes_are_read_from_the_contracts_and_follow_a_new_one(tmp_path):
    contracts_dir = tmp_path / "contracts"
    shutil.copytree(ROOT / "elt" / "contracts", contracts_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    toy = yaml.safe_load((contracts_dir / "claims.yml").read_text())
    toy["drop_type"] = "toy_things"
    toy["landing"].update(prefix="toy/", archive_prefix="toy/archive/{date:%Y-%m-%d}/",
                          quarantine_prefix="toy/quarantine/{date:%Y-%m-%d}/")
    (contracts_dir / "toy_things.yml").write_text(yaml.safe_dump(toy))

    roots = {c.landing.archive_prefix.split("{")[0] for c in load_contracts(contracts_dir).values()}
    assert "toy/archive/" in roots and "nhs/kh03/archive/" in roots  # the expectation is not empty or stale
    workdir = tmp_path / "root"
    workdir.mkdir()
    assert _apply(workdir, contracts_dir) == sorted(roots)


def test_the_lifecycle_rules_use_the_contracts_prefixes_unless_overridden():
    main = (ROOT / "terraform" / "main.tf").read_text()
    variables = (ROOT / "terraform" / "variables.tf").read_text()
    assert 'source        = "./modules/contract_prefixes"' in main
    assert 'contracts_dir = "${path.module}/../elt/contracts"' in main
    assert "for_each = local.archive_prefixes" in main
    assert "var.archive_prefixes != null ? var.archive_prefixes : module.contracts.archive_prefixes" in main
    block = variables.split('variable "archive_prefixes"')[1].split("\n}\n")[0]
    assert "default     = null" in block
