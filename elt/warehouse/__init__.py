"""Postgres I/O: schema, the file ledger, set-based validation and COPY loads."""
