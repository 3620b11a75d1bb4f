"""The dashboard's pages, declared once: the file under pages/ of each (the folder Streamlit and the screenshot script
read), its title, the API list endpoints it reads and the ingest DAGs whose data it shows. Which role sees a page is not
declared here: it is the least role the API gives among those endpoints (`x-role` in /openapi.json), so a page is never
shown to a key that could read none of it (app.py's navigation). A page that every key may open (`any_key`) has content
for every role: the marts' freshness, dropping a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent / "pages"


@dataclass(frozen=True)
class View:
    file: str                    # pages/<file>.py
    title: str
    icon: str
    reads: tuple[str, ...] = ()  # API list paths (OpenAPI form) its sections read
    ingest_dags: tuple[str, ...] = ()  # after a run of one of these succeeds, the drop page links here
    any_key: bool = False

    @property
    def path(self) -> Path:
        return PAGES_DIR / f"{self.file}.py"

    @property
    def url_path(self) -> str:
        return self.file.split("_", 1)[1]


VIEWS = (
    View("01_bed_occupancy", "Bed occupancy", ":material/bed:",
         reads=("/api/v1/beds/national", "/api/v1/beds/occupancy", "/api/v1/beds/periods",
                "/api/v1/beds/organisations/{org_code}/history", "/api/v1/beds/specialties"),
         ingest_dags=("nhs_beds_ingest",)),
    View("02_clinics", "Clinics", ":material/local_hospital:",
         reads=("/api/v1/facilities", "/api/v1/triage-trends", "/api/v1/condition-analysis"),
         ingest_dags=("medilink_ingest",)),
    View("03_claims", "Claims", ":material/receipt_long:",
         reads=("/api/v1/claims/pmpm", "/api/v1/claims/provider-metrics", "/api/v1/claims/provider-cost-outliers"),
         ingest_dags=("claims_ingest",)),
    View("04_claim_anomalies", "Claim anomalies", ":material/flag:", reads=("/api/v1/claims/anomaly-scores",)),
    View("05_pipeline", "Pipeline", ":material/conveyor_belt:",
         reads=("/api/v1/drops", "/api/v1/rejects", "/api/v1/pipeline-runs"), any_key=True),
    View("06_drop_a_file", "Drop a file", ":material/upload_file:", any_key=True),
)
DROP_PAGE = VIEWS[-1]


def view(file: str) -> View:
    return next(v for v in VIEWS if v.file == file)


def role_rank(roles: list[str], role: str) -> int:
    return roles.index(role) if role in roles else -1


def may_read(spec: dict, roles: list[str], role: str, path: str, method: str = "get") -> bool:
    """True when `role` reaches the least role the API declares for the endpoint (unknown endpoint: False)."""
    needed = spec.get("paths", {}).get(path, {}).get(method, {}).get("x-role")
    return needed is not None and role_rank(roles, role) >= role_rank(roles, needed)


def visible(v: View, spec: dict, roles: list[str], role: str) -> bool:
    return v.any_key or any(may_read(spec, roles, role, path) for path in v.reads)


def page_for_dag(dag_id: str | None) -> View | None:
    return next((v for v in VIEWS if dag_id in v.ingest_dags), None)
