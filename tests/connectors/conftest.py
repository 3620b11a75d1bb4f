"""Fixtures of the connector tests. The remote destinations' servers live in servers.py."""

from tests.connectors.servers import http_receiver, sftp_server, silent_port  # noqa: F401
