"""Destination `s3`: one object per run in a bucket of any S3-compatible store, as CSV or Parquet.

The key says what, as of when and which run: `<prefix><mart>/as_of=<as_of>/<run_key>.<ext>` (`query` for a query's
result), so a re-run of the same delivery (same run_key) lands on the same key and never makes a second copy. A reader
never sees a half-written object: the bytes go up as one multipart upload, which S3 makes visible only when it is
completed, in one step, after the last batch (an upload that fails is aborted, leaving nothing); a delivery smaller
than one part is one PutObject, atomic too.

    to: {kind: s3, bucket: exports, prefix: commissioner/, format: parquet,
         credentials: {env: {endpoint_url: S3_ENDPOINT_URL}}}

`credentials` (optional: else boto3's own chain, AWS_* variables or an instance role) may give `endpoint_url`,
`region`, and the keys as `login`/`password` (an Airflow aws connection) or `aws_access_key_id`/`aws_secret_access_key`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from elt.connectors.base import (
    ConnectorError,
    Credentials,
    Delivered,
    DestinationRefused,
    DestinationUnavailable,
    RunContext,
)
from elt.connectors.formats import (
    CONTENT_TYPES,
    EXTENSIONS,
    CountingSink,
    WritesOneFile,
    count_rows,
    file_digest,
)

PART_BYTES = 16 * 1024 * 1024  # S3 parts are at least 5 MiB (but the last); 16 MiB: ~640 parts for 10 GB
IN_FLIGHT = 2  # parts being sent while the next one fills: memory is at most (IN_FLIGHT + 1) x PART_BYTES
REFUSED_CODES = {"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                 "InvalidBucketName", "KeyTooLongError", "EntityTooLarge", "403", "404", "400"}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("", description="Put before every key; end it with / for a folder.")
    format: Literal["csv", "parquet"] = "parquet"
    credentials: Credentials | None = None


def open(options: Options) -> S3Destination:  # noqa: A001 - the contract's name (base.py)
    return S3Destination(options)


class S3Destination(WritesOneFile):
    def __init__(self, options: Options):
        self.options = options
        import boto3  # here, not at the top: scanning the kinds (spec.kinds) should not load every kind's client
        from botocore.config import Config

        secrets = options.credentials.resolve() if options.credentials else {}
        self.client = boto3.client(
            "s3", endpoint_url=secrets.get("endpoint_url"), region_name=secrets.get("region"),
            aws_access_key_id=secrets.get("aws_access_key_id") or secrets.get("login"),
            aws_secret_access_key=secrets.get("aws_secret_access_key") or secrets.get("password"),
            # no CRC32 of every part (botocore's default since 1.36): it cost a tenth of a CSV export's time (benchmarks/
            # README.md); the parts are signed (SigV4) over http, sent over TLS otherwise, and the run records a SHA-256
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required"))

    def key(self, ctx: RunContext) -> str:
        as_of = f"{ctx.as_of:%Y-%m-%dT%H%M%S.%fZ}" if ctx.as_of else "none"
        return f"{self.options.prefix}{ctx.mart or 'query'}/as_of={as_of}/{ctx.run_key}.{EXTENSIONS[self.options.format]}"

    def location(self, ctx: RunContext) -> str:
        return f"s3://{self.options.bucket}/{self.key(ctx)}"

    def delivered(self, ctx: RunContext) -> Delivered | None:
        """The object of ctx.run_key, if a run completed it: read back for its rows, size and checksum."""
        from botocore.exceptions import ClientError

        key = self.key(ctx)
        with _translated(ctx, self.location(ctx)):
            try:
                self.client.head_object(Bucket=self.options.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            with tempfile.NamedTemporaryFile(suffix="." + EXTENSIONS[self.options.format]) as copy:
                self.client.download_fileobj(self.options.bucket, key, copy)
                copy.flush()
                size, sha = file_digest(copy.name)
                rows = count_rows(copy.name, self.options.format)
        return Delivered(self.location(ctx), rows, size, sha, {"found": "object already in the bucket"})

    def _deliver(self, ctx: RunContext, write: Callable[[CountingSink], int]) -> Delivered:
        """`write` puts the file into a sink and returns its rows: here an upload, or nothing for a dry run."""
        if ctx.dry_run:
            sink = CountingSink()
            rows = write(sink)
            return Delivered(self.location(ctx), rows, sink.bytes, sink.sha256, {"dry_run": True})
        upload = _Upload(self.client, self.options.bucket, self.key(ctx), CONTENT_TYPES[self.options.format])
        with _translated(ctx, self.location(ctx)):
            try:
                sink = CountingSink(upload.write)
                rows = write(sink)
                upload.complete()
            except BaseException:
                upload.abort()
                raise
        return Delivered(self.location(ctx), rows, sink.bytes, sink.sha256, {"parts": upload.parts_sent})


class _Upload:
    """One object, sent in parts of PART_BYTES as they fill, each by a background thread while the next part is being
    written (at most IN_FLIGHT parts held at once): visible only once `complete` returns."""

    def __init__(self, client, bucket: str, key: str, content_type: str):
        self.client, self.bucket, self.key, self.content_type = client, bucket, key, content_type
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.sending: list[tuple[int, Future]] = []
        self.pool: ThreadPoolExecutor | None = None

    @property
    def parts_sent(self) -> int:
        return max(len(self.sending), 1)

    def write(self, data) -> None:
        self.buffer += data
        if len(self.buffer) >= PART_BYTES:
            self._send_part()

    def _send_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type)["UploadId"]
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-part")
        unfinished = [future for _, future in self.sending if not future.done()]
        if len(unfinished) >= IN_FLIGHT:
            unfinished[0].result()  # memory stays at IN_FLIGHT parts; a failed part raises here
        number, body = len(self.sending) + 1, self.buffer  # handed over, not copied: a new buffer fills
        self.buffer = bytearray()
        self.sending.append((number, self.pool.submit(
            self.client.upload_part, Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
            Body=body)))

    def complete(self) -> None:
        if self.upload_id is None:  # smaller than one part: one PutObject
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.buffer,
                                   ContentType=self.content_type)
            return
        if self.buffer:
            self._send_part()
        parts = [{"PartNumber": number, "ETag": future.result()["ETag"]} for number, future in self.sending]
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts})
        self.upload_id = None
        self.pool.shutdown()

    def abort(self) -> None:
        if self.upload_id is None:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        self.pool.shutdown(wait=True, cancel_futures=True)  # no part lands after the abort
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except (BotoCoreError, ClientError):  # the store's lifecycle rule removes what an abort could not
            pass
        self.upload_id = None


class _translated:
    """boto3's errors as the contract's: refused (permissions, no bucket: retrying cannot help) or unavailable."""

    def __init__(self, ctx: RunContext, location: str):
        self.ctx, self.location = ctx, location

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, ConnectorError):
            return False
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, EndpointConnectionError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in REFUSED_CODES or 400 <= status < 500:
                raise DestinationRefused(f"connector {self.ctx.connector}: {self.location} refused the delivery "
                                         f"({code or status}); check the bucket and the credentials") from None
            raise DestinationUnavailable(f"connector {self.ctx.connector}: {self.location} failed ({code or status}); "
                                         "the run may be retried") from None
        if isinstance(exc, EndpointConnectionError | ConnectionError | BotoCoreError):
            raise DestinationUnavailable(f"connector {self.ctx.connector}: cannot reach the store of {self.location} "
                                         f"({type(exc).__name__}); the run may be retried") from None
        return False
