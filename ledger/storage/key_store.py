"""The signing-key registry in the database: look up and list (the projector writes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, select

from ledger.clock import from_micros
from ledger.keys import InsurerKey
from ledger.signers import SignerRole
from ledger.storage.tables import insurer_keys

__all__ = ["KeyStore", "key_from_row", "keys_by_id"]


def key_from_row(row: Row[Any]) -> InsurerKey:
    return InsurerKey(
        key_id=row.key_id,
        insurer_id=row.insurer_id,
        public_key=bytes(row.public_key),
        valid_from=from_micros(row.valid_from_us),
        valid_until=None if row.valid_until_us is None else from_micros(row.valid_until_us),
        revoked_at=None if row.revoked_at_us is None else from_micros(row.revoked_at_us),
        registered_at=from_micros(row.registered_at_us),
        role=SignerRole(row.role),
        jurisdiction=row.jurisdiction,
        registered_leaf_index=int(row.leaf_index),
    )


# Built once: the sequencer asks it every batch, and building the statement cost more than
# running it.
_SELECT_KEYS = select(insurer_keys).where(
    insurer_keys.c.key_id.in_(bindparam("key_ids", expanding=True))
)


def keys_by_id(connection: Connection, key_ids: Sequence[str]) -> dict[str, InsurerKey]:
    """The registered keys among ``key_ids``, by id, read on ``connection``."""
    if not key_ids:
        return {}
    rows = connection.execute(_SELECT_KEYS, {"key_ids": sorted(set(key_ids))})
    return {row.key_id: key_from_row(row) for row in rows}


class KeyStore:
    """Reads the signing-key registry (a projection: only the projector writes it)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, key_id: str) -> InsurerKey | None:
        """The key registered under ``key_id``, if any."""
        with self._engine.connect() as connection:
            return keys_by_id(connection, [key_id]).get(key_id)

    def list(self, insurer_id: str = "") -> list[InsurerKey]:
        """Every key of ``insurer_id`` (or of all principals), by principal then registration."""
        query = select(insurer_keys).order_by(
            insurer_keys.c.insurer_id, insurer_keys.c.leaf_index, insurer_keys.c.key_id
        )
        if insurer_id:
            query = query.where(insurer_keys.c.insurer_id == insurer_id)
        with self._engine.connect() as connection:
            return [key_from_row(row) for row in connection.execute(query)]
