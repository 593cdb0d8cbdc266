"""Recompute the projections from the log alone and compare them with the stored ones.

The log is the record; the projections are a cache of it that the appender keeps in the same
transaction. ``policy-ledger rebuild`` replays every entry of the latest checkpoint through the
same :class:`~ledger.coverage.projector.Projector` into a scratch in-memory database, then compares
every projection table row by row. A difference is a bug (or tampering with the projections) and
is reported with the first log entry the differing rows were derived from. An entry the rules
refuse on replay is reported too: it was accepted once, so the rules or the data changed. The
replay reads the identity vault's token rows (no identifier in them; they survive erasure),
never its identifiers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, StaticPool, Table, create_engine, select
from sqlalchemy.exc import DBAPIError

from ledger.coverage.projector import Projector, SignedBy
from ledger.entry import DecodedEntry, decode_entry
from ledger.errors import LedgerError
from ledger.events import decode_event
from ledger.signers import GENESIS_LEAF_INDEX
from ledger.storage.log_store import latest_checkpoint
from ledger.storage.tables import PROJECTION_TABLES, log_entries, metadata
from ledger.storage.vault_store import person_tokens

__all__ = ["Divergence", "RebuildReport", "rebuild_and_compare"]

_PAGE = 1000


@dataclass(frozen=True)
class Divergence:
    """One row that differs between the stored and the rebuilt projections."""

    table: str
    key: tuple[Any, ...]
    stored: dict[str, Any] | None
    rebuilt: dict[str, Any] | None
    first_leaf_index: int | None
    """The earliest log entry either version of the row was derived from."""
    problem: str = ""
    """Set when the stored rows could not even be read (a damaged value)."""

    def describe(self) -> str:
        """One line for the operator."""
        if self.problem:
            return f"{self.table}: {self.problem}"
        if self.stored is None:
            what = "missing from the stored projections"
        elif self.rebuilt is None:
            what = "stored, but no log entry produces it"
        else:
            changed = sorted(k for k in self.stored if self.stored[k] != self.rebuilt.get(k))
            what = "differs in " + ", ".join(
                f"{k} (stored {self.stored[k]!r}, from the log {self.rebuilt.get(k)!r})"
                for k in changed
            )
        return f"{self.table} {self.key}: {what}"


@dataclass
class RebuildReport:
    """What a rebuild found."""

    tree_size: int
    entries_replayed: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(leaf index, why) of entries the rules refuse on replay."""
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """True when the replay accepted every entry and every table matches."""
        return not self.refused and not self.divergences

    @property
    def first_diverging_leaf_index(self) -> int | None:
        """The earliest entry behind any difference or refusal."""
        leaves = [leaf for leaf, _ in self.refused] + [
            d.first_leaf_index for d in self.divergences if d.first_leaf_index is not None
        ]
        return min(leaves) if leaves else None


def rebuild_and_compare(engine: Engine) -> RebuildReport:
    """Replay the log of ``engine`` into scratch projections and compare (see module doc)."""
    scratch = create_engine("sqlite://", poolclass=StaticPool)
    metadata.create_all(scratch, tables=[*PROJECTION_TABLES, person_tokens])
    try:
        with engine.connect() as source, source.begin():
            head = latest_checkpoint(source)
            report = RebuildReport(tree_size=head.tree_size)
            with scratch.begin() as target:
                _copy_tokens(source, target)
                projector = Projector(target, replay=True)
                for leaf_index, entry in _entries(source, head.tree_size):
                    report.entries_replayed += 1
                    if report.entries_replayed % _PAGE == 0:
                        projector.flush()  # as the appender's batches do: bounded memory
                    try:
                        decoded = decode_entry(entry)
                        event = decode_event(decoded.envelope.payload)
                        projector.apply(event, leaf_index, _signed_by(decoded, leaf_index))
                    except LedgerError as error:
                        report.refused.append((leaf_index, error.message))
                projector.flush()
                for table in PROJECTION_TABLES:
                    report.divergences.extend(_compare(table, source, target))
    finally:
        scratch.dispose()
    return report


def _copy_tokens(source: Connection, target: Connection) -> None:
    """The vault's token rows (never deleted; no identifier in them): the replay checks every
    token an entry names was issued, and a fee's sponsor country, against them."""
    rows = [dict(row._mapping) for row in source.execute(select(person_tokens))]
    if rows:
        target.execute(person_tokens.insert(), rows)


def _signed_by(entry: DecodedEntry, leaf_index: int) -> SignedBy:
    """Who signed ``entry``, as the appender saw it: admission accepts an envelope by its first
    verifying signature, and the ledger's own envelopes carry exactly one."""
    signatures = entry.envelope.signatures
    key_id = signatures[0].keyid if signatures else ""
    return SignedBy(key_id, entry.integrated_time, genesis=leaf_index == GENESIS_LEAF_INDEX)


def _entries(connection: Connection, tree_size: int) -> Iterator[tuple[int, bytes]]:
    start = 0
    while start < tree_size:
        rows = connection.execute(
            select(log_entries.c.leaf_index, log_entries.c.entry_bytes)
            .where(log_entries.c.leaf_index >= start, log_entries.c.leaf_index < tree_size)
            .order_by(log_entries.c.leaf_index)
            .limit(_PAGE)
        ).all()
        if not rows:
            return
        for row in rows:
            yield int(row.leaf_index), bytes(row.entry_bytes)
        start = int(rows[-1].leaf_index) + 1


def _rows(table: Table, connection: Connection) -> dict[tuple[Any, ...], dict[str, Any]]:
    key_columns = list(table.primary_key.columns)
    # A plain scan, no ORDER BY: SQLite then reads every value from the table itself, not from
    # an index's copy of the key columns (a damaged table row must not hide behind its index).
    rows = connection.execute(select(table)).mappings()
    return {tuple(row[c.name] for c in key_columns): dict(row) for row in rows}


def _compare(table: Table, stored: Connection, rebuilt: Connection) -> list[Divergence]:
    theirs = _rows(table, rebuilt)
    try:
        ours = _rows(table, stored)
    except (ValueError, TypeError, DBAPIError) as error:  # a stored value that cannot be read
        return [
            Divergence(
                table.name, (), None, None, None, problem=f"stored rows cannot be read: {error}"
            )
        ]
    found = []
    for key in sorted(ours.keys() | theirs.keys(), key=repr):
        mine, replayed = ours.get(key), theirs.get(key)
        if mine != replayed:
            leaves = _leaves(mine) + _leaves(replayed)
            found.append(
                Divergence(table.name, key, mine, replayed, min(leaves) if leaves else None)
            )
    return found


def _leaves(row: dict[str, Any] | None) -> list[int]:
    # A damaged stored value (a byte flipped in a leaf index) is already a divergence; it only
    # cannot say which entry it came from, so it is skipped here instead of failing the report.
    if row is None:
        return []
    texts = [
        str(value)
        for name, value in row.items()
        if name.endswith("leaf_index") and value is not None
    ]
    if row.get("leaf_indexes"):
        texts.extend(str(row["leaf_indexes"]).split(","))
    return [int(text) for text in texts if text.isdecimal()]
