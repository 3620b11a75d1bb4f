"""The API a user would otherwise write, as the NHS seed platform served its tables: FastAPI under uvicorn, one
endpoint per table, one query, a psycopg pool; no keys, no audit, no totals, no provenance, no ETags.

benchmarks/api.py runs it beside the real API (`uvicorn benchmarks.api_peer:app --workers N`, N as the API's
workers) and drives both with the same client. Each endpoint sends exactly the page query the API sends for the
same request: the declared columns of the same Resource, the same filter, order and limit + 1 rows (the API reads
one row more to know whether a next page exists), here with `select` written out the way a user would.

Plain `def` endpoints on a synchronous pool (FastAPI runs them in its thread pool): on this machine they served
more requests per second than `async def` endpoints on psycopg's AsyncConnectionPool (1,230 against 930 req/s in
one comparison), so the peer is the faster of the two.

    PEER_DATABASE_URL=postgresql://... uvicorn benchmarks.api_peer:app --workers 2
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import date

from fastapi import FastAPI, Query
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from backend.api.analytics import TRIAGE_TRENDS
from backend.api.clinical import MEDICAL_RECORDS
from backend.api.listing import Resource

pool = ConnectionPool(os.environ.get("PEER_DATABASE_URL", ""), min_size=4, max_size=10, open=False,
                      kwargs={"row_factory": dict_row, "autocommit": True})


@asynccontextmanager
async def lifespan(_app: FastAPI):
    pool.open(wait=True)
    yield
    pool.close()


app = FastAPI(lifespan=lifespan)


def page_sql(resource: Resource, date_column: str) -> str:
    """`select <the declared columns> from <mart> where <date> >= %s order by <default sort>, <key> limit %s`."""
    order = [resource.default_sort, *(k for k in resource.key if k != resource.default_sort)]
    return (f"select {', '.join(c.name for c in resource.columns)} from {resource.table} "  # noqa: S608 - declarations
            f"where {date_column} >= %s order by {', '.join(order)} limit %s")


MEDICAL_RECORDS_PAGE = page_sql(MEDICAL_RECORDS, "record_date")
TRIAGE_TRENDS_PAGE = page_sql(TRIAGE_TRENDS, "visit_date")


@app.get("/medical-records")
def medical_records(record_date_from: date, limit: int = Query(20, ge=1, le=500)):
    with pool.connection() as conn:
        rows = conn.execute(MEDICAL_RECORDS_PAGE, (record_date_from, limit + 1)).fetchall()
    return {"data": rows[:limit]}


@app.get("/triage-trends")
def triage_trends(visit_date_from: date, limit: int = Query(20, ge=1, le=500)):
    with pool.connection() as conn:
        rows = conn.execute(TRIAGE_TRENDS_PAGE, (visit_date_from, limit + 1)).fetchall()
    return {"data": rows[:limit]}
