"""Connector declarations: one YAML file per connector in CONNECTORS_DIR (default `airflow/connectors/`), validated
by pydantic, so that what moves where, and when, is said once and checked before anything runs.

    name: beds_parquet_export              # optional; always the file's stem
    description: Bed occupancy for the commissioner, as Parquet.
    schedule: "0 6 * * 1"                  # cron (or @daily, ...), UTC; null: by hand only
    personal_data: false                   # true when it moves patient-level rows (required then)
    deliver:                               # out of the warehouse: a mart or a query ...
      mart: analytics.bed_occupancy_daily  #   or  query: select ... from analytics....
      to: {kind: s3, bucket: exports, format: parquet}
    # ... or into it:
    # pull:
    #   from: {kind: postgres, ...}
    #   drop_type: clinic_visits           # a contract: what the pulled files are, and how they load

The kinds are the modules of `elt.connectors.destinations` and `elt.connectors.sources` (base.py): each defines
`Options` (with `kind: Literal["<module>"]`) and `open(options)`. `kinds()` imports them and `to`/`from` is validated
against the union of their `Options`, discriminated by `kind`: a new module is a new kind, and no list names them.

`load_connectors` checks each file alone (shape, options, schedule) and raises ConnectorSpecError naming the file and
the field; `check_connector` checks one against the warehouse's contracts: a pull's drop type exists, and a connector
that moves patient-level data (a mart or query reading a patient-level schema, or a pull of a drop type whose contract
lists `personal_data`) says `personal_data: true`, or is refused.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from elt.connectors.base import ConnectorError

CONNECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{1,60}$")
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
# Schemas whose rows are about one patient: the loaded drops (raw), their cleaned copies (staging), the joined
# records (core), the patient-level marts (clinical) and the ledger's rejects (ops). The de-identified marts live in
# `analytics`. A contract's own raw schema (target_table) counts too: `patient_level_schemas`.
PATIENT_LEVEL_SCHEMAS = ("raw", "staging", "core", "clinical", "ops")
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
PACKAGES = {"destination": "elt.connectors.destinations", "source": "elt.connectors.sources"}


class ConnectorSpecError(ConnectorError):
    """A connector file is malformed, names a kind that does not exist, or is refused by a check. The message names
    the file and the field."""


@dataclass(frozen=True)
class Kind:
    """One source or destination kind: its module, its options model and how it opens."""

    name: str
    role: Literal["destination", "source"]
    options: type[BaseModel]
    module: ModuleType  # its `open`: elt.connectors.engine.open_kind calls it


@cache
def kinds(role: Literal["destination", "source"]) -> dict[str, Kind]:
    """Every kind of `role`, by name: the modules of its package (those not starting with `_`), each checked."""
    package = importlib.import_module(PACKAGES[role])
    found: dict[str, Kind] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found[info.name] = Kind(info.name, role, _options_of(module, info.name), module)
    return found


def _options_of(module: ModuleType, name: str) -> type[BaseModel]:
    options = getattr(module, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)) or not callable(getattr(module, "open", None)):
        raise ConnectorSpecError(f"{module.__name__}: a kind module defines `Options` (a pydantic model) and `open`")
    field = options.model_fields.get("kind")
    if field is None or getattr(field.annotation, "__args__", None) != (name,):
        raise ConnectorSpecError(f"{module.__name__}: Options.kind must be Literal[{name!r}] (the module's name)")
    return options


def _kind_union(role: Literal["destination", "source"]) -> Any:
    """The options of every kind of `role`, discriminated by `kind`; a placeholder that refuses when there is none."""
    models = [kind.options for kind in kinds(role).values()]
    if not models:
        def refuse(value: dict) -> dict:
            raise ValueError(f"no {role} kinds are installed ({PACKAGES[role]} has no modules)")

        return Annotated[dict, AfterValidator(refuse)]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007 - a runtime-built union


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Deliver(_Strict):
    mart: str | None = Field(None, description="schema.table of the mart to deliver, whole.")
    query: str | None = Field(None, description="A select over the warehouse, delivered as its result.")

    @field_validator("mart")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is not None and not TABLE_NAME.fullmatch(value):
            raise ValueError("must be schema.table in lower case, e.g. analytics.bed_occupancy_daily")
        return value

    @field_validator("query")
    @classmethod
    def _select(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip().rstrip(";").strip()
            if not re.match(r"(?is)^(select|with)\b", value) or ";" in value:
                raise ValueError("must be one select (or with ... select) statement")
        return value

    @model_validator(mode="after")
    def _one_subject(self):
        if (self.mart is None) == (self.query is None):
            raise ValueError("give exactly one of mart and query")
        return self

    @property
    def subject(self) -> str:
        """What is delivered, for keys and records: the mart's name, or `query`."""
        return self.mart or "query"


class _Pull(_Strict):
    drop_type: str = Field(description="The contract the pulled files are drops of: where they land, how they load.")


@cache
def _connector_model() -> type[BaseModel]:
    """The declaration model, its `to` and `from` the unions of the kinds found now."""
    deliver = create_model("Deliver", __base__=_Deliver, to=(_kind_union("destination"), ...))
    pull = create_model("Pull", __base__=_Pull, source=(_kind_union("source"), Field(alias="from")))
    return create_model("ConnectorDeclaration", __base__=Connector, deliver=(deliver | None, None),
                        pull=(pull | None, None))


class Connector(_Strict):
    name: str = Field(description="The file's stem (a-z, 0-9, _): the DAG is connector_<name>.")
    description: str = Field(min_length=1)
    schedule: str | None = Field(None, description="cron expression or preset (UTC); null: by hand only.")
    personal_data: bool = Field(False, description="It moves patient-level rows: required then, and its runs are "
                                                   "audited.")
    deliver: Any = None
    pull: Any = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CONNECTOR_NAME.fullmatch(value):
            raise ValueError("must be lower case letters, digits and _, starting with a letter (2 to 61 characters)")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and value not in CRON_PRESETS and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 6 * * 1') nor one of {', '.join(CRON_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _one_direction(self):
        if (self.deliver is None) == (self.pull is None):
            raise ValueError("give exactly one of deliver (out of the warehouse) and pull (into it)")
        return self

    @property
    def direction(self) -> Literal["deliver", "pull"]:
        return "deliver" if self.deliver is not None else "pull"

    @property
    def kind(self) -> Kind:
        """The destination or source kind this connector uses."""
        if self.deliver is not None:
            return kinds("destination")[self.deliver.to.kind]
        return kinds("source")[self.pull.source.kind]

    @property
    def options(self) -> BaseModel:
        return self.deliver.to if self.deliver is not None else self.pull.source

    @property
    def dag_id(self) -> str:
        return f"connector_{self.name}"

    def what(self) -> str:
        """One line for people: `analytics.x -> s3` or `postgres -> drop type clinic_visits`."""
        if self.deliver is not None:
            return f"{self.deliver.subject} -> {self.kind.name}"
        return f"{self.kind.name} -> drop type {self.pull.drop_type}"


def load_connector(path: Path) -> Connector:
    """One declaration, checked on its own. Raises ConnectorSpecError naming the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConnectorSpecError(f"{path.name}: not readable YAML ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise ConnectorSpecError(f"{path.name}: must be a mapping of fields (name, description, deliver or pull, ...)")
    if raw.setdefault("name", path.stem) != path.stem:
        raise ConnectorSpecError(f"{path.name}: name: must be the file's stem, {path.stem!r}")
    try:
        return _connector_model().model_validate(raw)
    except ValidationError as exc:
        raise ConnectorSpecError(f"{path.name}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """pydantic's errors as `field.path: message`, one per line; the input values left out (they may be secrets)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-")) or "(top)"
        lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


def declaration_paths(directory: Path) -> list[Path]:
    """The declaration files in `directory` (*.yml and *.yaml), by name; none when the folder does not exist."""
    return sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]) if directory.is_dir() else []


def load_connectors(directory: Path) -> dict[str, Connector]:
    """Every declaration in `directory`, by name; the first that does not load raises (ConnectorSpecError)."""
    return {connector.name: connector for connector in map(load_connector, declaration_paths(directory))}


def load_declared(directory: Path) -> tuple[dict[str, Connector], list[str]]:
    """(the declarations in `directory` that load, by name; what is wrong with each that does not): for what one bad
    file must not stop (the DAGs, the API's list, the local stack). `elt connectors check` names the file and field."""
    connectors, problems = {}, []
    for path in declaration_paths(directory):
        try:
            connector = load_connector(path)
        except ConnectorSpecError as exc:
            problems.append(str(exc))
            continue
        connectors[connector.name] = connector
    return connectors, problems


def export_buckets(connectors) -> list[str]:
    """The buckets the s3 deliveries among `connectors` write to: a local endpoint makes them (./start.sh, compose's
    airflow-init); a real store's owner makes its own."""
    return sorted({c.options.bucket for c in connectors if c.deliver is not None and c.kind.name == "s3"})


def patient_level_schemas(contracts: dict) -> set[str]:
    """PATIENT_LEVEL_SCHEMAS and every schema a contract loads into."""
    schemas = set(PATIENT_LEVEL_SCHEMAS)
    for contract in contracts.values():
        schemas |= {part.target_table.split(".")[0] for part in contract.table_contracts()}
    return schemas


def reads_patient_level(deliver, contracts: dict) -> list[str]:
    """The patient-level schemas a delivery reads (a mart's schema, or those a query names)."""
    schemas = patient_level_schemas(contracts)
    if deliver.mart:
        return [deliver.mart.split(".")[0]] if deliver.mart.split(".")[0] in schemas else []
    named = {m.lower() for m in re.findall(r'"?([A-Za-z_][A-Za-z0-9_]*)"?\s*\.\s*"?[A-Za-z_]', deliver.query)}
    return sorted(named & schemas)


def check_connector(connector: Connector, contracts: dict, file: str | None = None) -> None:
    """Check a declaration against the contracts: a pull's drop type exists, and patient-level data is declared."""
    where = file or f"{connector.name}.yml"
    if connector.pull is not None:
        contract = contracts.get(connector.pull.drop_type)
        if contract is None:
            raise ConnectorSpecError(f"{where}: pull.drop_type: unknown drop type {connector.pull.drop_type!r}; known: "
                                     f"{', '.join(sorted(contracts))}")
        reason = f"its drop type {contract.drop_type} has personal_data" if contract.personal_data else None
    else:
        schemas = reads_patient_level(connector.deliver, contracts)
        reason = f"it reads the patient-level schema(s) {', '.join(schemas)}" if schemas else None
    if reason and not connector.personal_data:
        raise ConnectorSpecError(f"{where}: personal_data: must be true: {reason}. A connector that moves "
                                 "patient-level data says so, and its runs are audited.")
