"""Drop contracts: what lands where, what it must look like, and where it goes.

One YAML file per drop type lives beside this module. Adding a drop type is a new YAML file plus a dbt
staging model; the loader, the ledger and the raw table DDL are all driven from the contract.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Postgres types a contract column may declare. Values arrive as text and are checked with
# pg_input_is_valid() before the cast, so a bad value becomes a reject instead of a failed COPY.
ColumnType = Literal["text", "smallint", "integer", "bigint", "numeric", "double precision", "date", "timestamptz", "boolean"]
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class ContractError(ValueError):
    """A contract file is malformed. The message names the file and the field."""


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType = "text"
    required: bool = False
    allowed: list[str] | None = Field(None, description="Allowed values, compared case-insensitively.")
    pattern: str | None = Field(None, description="Postgres regular expression the value must match.")
    min: int | float | date | None = None
    max: int | float | date | None = None
    aliases: list[str] = Field(default_factory=list, description="Other header spellings of this column.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"column name {value!r} is not a lower-case SQL identifier")
        return value

    def header_names(self) -> set[str]:
        return {self.name, *(alias.strip().lower() for alias in self.aliases)}


class Landing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    key_pattern: str
    archive_prefix: str
    quarantine_prefix: str

    @field_validator("prefix")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_date_pattern: str | None = None


class Contract(BaseModel):
    """One drop type's contract, as declared in `elt/contracts/<drop_type>.yml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_type: str
    version: int
    description: str
    source_system: str
    format: Literal["csv"]
    landing: Landing
    period: Period = Period()
    target_table: str
    natural_key: list[str]
    max_reject_share: float = Field(0.1, ge=0, le=1)
    personal_data: list[str] = Field(default_factory=list)
    columns: list[Column]
    delimiter: str = ","
    null_values: list[str] = Field(default_factory=lambda: ["", "N/A", "NA", "-", "NULL"])

    @field_validator("target_table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 2 or not all(_IDENT.match(p) for p in parts):
            raise ValueError(f"target_table {value!r} must be schema.table in lower case")
        return value

    @model_validator(mode="after")
    def _keys_are_columns(self) -> Contract:
        names = {c.name for c in self.columns}
        for key in [*self.natural_key, *self.personal_data]:
            if key not in names:
                raise ValueError(f"{key!r} is named in natural_key/personal_data but is not a column")
        return self

    def matches(self, key: str) -> bool:
        """True when an object key belongs to this drop type (and is not archived or quarantined)."""
        if not key.startswith(self.landing.prefix):
            return False
        return re.search(self.landing.key_pattern, key[len(self.landing.prefix) :]) is not None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def load_contract(path: Path) -> Contract:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Contract.model_validate(raw)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name, which pydantic does not know
        raise ContractError(f"{path.name}: {exc}") from exc


def load_contracts(directory: Path) -> dict[str, Contract]:
    """All contracts in a directory, keyed by drop type. Raises ContractError on the first bad file."""
    contracts: dict[str, Contract] = {}
    for path in sorted(directory.glob("*.yml")):
        contract = load_contract(path)
        if contract.drop_type in contracts:
            raise ContractError(f"{path.name}: drop type {contract.drop_type!r} is declared twice")
        contracts[contract.drop_type] = contract
    return contracts
