"""Destination `folder`: one file per run in a local or mounted folder (an NFS share a partner reads), as CSV, Parquet
or JSON lines.

The file is `<path>/<mart>/<run_key>.<ext>` (`query` for a query's result). It is written under a hidden temporary
name in the same folder, flushed to disk, then renamed: a rename within one file system is atomic, so a reader sees
either no file or the whole of it, and a re-run of the same run_key replaces the same file, never adds a second.

    to: {kind: folder, path: /mnt/partner/outbox, format: csv}
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from elt.connectors.base import Delivered, DestinationRefused, DestinationUnavailable, RunContext
from elt.connectors.formats import (
    EXTENSIONS,
    CountingSink,
    WritesOneFile,
    count_rows,
    file_digest,
)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"]
    path: Path = Field(description="The folder; it must exist (a mount that is missing is not created over).")
    format: Literal["csv", "parquet", "json"] = "csv"


def open(options: Options) -> FolderDestination:  # noqa: A001 - the contract's name (base.py)
    return FolderDestination(options)


class FolderDestination(WritesOneFile):
    def __init__(self, options: Options):
        self.options = options

    def target(self, ctx: RunContext) -> Path:
        return self.options.path / (ctx.mart or "query") / f"{ctx.run_key}.{EXTENSIONS[self.options.format]}"

    def delivered(self, ctx: RunContext) -> Delivered | None:
        target = self.target(ctx)
        if not target.is_file():
            return None
        size, sha = file_digest(target)
        return Delivered(str(target), count_rows(target, self.options.format), size, sha,
                         {"found": "file already in the folder"})

    def _deliver(self, ctx: RunContext, write: Callable[[CountingSink], int]) -> Delivered:
        """`write` puts the file into a sink and returns its rows: here the partial file, or nothing (dry run)."""
        target = self.target(ctx)
        if ctx.dry_run:
            sink = CountingSink()
            rows = write(sink)
            return Delivered(str(target), rows, sink.bytes, sink.sha256, {"dry_run": True})
        if not self.options.path.is_dir():
            raise DestinationUnavailable(f"connector {ctx.connector}: folder {self.options.path} does not exist "
                                         "(is it mounted?)")
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            target.parent.mkdir(exist_ok=True)
            with partial.open("wb") as stream:
                sink = CountingSink(stream.write)
                rows = write(sink)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(partial, target)
        except PermissionError:
            partial.unlink(missing_ok=True)
            raise DestinationRefused(f"connector {ctx.connector}: no permission to write in {target.parent}") from None
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise DestinationUnavailable(f"connector {ctx.connector}: writing {target} failed "
                                         f"({exc.strerror or type(exc).__name__})") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Delivered(str(target), rows, sink.bytes, sink.sha256)
