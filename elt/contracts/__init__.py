"""Drop contracts: what lands where, what it must look like, and where it goes.

One YAML file per drop type lives beside this module. Adding a drop type is a new YAML file plus a dbt
staging model; the loader, the ledger, the raw table DDL and its typed `__valid` view are all driven from
the contract.

A contract declares one canonical column list. Senders that spell the same facts differently (the three
payer claim layouts) are `layouts`: each maps canonical columns to its own header names and says how its
values are written (`MM/DD/YYYY`, `$1,234.00`). The file's header picks its layout. Value formats are
rewrites to the canonical spelling (ISO dates, plain decimals) done before the type check, the same way
in SQL (the loader, the view) and in pandas (`elt validate`), both derived from the format: see REWRITES.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Postgres types a contract column may declare. Values arrive as text and are checked with
# pg_input_is_valid() before the cast, so a bad value becomes a reject instead of a failed COPY.
ColumnType = Literal["text", "smallint", "integer", "bigint", "numeric", "double precision", "date", "timestamptz", "boolean"]
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")

# How a sender writes values. A date format is its own picture: runs of Y, M and D are the year's, month's and day's
# digits, any other character is itself (01/31/2024 is MM/DD/YYYY). `currency` deletes CURRENCY_MARKS. Each
# format's rewrite to the canonical spelling that the type check expects is derived from that (Rewrite), in the
# two forms its users apply: a regex and its replacement (`elt validate`, pandas; FORMATS) and plain string
# operations (the loader's checks and the typed view, SQL), so that the two cannot disagree.
CANONICAL_DATE = "YYYY-MM-DD"
CANONICAL_DATE_MASK = re.sub(r"[YMD]", "0", CANONICAL_DATE)  # the shape of an ISO date, digits written as 0
CURRENCY_MARKS = "$,"  # $1,234.00 -> 1234.00 (a minus sign is kept; '(12.00)' stays invalid)


@dataclass(frozen=True)
class Rewrite:
    """One format's values made canonical. Either every `removed` character is deleted, or a value of the
    format's shape (`mask`: the value with each ASCII digit written as 0, as in 00/00/0000) has its `fields`
    ((start, length), counted from 0, in the canonical order) joined by `joiner`, and any other value is left as
    it is. `pattern`, `replacement` and `every` say the same as a regex substitution (the replacement's \\1
    back-references mean the same in Python's re.sub and Postgres's regexp_replace). SQL uses the plain form:
    Postgres's regexp_replace with back-references costs about 7 µs a value, translate and substr under 1
    (decision 0027)."""

    pattern: str
    replacement: str
    every: bool
    mask: str = ""
    fields: tuple[tuple[int, int], ...] = ()
    joiner: str = ""
    removed: str = ""


def _date_rewrite(picture: str) -> Rewrite:
    runs = {m.group()[0]: (m.start(), len(m.group())) for m in re.finditer(r"Y+|M+|D+", picture)}
    order = [letter for letter, _ in sorted(runs.items(), key=lambda item: item[1])]  # the picture's order
    literal = re.sub(r"[^YMD]", lambda m: re.escape(m.group()), picture)
    groups = re.sub(r"Y+|M+|D+", lambda m: f"([0-9]{{{len(m.group())}}})", literal)
    replacement = "-".join(f"\\{order.index(letter) + 1}" for letter in "YMD")
    return Rewrite(f"^{groups}$", replacement, False, mask=re.sub(r"[YMD]", "0", picture),
                   fields=tuple(runs[letter] for letter in "YMD"), joiner="-")


REWRITES: dict[str, Rewrite | None] = {
    CANONICAL_DATE: None,
    "MM/DD/YYYY": _date_rewrite("MM/DD/YYYY"),  # US payers: 01/31/2024
    "DD/MM/YYYY": _date_rewrite("DD/MM/YYYY"),
    "YYYYMMDD": _date_rewrite("YYYYMMDD"),  # mainframe extracts: 20240131
    "plain": None,  # canonical: 1234.00
    "currency": Rewrite(f"[{CURRENCY_MARKS}]", "", True, removed=CURRENCY_MARKS),
}
# The regex form, as (regex, replacement, replace every match): empty for a canonical format.
FORMATS: dict[str, tuple[str, str, bool]] = {
    name: (rewrite.pattern, rewrite.replacement, rewrite.every) if rewrite else ("", "", False)
    for name, rewrite in REWRITES.items()
}
DATE_FORMATS = frozenset({CANONICAL_DATE, "MM/DD/YYYY", "DD/MM/YYYY", "YYYYMMDD"})
NUMBER_FORMATS = frozenset({"plain", "currency"})
ValueFormat = Literal["YYYY-MM-DD", "MM/DD/YYYY", "DD/MM/YYYY", "YYYYMMDD", "plain", "currency"]
NUMERIC_TYPES = frozenset({"smallint", "integer", "bigint", "numeric", "double precision"})

# The API's roles, lowest first: each sees what the ones before it see (backend/auth.py). Declared here because a
# contract says which of them may drop its files, and the API imports the order from here.
Role = Literal["analyst", "clinician", "admin"]
ROLES: tuple[str, ...] = get_args(Role)


REVISION_NEEDS = ("revision_role needs files that supersede one another (period.supersede: true) and a period known "
                  "before the load (a key_date_pattern, or a reader whose files state their period: kh03)")


class ContractError(ValueError):
    """A contract file is malformed. The message names the file and the field."""


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType = "text"
    required: bool = False
    allowed: list[str] | None = Field(None, description="Allowed values, compared case-insensitively.")
    pattern: str | None = Field(None, description="Postgres regular expression the value must match.")
    min: int | float | date | Literal["today"] | None = Field(None, description="Lowest allowed value; 'today' for dates.")
    max: int | float | date | Literal["today"] | None = Field(None, description="Highest allowed value; 'today' for dates.")
    aliases: list[str] = Field(default_factory=list, description="Other header spellings of this column.")
    format: ValueFormat | None = Field(None, description="How senders write this column's values (see FORMATS).")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"column name {value!r} is not a lower-case SQL identifier")
        return value

    def header_names(self) -> set[str]:
        return {self.name, *(alias.strip().lower() for alias in self.aliases)}

    @model_validator(mode="after")
    def _bounds_and_format_fit_the_type(self) -> Column:
        if "today" in (self.min, self.max) and self.type != "date":
            raise ValueError(f"column {self.name!r}: min/max 'today' only applies to date columns")
        _check_format(self.name, self.type, self.format)
        return self


def _check_format(column: str, column_type: str, value_format: str | None) -> None:
    if value_format is None:
        return
    if value_format in DATE_FORMATS and column_type != "date":
        raise ValueError(f"column {column!r}: format {value_format!r} is for date columns, not {column_type}")
    if value_format in NUMBER_FORMATS and column_type not in NUMERIC_TYPES:
        raise ValueError(f"column {column!r}: format {value_format!r} is for numeric columns, not {column_type}")


class Layout(BaseModel):
    """One sender's spelling of the canonical columns: its header names and how it writes values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    columns: dict[str, str] = Field(description="canonical column -> the header the sender uses for it")
    formats: dict[str, ValueFormat] = Field(default_factory=dict, description="canonical column -> value format")
    ignored_columns: list[str] = Field(
        default_factory=list,
        description="Headers of a wide layout that are read past: their values are never stored, not even in raw "
                    "(a sender's names, SSNs, addresses). Named one by one, so that a header neither mapped nor "
                    "ignored still refuses the file.")
    optional: list[str] = Field(
        default_factory=list,
        description="Required columns of the contract this sender does not fill (not sent at all, or empty on "
                    "some rows): for its files they are not required.")

    @field_validator("name")
    @classmethod
    def _layout_identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"layout name {value!r} is not a lower-case identifier")
        return value

    def header_lookup(self) -> dict[str, str]:
        """File header (stripped, lower case) -> canonical column."""
        return {header.strip().lower(): column for column, header in self.columns.items()}

    def ignored_headers(self) -> frozenset[str]:
        """Ignored headers, stripped and in lower case, as a file's header is compared."""
        return frozenset(header.strip().lower() for header in self.ignored_columns)

    @model_validator(mode="after")
    def _ignored_are_not_mapped(self) -> Layout:
        both = self.ignored_headers() & {header.strip().lower() for header in self.columns.values()}
        if both:
            raise ValueError(f"layout {self.name!r} both maps and ignores {', '.join(sorted(both))}")
        if len(self.ignored_headers()) != len(self.ignored_columns):
            raise ValueError(f"layout {self.name!r} ignores a header twice")
        return self


def _qualified_table(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"target_table {value!r} must be schema.table in lower case")
    return value


class Check(BaseModel):
    """A rule between two columns of a row, e.g. allowed_amount <= billed_amount.

    It is only evaluated when both values are present and valid for their types; a row breaks it when the
    comparison is false. The reject names `column`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    column: str
    op: Literal["<", "<=", ">", ">=", "=", "<>"]
    other: str
    message: str


# What an upload's folder value may hold, whatever its own pattern says: never a slash or a dot-dot, so that a value
# cannot climb out of its place in the key.
SAFE_FIELD_VALUE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


class UploadFieldError(ValueError):
    """An upload field missing (`missing`) or not what it takes; the message names the field, never the value."""

    def __init__(self, field: str, message: str, *, missing: bool):
        super().__init__(message)
        self.field, self.missing = field, missing


class UploadField(BaseModel):
    """A value the uploader gives beside the file (a form field of POST /api/v1/drops), used in the key's folders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "month"] = Field("text", description="text, or month (YYYY-MM, the first day of it).")
    pattern: str | None = Field(None, description="For text: a regex the whole value must match (required).")
    description: str = ""

    @model_validator(mode="after")
    def _text_has_a_pattern(self) -> UploadField:
        if self.type == "text" and not self.pattern:
            raise ValueError("an upload field of type text needs a pattern its values must match")
        if self.pattern:
            re.compile(self.pattern)
        return self

    def parse(self, value: str) -> str | date:
        """The value as the key template uses it; ValueError saying what the field takes (never echoing it)."""
        if self.type == "month":
            match = re.fullmatch(r"(\d{4})-(\d{2})", value)
            if not match or not 1 <= int(match.group(2)) <= 12:
                raise ValueError("a month, written YYYY-MM (e.g. 2024-01)")
            return date(int(match.group(1)), int(match.group(2)), 1)
        if not (SAFE_FIELD_VALUE.match(value) and re.fullmatch(self.pattern or "", value)):
            raise ValueError(f"a value matching {self.pattern}")
        return value


class Landing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    key_pattern: str
    archive_prefix: str
    quarantine_prefix: str
    upload_folder: str | None = Field(
        None, description="The folders an upload is stored under below the prefix, built from `upload_fields`, e.g. "
                          "'provider={payer}/year={month:%Y}/month={month:%m}/'. None: the file's name alone.")
    upload_fields: dict[str, UploadField] = Field(default_factory=dict)

    @field_validator("prefix")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _folder_uses_every_field(self) -> Landing:
        named = {name for _, name, _, _ in string.Formatter().parse(self.upload_folder or "") if name is not None}
        if named != set(self.upload_fields):
            raise ValueError(f"upload_folder names the fields {sorted(named)} and upload_fields declares "
                             f"{sorted(self.upload_fields)}: they must be the same")
        if self.upload_folder is not None and not self.upload_folder.endswith("/"):
            raise ValueError("upload_folder must end with /")
        return self

    def upload_key(self, file_name: str, given: Mapping[str, object]) -> str:
        """Where an upload of `file_name` is stored: the upload fields' values in `given` (as sent: a form, a JSON
        object, `elt put --field`), parsed, fill the folders. UploadFieldError for a field missing or wrong."""
        values: dict[str, str | date] = {}
        for name, field in self.upload_fields.items():
            value = given.get(name)
            if not isinstance(value, str) or not value.strip():
                raise UploadFieldError(name, f"the field `{name}` is needed: {field.description or field.type}",
                                       missing=True)
            try:
                values[name] = field.parse(value.strip())
            except ValueError as exc:
                raise UploadFieldError(name, f"`{name}` must be {exc}", missing=False) from None
        return self.prefix + (self.upload_folder or "").format(**values) + file_name


class Period(BaseModel):
    """How a file's reporting period is found, and whether a newer file for a period replaces the older."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_date_pattern: str | None = Field(
        None, description="Regex on the key below the prefix: group 1 an ISO date (a day), or named groups "
                          "year and month (a calendar month). Without a match, the day the object landed.")
    supersede: bool = Field(
        True, description="True: new bytes for the same period replace the loaded file (daily snapshots). "
                          "False: every file adds rows (claims batches).")


class Spreadsheet(BaseModel):
    """Where a workbook's table is: which sheet, and how far down to look for its header row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sheet: str | None = Field(None, description="Sheet name; none means the first sheet.")
    header_search_rows: int = Field(
        30, ge=1, description="The header is the first of this many top rows that has the contract's columns "
                              "(title blocks and blank rows above it are skipped).")


class ExtraTable(BaseModel):
    """A further raw table that the same file fills (a workbook whose sheets are tables of their own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="What the table holds, e.g. the sheet it comes from.")
    target_table: str
    columns: list[Column]


class Contract(BaseModel):
    """One drop type's contract, as declared in `elt/contracts/<drop_type>.yml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_type: str
    version: int
    description: str
    source_system: str
    format: Literal["csv", "xlsx", "xls"]
    reader: str = Field(
        "table", description="Which reader reads the files (the registry in elt/readers/__init__.py, which "
                             "load_contracts asks whether it can read what this contract declares). table: one table "
                             "per file (a CSV, or a workbook sheet found by its header). kh03: NHS England's KH03 "
                             "workbook reader (elt/readers/kh03_reader.py), which checks the whole workbook and fills "
                             "target_table and extra_tables (.xlsx and .xls alike).")
    extra_tables: list[ExtraTable] = Field(
        default_factory=list, description="Further raw tables the same file fills (a reader that fills several: kh03).")
    spreadsheet: Spreadsheet | None = Field(
        None, description="For xlsx and xls: the sheet and header search (defaults: first sheet, top 30 rows).")
    layouts: list[Layout] = Field(default_factory=list, description="Sender layouts; none means the column names.")
    checks: list[Check] = Field(default_factory=list, description="Rules between two columns of a row.")
    landing: Landing
    period: Period = Period()
    target_table: str
    natural_key: list[str]
    max_reject_share: float = Field(0.1, ge=0, le=1)
    personal_data: list[str] = Field(default_factory=list)
    drop_role: Role = Field(
        "admin", description="The least API role that may drop a file of this type (POST /api/v1/drops and "
                             "/drops/from-url); admin when not declared. A drop type with personal_data needs "
                             "clinician or admin: analysts see de-identified marts only.")
    revision_role: Role | None = Field(
        None, description="The least API role that may drop a file for a period a loaded file reports on already "
                          "(it supersedes figures that are served, e.g. a revised KH03 quarter). None: drop_role.")
    columns: list[Column]
    delimiter: str = ","
    null_values: list[str] = Field(default_factory=lambda: ["", "N/A", "NA", "-", "NULL"])

    @field_validator("target_table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        return _qualified_table(value)

    @model_validator(mode="after")
    def _extra_tables_are_other_tables(self) -> Contract:
        for extra in self.extra_tables:
            _qualified_table(extra.target_table)
        tables = [self.target_table, *(extra.target_table for extra in self.extra_tables)]
        if len(set(tables)) != len(tables):
            raise ValueError("target_table and extra_tables must name different tables")
        return self

    def table_contracts(self) -> list[Contract]:
        """This contract, then one per extra table (same landing and rules, that table's columns): what the
        schema and the loader handle one table at a time."""
        return [self, *(
            self.model_copy(update={"target_table": extra.target_table, "columns": extra.columns, "extra_tables": [],
                                    "natural_key": [], "personal_data": [], "checks": [], "layouts": []})
            for extra in self.extra_tables)]

    @model_validator(mode="after")
    def _spreadsheet_settings_fit_the_format(self) -> Contract:
        if self.format == "csv" and self.spreadsheet is not None:
            raise ValueError("spreadsheet settings are for xlsx and xls contracts, not csv")
        return self

    @model_validator(mode="after")
    def _drop_roles_fit_the_data(self) -> Contract:
        if self.personal_data and ROLES.index(self.drop_role) < ROLES.index("clinician"):
            raise ValueError(f"drop_role {self.drop_role!r}: a drop type with personal_data "
                             f"({', '.join(self.personal_data)}) may be dropped by clinician or admin only")
        if self.revision_role is not None:
            if ROLES.index(self.revision_role) < ROLES.index(self.drop_role):
                raise ValueError(f"revision_role {self.revision_role!r} is below drop_role {self.drop_role!r}")
            if not self.period.supersede:  # the period known before the load: elt.readers.check_contract
                raise ValueError(REVISION_NEEDS)
        return self

    def role_to_drop(self, replaces_loaded_period: bool) -> str:
        """The least role that may drop this file: revision_role when it would replace a loaded period's file."""
        return (self.revision_role or self.drop_role) if replaces_loaded_period else self.drop_role

    @property
    def sheet_settings(self) -> Spreadsheet:
        return self.spreadsheet or Spreadsheet()

    @model_validator(mode="after")
    def _keys_are_columns(self) -> Contract:
        names = {c.name for c in self.columns}
        for key in [*self.natural_key, *self.personal_data]:
            if key not in names:
                raise ValueError(f"{key!r} is named in natural_key/personal_data but is not a column")
        for layout in self.layouts:
            self._check_layout(layout, names)
        if len({layout.name for layout in self.layouts}) != len(self.layouts):
            raise ValueError("layout names must be unique")
        for check in self.checks:
            for column in (check.column, check.other):
                if column not in names:
                    raise ValueError(f"check {check.rule!r} names {column!r}, which is not a column")
        return self

    def _check_layout(self, layout: Layout, names: set[str]) -> None:
        types = {c.name: c.type for c in self.columns}
        for column in [*layout.columns, *layout.formats]:
            if column not in names:
                raise ValueError(f"layout {layout.name!r} names {column!r}, which is not a column")
        for column, value_format in layout.formats.items():
            _check_format(column, types[column], value_format)
        not_required = [c for c in layout.optional if c not in names or not self.column(c).required]
        if not_required:
            raise ValueError(f"layout {layout.name!r} lists {', '.join(not_required)} as optional, which the "
                             "contract does not require")
        missing_required = [c for c in self.required_columns(layout) if c not in layout.columns]
        if missing_required:
            raise ValueError(f"layout {layout.name!r} has no header for required {', '.join(missing_required)}")
        if len({h.strip().lower() for h in layout.columns.values()}) != len(layout.columns):
            raise ValueError(f"layout {layout.name!r} uses one header for two columns")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def required_columns(self, layout: Layout) -> list[str]:
        """The columns a file in `layout` must fill: the contract's required ones but those the layout lists as
        optional (a sender that never sends them)."""
        return [c.name for c in self.columns if c.required and c.name not in layout.optional]

    def resolved_layouts(self) -> list[Layout]:
        """The declared layouts, or one layout named 'default' made of the column names and aliases."""
        if self.layouts:
            return list(self.layouts)
        return [Layout(name="default", columns={c.name: c.name for c in self.columns},
                       formats={c.name: c.format for c in self.columns if c.format})]

    def layout(self, name: str) -> Layout:
        for layout in self.resolved_layouts():
            if layout.name == name:
                return layout
        raise KeyError(f"{self.drop_type} has no layout {name!r}")

    def header_lookup(self, layout: Layout) -> dict[str, str]:
        """File header (stripped, lower case) -> canonical column, for one layout (aliases included)."""
        if self.layouts:
            return layout.header_lookup()
        return {name: column.name for column in self.columns for name in column.header_names()}

    def value_format(self, layout: Layout, column: Column) -> str | None:
        return layout.formats.get(column.name, column.format)

    def rewrite(self, layout: Layout, column: Column) -> tuple[str, str, bool] | None:
        """(regex, replacement, every match) turning this layout's spelling of the column canonical; None when
        it is written canonically already. Applied the same way by the loader (SQL) and `elt validate`."""
        pattern, replacement, every = FORMATS.get(self.value_format(layout, column) or "", ("", "", False))
        return (pattern, replacement, every) if pattern else None

    def value_rewrite(self, layout: Layout, column: Column) -> Rewrite | None:
        """The same rewrite as `rewrite`, with its plain string form (SQL); None when the spelling is canonical."""
        return REWRITES.get(self.value_format(layout, column) or "")

    def type_message(self, layout: Layout, column: Column) -> str:
        """The reject message for a value that is not of the column's type, naming the layout's format."""
        value_format = self.value_format(layout, column)
        shown = f" written as {value_format}" if value_format and value_format != "plain" else ""
        return f"{column.name} is not a valid {column.type}{shown}"

    def period_in_key(self, name: str) -> tuple[date, date] | None:
        """The period `period.key_date_pattern` finds in a key below the landing prefix (or in a local file's
        path, for `elt validate`): a day, or a calendar month, as (first day, last day). None when the contract
        has no pattern or the name does not match it. Raises ValueError when the date it finds does not exist."""
        pattern = self.period.key_date_pattern
        match = re.search(pattern, name) if pattern else None
        if match is None:
            return None
        named = match.groupdict()
        try:
            if named.get("year") and named.get("month"):
                year, month = int(named["year"]), int(named["month"])
                return date(year, month, 1), date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
            day = date.fromisoformat(match.group(1))
        except ValueError:
            raise ValueError(f"the period {match.group(0)!r} is not a real date") from None
        return day, day

    def matches(self, key: str) -> bool:
        """True when an object key belongs to this drop type (and is not archived or quarantined)."""
        if not key.startswith(self.landing.prefix):
            return False
        return re.search(self.landing.key_pattern, key[len(self.landing.prefix) :]) is not None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# libyaml's safe loader when PyYAML was built with it: the same documents, a tenth of the pure-Python parser's
# time (about 35 ms for every contract, paid by each file's ingest, which reads them all).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_contract(path: Path) -> Contract:
    """One contract file, checked by pydantic and by its reader (elt.readers.check_contract: imported here, since
    the readers import the contracts). Raises ContractError naming the file."""
    from elt.readers import check_contract

    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
        contract = Contract.model_validate(raw)
        check_contract(contract)
        return contract
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
