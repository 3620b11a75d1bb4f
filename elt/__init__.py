"""Moves the files that land in S3 into Postgres raw tables, exactly once, with every bad row accounted for."""
