"""Read routing to a PostgreSQL hot standby (``serve --read-database URL``; issue 13, item 4).

A read (proofs, entries, checkpoints, coverage, household checks) is answered from the standby
when it is fresh enough, else from the primary. Writes never come here: the sequencer, the
access records and every extension write to the primary.

How fresh is fresh enough, per read (docs/operations.md, "Read standby"):

1. The standby's tree size is read on the standby (its newest checkpoint: one indexed row).
2. The read's *needed size* is the caller's receipt size (``x-min-tree-size`` metadata) or the
   size the request itself names (a checkpoint, proof or entry range at a tree size), whichever
   is larger. A standby below it is bypassed: **no answer is computed from before a size the
   caller presents**.
3. The *lag* is the newest tree size this server knows (its sequencer's last commit, and any
   size a primary answer showed) minus the standby's size. A lag over the bound
   (``limits.standby_lag_entries_max``, or ``serve --read-lag-max``) bypasses the standby.
4. A standby that fails (unreachable, a query cancelled by recovery conflict, or an answer it
   cannot give because it lags, such as an unknown leaf hash) is bypassed for that read: the
   primary answers it. An INVALID_ARGUMENT refusal is the request's own and is returned as is.
5. A standby its own :class:`~ledger.storage.integrity.IntegrityWatch` confirmed corrupt
   (PostgreSQL's data_corrupted or index_corrupted, by the same rule as the primary's) is
   bypassed for good, until a restart: no read asks it anything more.

A bypass routes to the primary at once (no waiting on the standby). Each answer carries the
tree size it was computed at, so a caller can always tell. The router is pure storage: it knows
engines and sizes, not gRPC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import SQLAlchemyError

from ledger import limits
from ledger.errors import FailedPrecondition, InvalidArgument
from ledger.storage.db import create_ledger_engine
from ledger.storage.integrity import IntegrityWatch
from ledger.storage.log_store import latest_checkpoint
from ledger.storage.tables import checkpoints

__all__ = [
    "BYPASS_REASONS",
    "ReadRouter",
    "RoutingObserver",
    "check_same_log",
    "open_standby",
]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

BYPASS_REASONS = ("behind_min_tree_size", "lagging", "standby_failed", "standby_corrupt")
"""Why a read went to the primary (the ``reason`` label of the bypass counter)."""


class RoutingObserver(Protocol):
    """Where the router reports what it did (the metrics; tests use their own)."""

    def standby_lag(self, entries: int) -> None: ...

    def standby_served(self) -> None: ...

    def standby_bypassed(self, reason: str) -> None: ...


class _Silent:
    def standby_lag(self, entries: int) -> None:
        pass

    def standby_served(self) -> None:
        pass

    def standby_bypassed(self, reason: str) -> None:
        pass


def open_standby(url: str, primary_url: str) -> Engine:
    """The standby's engine; INVALID_ARGUMENT unless it is a PostgreSQL URL other than the
    primary's (a SQLite file has no standby: every reader opens the file itself)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise InvalidArgument(
            "--read-database must be a PostgreSQL URL of a hot standby of --database "
            f"(got a {parsed.get_backend_name()} URL)",
            reason="READ_DATABASE_NOT_POSTGRESQL",
        )
    if make_url(primary_url).get_backend_name() != "postgresql":
        raise InvalidArgument(
            "--read-database needs --database to be PostgreSQL (its streaming-replication primary)",
            reason="READ_DATABASE_NOT_POSTGRESQL",
        )
    if parsed == make_url(primary_url):
        raise InvalidArgument(
            "--read-database is the same database as --database; give the standby's URL",
            reason="READ_DATABASE_IS_PRIMARY",
        )
    return create_ledger_engine(url)


def check_same_log(primary: Engine, standby: Engine) -> None:
    """FAILED_PRECONDITION when the standby holds another log (its newest signed checkpoint is
    not byte for byte the primary's of that size). An unreachable or empty standby passes (it
    is bypassed until it answers)."""
    try:
        with standby.connect() as connection:
            row = connection.execute(
                select(checkpoints.c.tree_size, checkpoints.c.note_bytes)
                .order_by(checkpoints.c.tree_size.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError as error:
        log.warning("the read standby does not answer (reads go to the primary): %s", error)
        return
    if row is None:
        return
    with primary.connect() as connection:
        note = connection.execute(
            select(checkpoints.c.note_bytes).where(checkpoints.c.tree_size == row.tree_size)
        ).scalar()
    if note is None or bytes(note) != bytes(row.note_bytes):
        raise FailedPrecondition(
            f"--read-database holds another log: its checkpoint at tree size {row.tree_size} "
            "is not the primary's; give a streaming-replication standby of --database",
            reason="READ_DATABASE_OTHER_LOG",
        )


@dataclass
class ReadRouter:
    """Chooses, per read, the standby or the primary (see the module's text)."""

    standby: Engine | None
    """None: no standby; every read goes to the primary."""
    known_size: Callable[[], int] = lambda: 0
    """The newest tree size the server knows of its own (the sequencer's last commit)."""
    lag_entries_max: int = limits.standby_lag_entries_max
    observer: RoutingObserver | None = None
    """Told of each routing (the metrics); None: nobody."""
    integrity: IntegrityWatch | None = None
    """The standby's own watch (``standby=True``): once it confirms a corruption, every read
    bypasses the standby (step 5)."""
    _seen_size: int = 0

    def read(
        self, work: Callable[[bool], _T], needed_size: int, size_of: Callable[[_T], int]
    ) -> _T:
        """``work(on_standby)``'s answer: on the standby when fresh enough, else the primary.
        ``size_of`` is the tree size an answer was computed at. Runs in a read thread."""
        if self.standby is None:
            return work(False)
        observer = self.observer or _Silent()
        reason = self._bypass_reason(needed_size, observer)
        if reason is None:
            try:
                answer = work(True)
            except InvalidArgument:
                raise  # the request's own fault: the primary would refuse it the same way
            except Exception as error:  # the primary answers instead (and refuses if it must)
                log.debug("standby read failed, the primary answers: %s", error)
                reason = self._failed()
            else:
                if size_of(answer) >= needed_size:
                    observer.standby_served()
                    return answer
                reason = "behind_min_tree_size"  # replay cannot go back; kept for safety
        observer.standby_bypassed(reason)
        answer = work(False)
        self._seen_size = max(self._seen_size, size_of(answer))
        return answer

    def _failed(self) -> str:
        """Why a standby that just failed is bypassed: its watch may have confirmed it corrupt
        (the failure was the corruption error that made it check)."""
        corrupt = self.integrity is not None and self.integrity.corrupt
        return "standby_corrupt" if corrupt else "standby_failed"

    def _bypass_reason(self, needed_size: int, observer: RoutingObserver) -> str | None:
        assert self.standby is not None
        if self.integrity is not None and self.integrity.corrupt:
            return "standby_corrupt"  # asked nothing more
        try:
            with self.standby.connect() as connection:
                standby_size = latest_checkpoint(connection).tree_size
        except Exception as error:  # unreachable, not initialized: the primary answers
            log.debug("standby size unknown, the primary answers: %s", error)
            return self._failed()
        newest = max(self.known_size(), self._seen_size)
        lag = max(0, newest - standby_size)
        observer.standby_lag(lag)
        if standby_size < needed_size:
            return "behind_min_tree_size"
        if lag > self.lag_entries_max:
            return "lagging"
        return None
