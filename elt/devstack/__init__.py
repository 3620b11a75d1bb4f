"""The local stack behind ./start.sh and the test suite: embedded Postgres and an S3 endpoint on loopback.

Nothing here is used in production; deployments point DATABASE_URL and S3 at real servers.
"""
