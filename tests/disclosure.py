"""The disclosure-control rule of the de-identified marts written again in Python, from its statement in
docs/decisions/0011-disclosure-control.md rather than from the SQL (dbt/macros/disclosure_control.sql), so that
tests can work out what the marts should publish on their own."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# The defaults of elt.config.Settings (SDC_THRESHOLD, SDC_ROUNDING_BASE), which the tests' builds use.
THRESHOLD = 10
BASE = 5


def published(count: int, *, threshold: int = THRESHOLD, base: int = BASE) -> int | None:
    """What a mart shows for a true count: 0 as is, None (withheld) from 1 to threshold - 1, else the nearest
    multiple of `base`, halves up."""
    if count == 0:
        return 0
    if count < threshold:
        return None
    return int((Decimal(count) / base).quantize(Decimal(1), rounding=ROUND_HALF_UP)) * base


def is_publishable(value: int | None, *, threshold: int = THRESHOLD, base: int = BASE) -> bool:
    """True for a figure disclosure control can publish: withheld (None), 0, or at least the threshold and a
    multiple of the base."""
    return value is None or value == 0 or (value >= threshold and value % base == 0)


def ratio(numerator: int | None, denominator: int | None, places: str) -> float | None:
    """numerator / denominator rounded half away from zero, as Postgres's round(numeric, n); None when either is
    withheld or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return float((Decimal(numerator) / denominator).quantize(Decimal(places), rounding=ROUND_HALF_UP))
