"""Named append hooks: state that must change in the same transaction as an entry, by name.

A :class:`ledger.storage.append.PendingEntry`'s ``on_append`` runs in the batch transaction once
the entry has its leaf index (a payment moving to "recorded"). A closure cannot cross from a
worker process to the sequencer process (``serve --workers N``), so such state changes are
*registered functions* called by name with one string argument: :class:`AppendHook` is the
serializable ``on_append``, and the sequencer process looks the name up here.

Functions register at import (``register_append_hook``); the modules that register them are
named by the entry-point group ``policy_ledger.append_hooks`` so the sequencer process can import
them all (:func:`load_append_hooks`) without knowing the extensions. A hook needing "now" reads
:func:`batch_now`: the time of the batch being appended, the one its entries are integrated at.

A hook's log lines must describe only what committed, yet a hook may run in a transaction that
is then rolled back: its entry refused (a savepoint undone), or the whole first attempt of a
batch run again with savepoints (:meth:`ledger.storage.append.Appender.append_batch`). A logger
that speaks of what a batch writes is therefore passed to :func:`hold_in_batches`: its lines of a
batch are held (:func:`held_log_lines`) and emitted once the batch commits, or dropped.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points

from sqlalchemy import Connection

from ledger.errors import InvariantViolation

__all__ = [
    "APPEND_HOOKS_GROUP",
    "AppendHook",
    "AppendHookFunction",
    "append_hook_registered",
    "batch_now",
    "batch_time",
    "emit_held",
    "held_log_lines",
    "hold_in_batches",
    "load_append_hooks",
    "register_append_hook",
]

APPEND_HOOKS_GROUP = "policy_ledger.append_hooks"
"""Entry-point group naming the modules that register append hooks when imported."""

AppendHookFunction = Callable[[Connection, int, str], None]
"""``(connection, leaf_index, argument)``: runs in the batch transaction; a LedgerError it raises
refuses the entry (and what it wrote is rolled back)."""

_registry: dict[str, AppendHookFunction] = {}

_batch_time: contextvars.ContextVar[dt.datetime] = contextvars.ContextVar(
    "policy_ledger_batch_time"
)
_held_lines: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "policy_ledger_held_log_lines", default=None
)


def register_append_hook(name: str, function: AppendHookFunction) -> None:
    """Make ``function`` callable as the append hook ``name`` in this process.

    Registering the same function again is harmless (a module imported twice); a different
    function under a taken name is a bug (two extensions chose one name).
    """
    registered = _registry.get(name)
    if registered is not None and registered is not function:
        raise ValueError(f"append hook {name!r} is already registered to {registered!r}")
    _registry[name] = function


def append_hook_registered(name: str) -> bool:
    """Whether this process can run the append hook ``name``."""
    return name in _registry


def load_append_hooks() -> None:
    """Import every module the ``policy_ledger.append_hooks`` entry points name (the sequencer
    process runs no extension, but must run their hooks)."""
    for point in entry_points(group=APPEND_HOOKS_GROUP):
        point.load()


@contextmanager
def batch_time(now: dt.datetime) -> Iterator[None]:
    """Within the block, :func:`batch_now` is ``now`` (the appender sets it around a batch)."""
    token = _batch_time.set(now)
    try:
        yield
    finally:
        _batch_time.reset(token)


def batch_now() -> dt.datetime:
    """The time of the batch being appended; a hook called outside a batch is a bug."""
    try:
        return _batch_time.get()
    except LookupError:
        raise InvariantViolation(
            "an append hook ran outside a batch (no batch time is set)",
            reason="APPEND_HOOK_OUTSIDE_BATCH",
        ) from None


@dataclass(frozen=True)
class AppendHook:
    """A serializable ``on_append``: the registered function ``name`` called with ``argument``."""

    name: str
    argument: str

    def __call__(self, connection: Connection, leaf_index: int) -> None:
        function = _registry.get(self.name)
        if function is None:
            raise InvariantViolation(
                f"append hook {self.name!r} is not registered in this process (is the module "
                f"that registers it named in the {APPEND_HOOKS_GROUP!r} entry points?)",
                reason="APPEND_HOOK_UNKNOWN",
                metadata={"hook": self.name},
            )
        function(connection, leaf_index, self.argument)


class _HeldInBatch(logging.Filter):
    """Holds a record emitted while a batch is being written (see :func:`held_log_lines`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _held_lines.get()
        if held is None:
            return True  # not in a batch (or already emitted by emit_held): log it now
        held.append(record)
        return False


_HOLD_IN_BATCH = _HeldInBatch()


def hold_in_batches(logger: logging.Logger) -> logging.Logger:
    """Make ``logger``'s lines emitted during a batch wait for its commit (see the module doc):
    for a logger whose lines say what an append hook, or anything else running in a batch's
    transaction, wrote. Its lines outside a batch (another thread) are not held."""
    if _HOLD_IN_BATCH not in logger.filters:
        logger.addFilter(_HOLD_IN_BATCH)
    return logger


@contextmanager
def held_log_lines() -> Iterator[list[logging.LogRecord]]:
    """Within the block, the lines of loggers passed to :func:`hold_in_batches` are appended to
    the list yielded instead of being emitted (the appender sets it around one attempt of a
    batch, and drops those of an entry whose writes it rolled back). :func:`emit_held` emits
    them once the batch has committed; lines never emitted are simply dropped."""
    held: list[logging.LogRecord] = []
    token = _held_lines.set(held)
    try:
        yield held
    finally:
        _held_lines.reset(token)


def emit_held(records: list[logging.LogRecord]) -> None:
    """Emit ``records`` held during a batch, in order, through their loggers' handlers (call
    after the commit, outside :func:`held_log_lines`)."""
    for record in records:
        logging.getLogger(record.name).handle(record)
