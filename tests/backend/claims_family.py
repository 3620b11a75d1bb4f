"""The claims family's declaration, written once, for the tests of the claims API (backend/api/claims.py).

It is not in elt/families/ yet: a family file routes uploads to its ingest DAG, `claims_ingest`, which comes with the
claims DAG (issue 15 §2). When that DAG lands, CLAIMS_FAMILY moves as it stands into elt/families/claims.yml, and
`families_with_claims` gives way to the repository's own folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from elt.config import REPO_ROOT

CLAIMS_FAMILY = """\
# Payer claims: claim lines in four layouts (three payers' and the Tuva Project's) and member eligibility.
# One declaration of the family (elt/families/__init__.py, docs/decisions/0019-one-declaration-per-family.md).
family: claims
description: Payer claims and eligibility; claim lines, member months, PMPM, provider metrics, duplicates and anomaly scores.
drop_types: [claims, eligibility]
ingest:
  daily_at: "02:15"   # UTC; claims_ingest runs then
api:                  # the API resources (backend/api/catalogue.py): each module's RESOURCES, under /api/v1/claims
  prefix: /claims
  modules: [backend.api.claims]
"""


def families_with_claims(directory: Path) -> Path:
    """A folder of families in `directory`: the repository's, and claims.yml (CLAIMS_FAMILY)."""
    families = directory / "families"
    shutil.copytree(REPO_ROOT / "elt" / "families", families, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (families / "claims.yml").write_text(CLAIMS_FAMILY)
    return families
