"""Every page the API serves from a mart reads two things by index, whatever the mart's size: `max(built_at)` (its
`as_of`, in every answer's meta: backend/api/listing.py) and the keyset page itself (`order by <sort column>, <key
columns>`, `where (those) > (the cursor's)`). Checked on the warehouse dbt built, from the indexes Postgres holds, so
that a mart added to the API without them (a sequential scan per request, growing with the mart) fails here."""

from __future__ import annotations

import pytest

from backend.api.catalogue import declared_catalogue

RESOURCES = {e.resource.name: e.resource for e in declared_catalogue().endpoints if e.resource.built_by_dbt}


def index_columns(wdb, table: str) -> list[list[str]]:
    """The column lists of the table's indexes (primary keys and unique constraints included), in index order."""
    return [row[0] for row in wdb.execute(
        "select array(select attribute.attname from unnest(ix.indkey) with ordinality as k(attnum, position) "
        "join pg_attribute as attribute on attribute.attrelid = ix.indrelid and attribute.attnum = k.attnum "
        "order by k.position) from pg_index as ix where ix.indrelid = %s::regclass", (table,))]


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_the_as_of_and_the_default_keyset_page_of_every_mart_read_an_index(wdb, name):
    resource = RESOURCES[name]
    indexes = index_columns(wdb, resource.table)
    assert any(columns[:1] == ["built_at"] for columns in indexes), f"{resource.table}: no index on built_at"
    sort = resource.default_sort.lstrip("-")
    order = [sort, *(k for k in resource.key if k != sort)]
    assert any(columns[:len(order)] == order for columns in indexes), (
        f"{resource.table}: no index on ({', '.join(order)}), the order of its pages")
