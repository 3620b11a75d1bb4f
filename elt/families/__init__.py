"""Source families: one declaration per kind of source (Medilink clinics, NHS KH03 workbooks, payer claims), from
which what is said once about a family is derived (issue 15, docs/decisions/0019-one-declaration-per-family.md).

A family is a YAML file in FAMILIES_DIR (default `elt/families/`), validated by pydantic like a contract:

    family: medilink
    description: Medilink clinic network CSV exports; facility, triage, condition and patient marts.
    drop_types: [medilink_facilities, medilink_patients, medilink_medical_records, medilink_triage_visits]
    ingest: {daily_at: "02:00"}          # UTC; null: no scheduled run (API drops and manual triggers only)
    marts:
      dbt_paths: [models/staging/medilink, models/core/medilink, ...]   # below dbt/: the family's dbt nodes
      refreshed: nightly                  # or on_arrival (its marts are rebuilt when a drop arrives)
    api: {prefix: null, modules: [backend.api.facilities, backend.api.analytics, backend.api.clinical]}

Its ingest DAG is `<family>_ingest`, scheduled daily at `ingest.daily_at`; the API routes an uploaded drop of one of
its drop types to that DAG and tells the uploader when it runs by itself. Every drop type belongs to at most one
family (one without a family loads with `elt ingest` only). Its marts are the dbt nodes under its `dbt_paths`, built
with the shared ones (SHARED_DBT_PATHS): `Family.dbt_select()` is the dbt selection of its marts' build. A dbt
folder belongs to one family. Its API resources are the `RESOURCES` of the modules `api.modules` names, each at a
path under `/api/v1` + `api.prefix` (backend/api/catalogue.py builds the routes and the OpenAPI document from them;
this package only names the modules, it never imports the API). `load_families` checks the declarations against the
contracts and each other and raises FamilyError naming the file and the field.

Still to be derived from it (issue 15; docs/proposals/0001-source-families.md): the marts DAGs themselves and the
local stack's DAG ids.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from elt.contracts import Contract

FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
API_PREFIX = re.compile(r"^(/[a-z0-9][a-z0-9-]*)+$")  # below /api/v1: lower-case segments, e.g. /beds
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # dotted, importable
# dbt folders that every family's build selects: the loader's ledger (the `ops` source and stg_ops__file_ledger),
# which every family's staging models read.
SHARED_DBT_PATHS = ("models/staging/ops",)


class FamilyError(ValueError):
    """A family file is malformed or disagrees with the contracts. The message names the file and the field."""


class Ingest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_at: time | None = Field(None, description="UTC time of the daily scheduled run; null: none (API drops and "
                                                    "manual triggers only).")

    @field_validator("daily_at", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        # YAML reads an unquoted 12:30 as the number 750 (base 60), which would pass as a time of seconds
        if value is not None and not isinstance(value, str | time):
            raise ValueError(f"daily_at must be a quoted time, e.g. \"02:15\" (YAML read {value!r})")
        return value

    @field_validator("daily_at")
    @classmethod
    def _whole_minutes(cls, value: time | None) -> time | None:
        if value is not None and (value.second or value.microsecond or value.tzinfo):
            raise ValueError("daily_at is a UTC time in whole minutes, e.g. \"02:15\"")
        return value


class Api(BaseModel):
    """The family's API resources: the modules that declare them, and the path prefix they all share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = Field(None, pattern=API_PREFIX.pattern,
                               description="Below /api/v1, e.g. /beds: every resource's path starts with it. null only "
                                           "for Medilink's paths, which were flat before families existed.")
    modules: tuple[str, ...] = Field((), description="Dotted Python modules, each exporting RESOURCES (a tuple of "
                                                     "backend.api.listing.Resource).")

    @field_validator("modules")
    @classmethod
    def _importable_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not MODULE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a dotted module name, e.g. backend.api.beds")
        if len(set(value)) != len(value):
            raise ValueError("a module is named twice")
        return value
class Marts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dbt_paths: tuple[str, ...] = Field(min_length=1, description="Folders of the dbt project (relative to dbt/, e.g. "
                                       "models/core/claims, tests/claims) holding the family's models, sources and "
                                       "tests, and nobody else's.")
    refreshed: Literal["nightly", "on_arrival"] = Field("nightly", description="When the marts are rebuilt: after "
                                                        "the nightly load, or when a drop arrives.")

    @field_validator("dbt_paths")
    @classmethod
    def _folders_of_the_project(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if _dbt_path(path) != path:
                raise ValueError(f"{path!r} is not a folder of the dbt project written plainly, e.g. models/core/claims "
                                 "(relative to dbt/, no '.', '..', '*', leading or trailing '/')")
            if _overlap(path, SHARED_DBT_PATHS):
                raise ValueError(f"{path!r} overlaps the shared dbt paths {list(SHARED_DBT_PATHS)}, which every "
                                 "family builds")
        if len(set(paths)) != len(paths):
            raise ValueError("a path is listed twice")
        return paths


def _dbt_path(path: str) -> str | None:
    """`path` normalised if it is a plain relative folder path of the dbt project, else None."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or path.endswith("/") or any(
            part in {".", ".."} or any(char in part for char in "*?[]\\:") for part in parts):
        return None
    return "/".join(parts)


def _overlap(path: str, others) -> str | None:
    """The first of `others` that is `path`, or a folder above or below it."""
    return next((other for other in others if other == path or other.startswith(path + "/")
                 or path.startswith(other + "/")), None)


class Family(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(pattern=FAMILY_NAME.pattern)
    description: str = Field(min_length=1)
    drop_types: tuple[str, ...] = Field(min_length=1)
    ingest: Ingest = Ingest()
    marts: Marts
    api: Api = Api()

    @property
    def ingest_dag_id(self) -> str:
        return f"{self.family}_ingest"

    @property
    def marts_dag_id(self) -> str:
        """The DAG that builds its marts, scheduled on the asset its ingest DAG emits (elt/dag_factory.py)."""
        return f"{self.family}_marts"

    @property
    def cron(self) -> str | None:
        """The ingest DAG's schedule: daily at `ingest.daily_at` (UTC), or None."""
        at = self.ingest.daily_at
        return None if at is None else f"{at.minute} {at.hour} * * *"

    def schedule_text(self) -> str:
        """When the ingest DAG runs by itself, for people: "02:15 UTC", or "no schedule"."""
        at = self.ingest.daily_at
        return "no schedule" if at is None else f"{at:%H:%M} UTC"

    @property
    def dbt_paths(self) -> tuple[str, ...]:
        """The dbt folders its marts' build selects: its own, then the shared ones."""
        return (*self.marts.dbt_paths, *SHARED_DBT_PATHS)

    def dbt_select(self) -> list[str]:
        """Its marts' dbt selection: `dbt build --select <these>` builds the nodes under its dbt paths and the shared
        ones, and the tests on them (dbt's eager indirect selection); elt.dbt_plan.watch_tasks follows the same."""
        return [f"path:{path}" for path in self.dbt_paths]


def load_family(path: Path) -> Family:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        family = Family.model_validate(raw)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name, which pydantic does not know
        raise FamilyError(f"{path.name}: {exc}") from exc
    if path.stem != family.family:
        raise FamilyError(f"{path.name}: family {family.family!r} must be declared in {family.family}.yml")
    return family


def family_files(directory: Path) -> dict[str, Family]:
    """Every family file in `directory`, each checked on its own (not against the contracts or each other): what the
    marts DAGs need, read cheaply. load_families is the full check."""
    return {family.family: family for family in map(load_family, sorted(directory.glob("*.yml")))}


def load_families(directory: Path, contracts: dict[str, Contract]) -> dict[str, Family]:
    """Every family in `directory`, keyed by name, checked against the contracts: each drop type is a contract and
    belongs to one family only. Raises FamilyError on the first problem, naming the file."""
    if not directory.is_dir():
        raise FamilyError(f"{directory}: no such folder of source families (FAMILIES_DIR)")
    families: dict[str, Family] = {}
    owner: dict[str, str] = {}  # drop type -> the file that declared it
    prefixes: dict[str, str] = {}  # API prefix -> the file that declared it
    folders: dict[str, str] = {}  # dbt path -> the file that declared it
    for path in sorted(directory.glob("*.yml")):
        family = load_family(path)
        _check_api_prefix(path, family, prefixes)
        for drop_type in family.drop_types:
            if drop_type not in contracts:
                raise FamilyError(f"{path.name}: drop_types: {drop_type!r} is not a contract in the contracts folder "
                                  f"(known: {', '.join(sorted(contracts))})")
            if drop_type in owner:
                raise FamilyError(f"{path.name}: drop_types: {drop_type!r} is already in {owner[drop_type]}; a drop "
                                  "type belongs to one family")
            owner[drop_type] = path.name
        for folder in family.marts.dbt_paths:
            if (taken := _overlap(folder, folders)) is not None:
                raise FamilyError(f"{path.name}: marts.dbt_paths: {folder!r} overlaps {taken!r} of {folders[taken]}; "
                                  "a dbt folder belongs to one family")
            folders[folder] = path.name
        families[family.family] = family
    return families


def _check_api_prefix(path: Path, family: Family, prefixes: dict[str, str]) -> None:
    """Two families' API prefixes may not be equal or one inside the other: each path has one family."""
    prefix = family.api.prefix
    if prefix is None:
        return
    for other, where in prefixes.items():
        if (prefix + "/").startswith(other + "/") or (other + "/").startswith(prefix + "/"):
            raise FamilyError(f"{path.name}: api.prefix: {prefix!r} overlaps {other!r} of {where}; each family's "
                              "API paths have a prefix of their own")
    prefixes[prefix] = path.name


def declared_families(settings) -> dict[str, Family]:
    """The families of `settings.families_dir`, checked against the contracts of `settings.contracts_dir` (an
    elt.config.Settings): what the DAG files, the API, the CLI and the local stack read."""
    from elt.contracts import load_contracts

    return load_families(settings.families_dir, load_contracts(settings.contracts_dir))


def missing_dbt_paths(families: dict[str, Family], dbt_project_dir: Path) -> list[str]:
    """What each family declares in `marts.dbt_paths` that is not a folder of the dbt project, as "<file>:
    marts.dbt_paths: ..." messages. dbt selects nothing by such a path and only warns, so the marts would silently
    not be built; `elt families` fails on it. (Not checked by load_families: the DAG files read families where no
    dbt project need be, and a test may point DBT_PROJECT_DIR at a project of its own.)"""
    return [f"{family.family}.yml: marts.dbt_paths: {path!r} is not a folder of the dbt project {dbt_project_dir}"
            for family in families.values() for path in family.marts.dbt_paths
            if not (Path(dbt_project_dir) / path).is_dir()]


def family_of(families: dict[str, Family], drop_type: str) -> Family | None:
    """The family a drop type belongs to; None: it loads with `elt ingest` only."""
    return next((family for family in families.values() if drop_type in family.drop_types), None)
