"""Source kind `counter`: "pulls" the integers after the cursor up to `upto` (landing nothing), so the engine's cursor
bookkeeping can be tested apart from the real sources. `fail_after` makes a pull fail once the cursor passes it."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from elt.connectors.base import ConnectorError, Pulled, RunContext

SEEN: list[tuple[str, str | None, str | None]] = []  # (run_key, cursor given, drop type): what the engine asked


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["counter"]
    upto: int
    fail_after: int | None = None


def open(options: Options) -> Counter:  # noqa: A001 - the kind contract
    return Counter(options)


class Counter:
    def __init__(self, options: Options):
        self.options = options

    def pull(self, ctx: RunContext, cursor: str | None) -> Pulled:
        SEEN.append((ctx.run_key, cursor, ctx.drop_type))
        start = int(cursor) if cursor is not None else 0
        if self.options.fail_after is not None and self.options.upto > self.options.fail_after:
            raise ConnectorError(f"connector {ctx.connector}: the source went away after row {start}")
        values = list(range(start + 1, self.options.upto + 1))
        body = ",".join(map(str, values)).encode()
        return Pulled(files=(f"counter/{ctx.run_key}.csv",), rows=len(values), bytes=len(body),
                      sha256=hashlib.sha256(body).hexdigest(), cursor_after=str(self.options.upto))
