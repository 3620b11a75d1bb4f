"""The API's list endpoints, derived from the source families (elt/families/*.yml, `api:`), so that a family's routes,
its OpenAPI paths, /ready's marts and the rate limits come from one declaration (docs/decisions/0019).

A family names the modules that declare its resources (`api.modules`); each module exports `RESOURCES`, a tuple of
`backend.api.listing.Resource`, each with its `path` below /api/v1 (starting with the family's `api.prefix`).
`build_catalogue(families)` imports them, checks them, and gives:

* `endpoints`: every list endpoint's full path (OpenAPI's form, `{org_code}`) and resource, the families' in the order
  of their files, modules and RESOURCES, then the platform's own (the file ledger, backend/api/operations.py): what
  /openapi.json documents, /ready checks and the tests walk;
* `blueprints`: one per family (and one for the platform), with a view per resource that serves it (`serve`), a
  value from the path taken through its column's `from_path`: what `create_app` registers and rate-limits;
* `not_built_hints`: what the modules say to do when their marts are not built yet (backend/errors.py).

A resource without `drop_types` is built from its family's. A module that cannot be imported, has no RESOURCES, or
declares a path outside its family's prefix (or inside another family's), one that another resource already has, a
`{value}` that is not a column with a max_length, a JSON column that filters or sorts, or a required filter that is not
an "eq" one, is a CatalogueError naming the family and the module: the API does not start on a catalogue it cannot
trust. A view with path values checks the caller's role before it looks at them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from flask import Blueprint

from backend.api.listing import Column, Resource, serve
from backend.auth import require
from elt.families import Family, declared_families

API_ROOT = "/api/v1"
PATH = re.compile(r"^(/([a-z0-9][a-z0-9-]*|\{[a-z][a-z0-9_]*\}))+$")  # below API_ROOT: lower-case segments, {values}
VALUE = re.compile(r"{(\w+)}")


class CatalogueError(ValueError):
    """A family's API declaration cannot be served. The message names the family and the module."""


@dataclass(frozen=True)
class Group:
    """Resources served together under one blueprint: a family's, or the platform's own."""
    name: str                     # the family (or "platform")
    prefix: str | None
    modules: tuple[str, ...]
    drop_types: tuple[str, ...]   # the default of its resources
    blueprint: str = ""           # its blueprint's name (a family's: api_<family>)

    @classmethod
    def of(cls, family: Family) -> Group:
        return cls(family.family, family.api.prefix, family.api.modules, family.drop_types, f"api_{family.family}")

    def where(self, module: str) -> str:
        return f"family {self.name}: api.modules: {module}"


# The warehouse's own list, in no family: the file ledger (admins only).
PLATFORM = Group("platform", None, ("backend.api.operations",), (), "operations")


@dataclass(frozen=True)
class Endpoint:
    path: str            # the full path, OpenAPI's form: /api/v1/beds/organisations/{org_code}/history
    resource: Resource
    group: str           # the family that declares it, or "platform"


@dataclass(frozen=True)
class Catalogue:
    endpoints: tuple[Endpoint, ...]
    blueprints: tuple[Blueprint, ...]
    not_built_hints: tuple[str, ...] = ()

    def served_marts(self) -> list[str]:
        """The marts dbt builds that the API reads (/ready checks each)."""
        return sorted({e.resource.table for e in self.endpoints if e.resource.built_by_dbt})

    def on_arrival_marts(self) -> set[str]:
        """Marts rebuilt when their drop arrives (quarterly), not nightly: reported by /ready, never held against it."""
        return {e.resource.table for e in self.endpoints if e.resource.refreshed == "on_arrival"}


def build_catalogue(families: dict[str, Family]) -> Catalogue:
    """The list endpoints of every family's `api.modules`, then the platform's; raises CatalogueError."""
    groups = [Group.of(family) for family in families.values()] + [PLATFORM]
    endpoints: list[Endpoint] = []
    blueprints: list[Blueprint] = []
    hints: list[str] = []
    taken: dict[tuple[str, str], str] = {}  # (what, its key) -> where it was declared: _claim
    for group in groups:
        others = [g.prefix for g in groups if g.prefix is not None and g is not group]
        blueprint = Blueprint(group.blueprint, __name__, url_prefix=API_ROOT)
        for module_name in group.modules:
            module = _import(group, module_name)
            hints += [module.NOT_BUILT_HINT] if hasattr(module, "NOT_BUILT_HINT") else []
            for resource in _resources(group, module_name, module):
                where = f"{group.where(module_name)}: {resource.name}"
                _check_path(where, resource, group.prefix, others)
                _check_columns(where, resource)
                _claim(taken, where, resource)
                resource = resource if resource.drop_types else replace(resource, drop_types=group.drop_types)
                _add_view(blueprint, resource)
                endpoints.append(Endpoint(API_ROOT + resource.path, resource, group.name))
        if group.modules:
            blueprints.append(blueprint)
    return Catalogue(tuple(endpoints), tuple(blueprints), tuple(hints))


def declared_catalogue(settings=None) -> Catalogue:
    """The catalogue of the families of `settings.families_dir` (an elt.config.Settings; default: the environment's,
    i.e. the repository's elt/families): what `create_app` serves, and what the tests walk."""
    from elt.config import get_settings

    return build_catalogue(declared_families(settings or get_settings()))


def _import(group: Group, name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CatalogueError(f"{group.where(name)}: cannot be imported ({exc})") from exc


def _resources(group: Group, name: str, module) -> tuple[Resource, ...]:
    resources = getattr(module, "RESOURCES", None)
    if not isinstance(resources, tuple) or not all(isinstance(r, Resource) for r in resources):
        raise CatalogueError(f"{group.where(name)}: exports no RESOURCES (a tuple of backend.api.listing.Resource)")
    return resources


def _check_path(where: str, resource: Resource, prefix: str | None, others: Iterable[str]) -> None:
    path = resource.path
    if not PATH.fullmatch(path):
        raise CatalogueError(f"{where}: path {path!r} is not a path below {API_ROOT} (lower-case segments and "
                             "{column} values, e.g. /beds/organisations/{org_code}/history)")
    if prefix is not None and not _under(path, prefix):
        raise CatalogueError(f"{where}: path {path} is outside the family's api.prefix {prefix}")
    inside = [other for other in others if _under(path, other)]
    if inside:
        raise CatalogueError(f"{where}: path {path} is under another family's api.prefix {inside[0]}")
    for name in VALUE.findall(path):
        column = next((c for c in resource.columns if c.name == name), None)
        if column is None or column.max_length is None:
            raise CatalogueError(f"{where}: path value {{{name}}} must be a column of the resource with a max_length "
                                 "(the longest value the path may carry)")


def _check_columns(where: str, resource: Resource) -> None:
    """A JSON column is served as it is, never compared: no filter or sort on it; a required filter is an "eq" one."""
    for column in resource.columns:
        if column.type == "json" and (column.filter or column.sortable):
            raise CatalogueError(f"{where}: column {column.name} is JSON: it cannot filter or sort")
        if column.required and column.filter != "eq":
            raise CatalogueError(f"{where}: column {column.name} is a required filter: declare filter=\"eq\"")


def _claim(taken: dict[tuple[str, str], str], where: str, resource: Resource) -> None:
    """A route and an operation of its own: two paths that differ only in their values' names would be one route, and
    two names that differ only in `-` and `_` one view and one OpenAPI operation."""
    for what, key in (("path", VALUE.sub("{}", resource.path)), ("name", _endpoint(resource))):
        if (what, key) in taken:
            shown = resource.path if what == "path" else resource.name
            raise CatalogueError(f"{where}: {what} {shown} is already declared by {taken[what, key]}")
        taken[what, key] = where


def _endpoint(resource: Resource) -> str:
    return "list_" + resource.name.replace("-", "_")  # as /openapi.json's operationId


def _under(path: str, prefix: str) -> bool:
    return (path + "/").startswith(prefix + "/")


def _add_view(blueprint: Blueprint, resource: Resource) -> None:
    """GET <path>: the resource's list, its path values (if any) as fixed filters."""
    blueprint.add_url_rule(VALUE.sub(r"<\1>", resource.path), _endpoint(resource), _view(resource), methods=["GET"])


def _view(resource: Resource) -> Callable:
    values: tuple[Column, ...] = tuple(resource.column(name) for name in VALUE.findall(resource.path))
    if not values:
        return lambda: serve(resource)

    def view(**path):
        require(resource.role)  # who may ask comes before what was asked: a bad path value is no answer to a stranger
        return serve(resource, fixed={column.name: column.from_path(path[column.name]) for column in values})

    return view
