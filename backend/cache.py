"""A small in-process cache whose entries expire: what one API process remembers between requests so that it need not
ask Postgres on every call (a key's caller: backend/auth.py; a mart's build stamp: backend/api/listing.py).

Each entry is kept `seconds` from the moment its value was true, never longer, and that moment is the caller's to
give: a value read in a transaction that began before another request's newer one never replaces it. At most `size`
entries; the least recently used go first. `clock` is a monotonic clock, replaceable in tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class TtlCache:
    def __init__(self, seconds: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.size, self.clock = seconds, size, clock
        self._entries: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()  # key -> (value, true at)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        """The value, if it was true less than `seconds` ago; else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self.clock() - entry[1] >= self.seconds:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, true_at: float | None = None) -> None:
        """Remember `value`, true at `true_at` (this clock's time; default now), unless a value true later is kept."""
        if self.seconds <= 0:
            return
        true_at = self.clock() if true_at is None else true_at
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None and kept[1] > true_at:
                return
            self._entries[key] = (value, true_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
