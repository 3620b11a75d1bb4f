"""BI logins of people and tools (`elt bi-user create|list|drop`): one Postgres login each, a member of `bi_reader`
only, so a Metabase, a Power BI gateway or an analyst's Tableau can be told apart in `pg_stat_activity` and
dropped alone, without sharing the project's `health_bi` (elt/warehouse/roles.py, decision 0008).

The password is generated here, sent to the server only as a SCRAM verifier computed on this side (as the
project's logins' are: it never appears in a statement, `pg_stat_activity` or a server log), and returned once to
be printed; it is stored nowhere else. Decision 0034.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import errors, sql

from elt.warehouse.roles import BI_READER, LOGIN_OPTIONS, LOGINS, ROLES, _verifier

# Lower case only: an unquoted identifier in SQL, and what every BI tool's login box sends as typed. Postgres
# keeps 63 bytes of a name; `pg_` names are the server's own.
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
RESERVED = {login.name for login in LOGINS} | set(ROLES) | {"postgres", "public"}
SCHEMA = "analytics"  # what bi_reader may read (roles.py); the schema a BI tool is pointed at
PASSWORD_BYTES = 24  # token_urlsafe: 32 characters from [A-Za-z0-9_-], nothing a URL or a login box must escape


class BiUserError(Exception):
    """A request `elt bi-user` refuses; the message says why and what to do instead."""


@dataclass(frozen=True)
class BiLogin:
    """A new BI login and where it connects: `password` is shown once and kept nowhere."""

    name: str
    password: str
    host: str
    port: str
    database: str
    sslmode: str | None

    def url(self) -> str:
        """libpq URL of the login (psql, Superset's SQLAlchemy URI after `postgresql+psycopg2://`)."""
        query = f"?{urlencode({'sslmode': self.sslmode})}" if self.sslmode else ""
        return (f"postgresql://{quote(self.name, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
                f"{quote(self.database, safe='')}{query}")

    def fields(self) -> list[tuple[str, str]]:
        """The same, field by field, as the BI tools' connection forms ask for it."""
        return [("host", self.host), ("port", self.port), ("database", self.database), ("schema", SCHEMA),
                ("user", self.name), ("password", self.password),
                ("ssl", self._ssl())]

    def _ssl(self) -> str:
        if not self.sslmode:
            return "off (the warehouse URL asks for none: the local stack's loopback server has no TLS)"
        if self.sslmode.startswith("verify"):
            return (f"sslmode={self.sslmode}: give the tool the server's CA certificate (RDS: the AWS global bundle) "
                    "and require SSL")
        return f"sslmode={self.sslmode}: require SSL in the tool"


def check_name(name: str) -> str:
    """`name` if it may be a BI login's; BiUserError saying why not."""
    if not NAME.fullmatch(name):
        raise BiUserError("a BI login's name is 1 to 63 characters: lower-case letters, digits and _, not starting "
                          "with a digit (e.g. metabase, powerbi_finance)")
    if name in RESERVED or name.startswith("pg_"):
        raise BiUserError(f"{name!r} is a name the warehouse itself uses; choose another")
    return name


def where(database_url: str) -> dict[str, str | None]:
    """Host, port, database and sslmode of the warehouse URL, without its login or any other parameter."""
    parts = urlsplit(database_url)
    return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port or 5432),
            "database": parts.path.lstrip("/") or "postgres",
            "sslmode": dict(parse_qsl(parts.query)).get("sslmode")}


def create(conn: psycopg.Connection, name: str, database_url: str) -> BiLogin:
    """Create login `name` in `bi_reader` only, with a new password; BiUserError when it cannot be."""
    check_name(name)
    if conn.execute("select 1 from pg_roles where rolname = %s", (BI_READER,)).fetchone() is None:
        raise BiUserError(f"the group role {BI_READER} does not exist yet: run `elt init-db` (or start the stack) first")
    if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
        raise BiUserError(f"a login or role named {name!r} already exists; drop it first (`bi-user drop {name}`) or "
                          "choose another name")
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("create role {} " + LOGIN_OPTIONS + " password {} in role {}").format(
                sql.Identifier(name), sql.Literal(_verifier(conn, name, password)), sql.Identifier(BI_READER)))
    except errors.DuplicateObject:
        raise BiUserError(f"a login or role named {name!r} already exists") from None
    except errors.InsufficientPrivilege:
        raise BiUserError("this database user may not create logins (it needs CREATEROLE); ask a database admin "
                          "to run `bi-user create` or to grant it") from None
    return BiLogin(name=name, password=password, **where(database_url))


def _members(conn: psycopg.Connection) -> list[tuple[str, bool, list[str]]]:
    """Every role in bi_reader: (name, can log in, all its groups)."""
    return conn.execute(
        "select member.rolname, member.rolcanlogin, array_agg(distinct every_group.rolname order by every_group.rolname) "
        "from pg_auth_members as membership "
        "join pg_roles as member on member.oid = membership.member "
        "join pg_auth_members as every_membership on every_membership.member = member.oid "
        "join pg_roles as every_group on every_group.oid = every_membership.roleid "
        "where membership.roleid = (select oid from pg_roles where rolname = %s) "
        "group by member.rolname, member.rolcanlogin order by member.rolname", (BI_READER,)).fetchall()


def list_logins(conn: psycopg.Connection) -> list[dict[str, str]]:
    """The logins that read as bi_reader, and who manages each."""
    project = {login.name for login in LOGINS}
    return [{"login": name, "can_log_in": "yes" if can_login else "no", "groups": ", ".join(groups),
             "managed_by": "the project (BI_DB_PASSWORD)" if name in project
             else "bi-user" if groups == [BI_READER] else "a database admin (other groups too)"}
            for name, can_login, groups in _members(conn)]


def drop(conn: psycopg.Connection, name: str) -> None:
    """Drop a login `bi-user create` made: a member of bi_reader and of nothing else, not the project's."""
    check_name(name)
    member = next((groups for member, _, groups in _members(conn) if member == name), None)
    if member is None:
        raise BiUserError(f"no BI login named {name!r} (`bi-user list` shows them)")
    if member != [BI_READER]:
        raise BiUserError(f"{name!r} is also a member of {', '.join(g for g in member if g != BI_READER)}: it was not "
                          "made by bi-user; a database admin drops it")
    try:
        with conn.transaction():
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
    except errors.DependentObjectsStillExist:
        raise BiUserError(f"{name!r} owns objects or holds grants of its own; a database admin must reassign or "
                          "revoke them (`reassign owned by ...; drop owned by ...`) before it can be dropped") from None
    except errors.InsufficientPrivilege:
        raise BiUserError("this database user may not drop logins (it needs CREATEROLE)") from None
