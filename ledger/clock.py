"""Time: an injectable clock (tests freeze it) and the one conversion to stored microseconds."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "from_micros", "to_micros"]


class Clock(Protocol):
    """Where the ledger gets the current time from."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware UTC."""
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that says what it is told (tests)."""

    def __init__(self, instant: dt.datetime) -> None:
        self.instant = instant

    def now(self) -> dt.datetime:
        """The instant the clock was set to."""
        return self.instant

    def advance(self, delta: dt.timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.instant += delta


def to_micros(instant: dt.datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (how instants are stored)."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant in the ledger is timezone-aware UTC")
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> dt.datetime:
    """The aware UTC datetime of a stored microsecond count."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
