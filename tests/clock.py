"""The one clock of the tests and of the servers they start in-process.

Rules compare an event's dates with its ledger time (the batch's time, docs/coverage.md): a
member added "today" is refused as back-dated if the server's day has already turned. A test
that reads the machine's clock for its dates and lets the server read it again for ledger time
therefore failed when it ran across midnight UTC (seen under the e2e stress loop).

So the tests and their in-process servers share this clock: the machine's clock, moved back by
an offset chosen once per process so that the clock starts at or before 12:00 UTC. A test
process then has at least 12 hours before its day turns, whatever the hour it starts at. The
clock never runs ahead of the machine's, so certificates, codes and cosignatures made with it
are never "not yet valid" for a party that reads the machine's clock.

Subprocess servers (the CLI tests) read the machine's clock; the events those tests send
(clients/samples.py) are dated so that a turn of the day does not change their verdict.

``POLICY_LEDGER_TEST_CLOCK_BEHIND_HOURS`` sets the offset instead (a run with a large value
finds a test that mixes this clock with the machine's).
"""

from __future__ import annotations

import datetime as dt
import os

__all__ = ["CLOCK", "TestClock", "now", "today"]

_NOON = dt.timedelta(hours=12)


def _offset() -> dt.timedelta:
    forced = os.environ.get("POLICY_LEDGER_TEST_CLOCK_BEHIND_HOURS")
    if forced:
        return dt.timedelta(hours=float(forced))
    instant = dt.datetime.now(dt.UTC)
    since_midnight = instant - instant.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(dt.timedelta(0), since_midnight - _NOON)


class TestClock:
    """The machine's clock, ``behind`` earlier (a :class:`ledger.clock.Clock`)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, behind: dt.timedelta) -> None:
        self.behind = behind

    def now(self) -> dt.datetime:
        """The current instant of the tests, timezone-aware UTC."""
        return dt.datetime.now(dt.UTC) - self.behind


CLOCK = TestClock(_offset())


def now() -> dt.datetime:
    """The tests' current instant (use it wherever a test dates an event or asks about today)."""
    return CLOCK.now()


def today() -> dt.date:
    """The tests' current day."""
    return CLOCK.now().date()
