"""The payments' own Alembic version location (branch ``payments``), found by the ledger's
migration runner through the ``policy_ledger.migrations`` entry-point group, so the ledger never
imports payments. Its revisions create and change only the tables of ``payments/tables.py``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["VERSIONS", "version_location"]

VERSIONS = Path(__file__).with_name("versions")
"""The directory of the payments' revisions."""


def version_location() -> Path:
    """The entry point: where the payments' revisions are."""
    return VERSIONS
