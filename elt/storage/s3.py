"""The landing bucket: list, stream, put and move objects. No parsing and no SQL here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError

from elt.config import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
SINGLE_COPY_LIMIT = 5 * 1024**3  # S3's largest CopyObject


class ObjectChanged(Exception):
    """The object under a key is no longer the version (ETag) asked for: it was uploaded again."""


class ObjectExists(Exception):
    """Something is already stored under the key (a put that must not overwrite)."""


def _precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in {"PreconditionFailed", "412"} or exc.response.get(
        "ResponseMetadata", {}).get("HTTPStatusCode") == 412


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime


class ObjectStore:
    """One bucket of an S3-compatible store, configured from Settings."""

    def __init__(self, settings: Settings, *, bucket: str | None = None):
        import boto3  # here, not at the top: a quarter of a second that importing the pipeline need not pay
        from botocore.config import Config

        self.bucket = bucket or settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_default_region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("created bucket %s", self.bucket)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under a prefix, following continuation tokens (1,000 keys a page)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield StoredObject(
                    bucket=self.bucket,
                    key=item["Key"],
                    etag=item["ETag"].strip('"'),
                    size=item["Size"],
                    last_modified=item["LastModified"],
                )

    def head(self, key: str) -> StoredObject | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return StoredObject(self.bucket, key, meta["ETag"].strip('"'), meta["ContentLength"], meta["LastModified"])

    def _get(self, key: str, if_match: str | None):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **({"IfMatch": if_match} if if_match else {}))
        except ClientError as exc:
            if if_match and _precondition_failed(exc):
                raise ObjectChanged(f"{key} is no longer version {if_match}: it was uploaded again") from exc
            raise

    def iter_bytes(self, key: str, *, chunk_size: int = CHUNK_BYTES, if_match: str | None = None) -> Iterator[bytes]:
        """Stream an object's bytes without holding the whole file in memory. With `if_match`, only while the
        key still holds that version (ETag); else ObjectChanged."""
        body = self._get(key, if_match)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def read(self, key: str, *, if_match: str | None = None) -> bytes:
        return self._get(key, if_match)["Body"].read()

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
            only_if_absent: bool = False) -> None:
        """Store `data` at `key`. With `only_if_absent`, S3 itself refuses when an object is there already
        (If-None-Match: *, atomic against a concurrent put): ObjectExists."""
        condition = {"IfNoneMatch": "*"} if only_if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **condition)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if only_if_absent and (_precondition_failed(exc) or code == "ConditionalRequestConflict"):
                raise ObjectExists(key) from exc
            raise

    def copy(self, source_key: str, target_key: str, *, if_match: str | None = None) -> None:
        """Server-side copy. With `if_match`, only while the source is still that version (ETag); else
        ClientError PreconditionFailed.

        One CopyObject up to S3's 5 GB limit (about 3x faster than a multipart copy of the same object);
        the managed multipart copy beyond it."""
        source = self.head(source_key)
        condition = {"CopySourceIfMatch": if_match} if if_match else {}
        if source is not None and source.size < SINGLE_COPY_LIMIT:
            self.client.copy_object(Bucket=self.bucket, Key=target_key,
                                    CopySource={"Bucket": self.bucket, "Key": source_key}, **condition)
        else:
            self.client.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket, target_key,
                             ExtraArgs=condition or None)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def move(self, source_key: str, target_key: str, *, if_match: str | None = None) -> None:
        """Copy then delete: S3 has no rename. A crash in between leaves both, which a re-run tidies."""
        self.copy(source_key, target_key, if_match=if_match)
        self.delete(source_key)

    def exists(self, key: str) -> bool:
        return self.head(key) is not None
