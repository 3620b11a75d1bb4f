"""Holding real loads at the named steps of a file's journey (elt.pipeline.STEPS), for the concurrency tests
and the fault matrix.

`Rendezvous` is installed as `elt.pipeline.step_hook` and holds loads running in threads named after their
party: at a step, a held party waits until every other party has reached the same step, has finished, or
is blocked on a lock in Postgres (waiting for the held one, which could otherwise never go on). Nothing here
measures time: the waits end on those conditions; the deadline only turns a hang into a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from elt.pipeline import STEPS

DEADLINE_SECONDS = 180


def put_later(store, key: str, data: bytes, *, after: str) -> None:
    """Upload `key` so that it arrives after `after`: its S3 LastModified (whole seconds) is later."""
    store.put(key, data)
    while store.head(key).last_modified <= store.head(after).last_modified:
        time.sleep(0.2)
        store.put(key, data)


class AttemptDied(BaseException):
    """Raised at a step by a party told to fail there: a zombie attempt dying, or losing its connection. A
    BaseException, as a dying process is not a failure the loader can handle (its last line of defence, which
    quarantines a file on an unexpected error, must not catch it)."""


def backends_waiting_for_a_lock(database_url: str) -> int:
    """Loader sessions (application_name 'elt') of this database that wait for a lock another one holds."""
    with psycopg.connect(database_url, autocommit=True, application_name="journey") as conn:
        return conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and application_name = 'elt' "
            "and wait_event_type = 'Lock'").fetchone()[0]


class Rendezvous:
    """Holds parties (threads, by name) at `step`.

    mode 'together': all parties start at once, and each waits at `step` for the others (all are there at once,
    then all go on);
    'overtaken': `held` runs alone to `step`; then the others start, and `held` waits there until they have
    finished or are blocked, then goes on;
    'dies': as 'overtaken', then `held` raises AttemptDied there."""

    def __init__(self, database_url: str, step: str, *, parties: tuple[str, ...], mode: str = "together",
                 held: str | None = None):
        assert step in STEPS and mode in {"together", "overtaken", "dies"}
        self.database_url, self.step, self.parties, self.mode = database_url, step, parties, mode
        self.held = held or parties[0]
        self.reached: dict[str, list[str]] = {party: [] for party in parties}
        self.finished: set[str] = set()
        self.released: set[str] = set()
        self._changed = threading.Condition()

    def hook(self, step: str, key: str) -> None:
        party = threading.current_thread().name
        if party not in self.parties:
            return
        with self._changed:
            self.reached[party].append(step)
            self._changed.notify_all()
        if step != self.step or party in self.released:
            return
        if self.mode == "together" or party == self.held:
            self._wait_for_the_others(party)
        self.released.add(party)
        if self.mode == "dies" and party == self.held:
            raise AttemptDied(f"{party} dies at {step}")

    def _others_settled(self, party: str) -> bool:
        others = [p for p in self.parties if p != party and p not in self.finished]
        if not others:
            return True
        if self.mode == "together" and all(self.step in self.reached[p] for p in others):
            return True
        return backends_waiting_for_a_lock(self.database_url) > 0

    def _wait_for_the_others(self, party: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        with self._changed:
            while not self._others_settled(party):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{party} waited at {self.step} and the others never came: {self.reached}")
                self._changed.wait(0.05)

    def run(self, work: Callable[[str], object]) -> dict[str, object]:
        """Run `work(party)` in a thread per party, all at once; returns each party's result, or the exception
        it raised."""
        results: dict[str, object] = {}

        def attempt(party: str) -> None:
            try:
                results[party] = work(party)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                results[party] = exc
            finally:
                with self._changed:
                    self.finished.add(party)
                    self._changed.notify_all()

        threads = {party: threading.Thread(target=attempt, args=(party,), name=party) for party in self.parties}
        if self.mode != "together":
            threads[self.held].start()
            with self._changed:
                while self.step not in self.reached[self.held] and self.held not in self.finished:
                    self._changed.wait(0.05)
        for thread in threads.values():
            if not thread.is_alive() and thread.ident is None:
                thread.start()
        for thread in threads.values():
            thread.join()
        return results
