"""Witness cosignatures of our checkpoints: stored verbatim, served after the signed note."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.storage.tables import checkpoint_cosignatures

__all__ = ["CosignatureStore"]


class CosignatureStore:
    """The ``checkpoint_cosignatures`` table: safe from many threads and replicas."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self, tree_size: int, witness_name: str, key_id: bytes, line: bytes, now_us: int
    ) -> bool:
        """Store a verified cosignature line; False if that witness's line at that size exists
        (the first one is kept: a stored signed line never changes)."""
        try:
            with self._engine.execution_options(**{WRITE_LOCK_OPTION: True}).begin() as connection:
                connection.execute(
                    insert(checkpoint_cosignatures).values(
                        tree_size=tree_size,
                        witness_name=witness_name,
                        key_id=key_id,
                        signature_line=line,
                        received_at_us=now_us,
                    )
                )
        except IntegrityError:
            return False
        return True

    def lines_at(self, tree_size: int) -> bytes:
        """Every cosignature line of the checkpoint of ``tree_size``, in a stable order."""
        table = checkpoint_cosignatures
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(table.c.signature_line)
                .where(table.c.tree_size == tree_size)
                .order_by(table.c.witness_name, table.c.key_id)
            )
            return b"".join(bytes(row.signature_line) for row in rows)
