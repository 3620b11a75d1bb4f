"""The audit trail of patient-level reads, `ops.api_audit`: one statement for every reader of personal data.

The API writes a row before it serves a patient-level page (backend/auth.py); a connector that moves patient-level
data writes one before it reads the rows (elt/connectors/engine.py), with no key: role `connector`, endpoint
`connector:<name>`, and the run's key and trigger as its parameters.
"""

from __future__ import annotations

import json

import psycopg

AUDIT_SQL = ("insert into ops.api_audit (key_id, role, method, endpoint, params, remote_addr) "
             "values (%(key_id)s, %(role)s, %(method)s, %(endpoint)s, cast(%(params)s as jsonb), %(remote_addr)s)")


def audit_connector_run(conn: psycopg.Connection, connector: str, direction: str, params: dict) -> None:
    """Write a connector run's audit row (committed with `conn`'s transaction, or at once in autocommit)."""
    conn.execute(AUDIT_SQL, {"key_id": None, "role": "connector", "method": direction.upper(),
                             "endpoint": f"connector:{connector}", "params": json.dumps(params, default=str),
                             "remote_addr": None})
