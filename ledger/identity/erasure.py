"""Erasure hooks: how a server extension forgets a person in the erasure's own transaction.

The ledger erases what it holds (the vault's identity row and attributes, :mod:`ledger.storage.
vault_store`). An extension that keeps rows naming people by identifier (the payments extension's
quotes) registers a hook on ``ServerContext.erasure_hooks``; the appender runs every hook inside
the transaction that appends the ``PersonErased`` entry, before the vault row is deleted, with the
person's token and identifier. A hook redacts what names the person (replacing the identifier by
the token) and must not commit: the entry and every redaction commit together, or none does.
The hooks run in a savepoint: one that raises a LedgerError refuses the entry, and what the hooks
before it wrote is rolled back. The ledger never imports an extension (ARCHITECTURE §3): it only
calls what was registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from ledger.coverage.model import PersonRef

__all__ = ["ErasedPerson", "ErasureHook", "ErasureHooks"]


@dataclass(frozen=True)
class ErasedPerson:
    """Who is being erased: the token (which stays) and the identifier (which goes)."""

    token: str
    person: PersonRef


ErasureHook = Callable[[Connection, ErasedPerson], None]
"""Redact, on the erasure's connection, what names ``ErasedPerson.person``."""


class ErasureHooks:
    """The hooks the extensions registered, run in order."""

    def __init__(self) -> None:
        self._hooks: list[ErasureHook] = []

    def add(self, hook: ErasureHook) -> None:
        """Run ``hook`` in every erasure from now on."""
        self._hooks.append(hook)

    def run(self, connection: Connection, erased: ErasedPerson) -> None:
        """Run every hook on the erasure's connection (an exception refuses the erasure)."""
        for hook in self._hooks:
            hook(connection, erased)

    def __len__(self) -> int:
        return len(self._hooks)
