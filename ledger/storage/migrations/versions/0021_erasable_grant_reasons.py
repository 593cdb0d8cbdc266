"""A person's erasure clears the reasons of the operator's grants to them (docs/privacy.md,
"Erasure"): the reason is the operator's free text about the person (why they need more: a
family's size, a court order, an illness), personal data that must not outlive them.

The grants stay append-only (0019) but for one change: an UPDATE that sets ``reason`` from a
non-empty text to the empty string, every other column (and, on SQLite, the rowid) unchanged.
The empty string marks an erased reason: no grant is made with it (a reason is required, blank
refused), so it is never mistaken for one an operator wrote; an erased reason is not erased
again. Every other UPDATE, every DELETE, and TRUNCATE on PostgreSQL, are still refused by the
database. The erasure's transaction makes the change (ledger.storage.resolution_grants.
erase_grant_reasons), with the PersonErased entry.

SQLite: the UPDATE trigger is made again with a WHEN clause naming every column but ``reason``
(the columns of 0019 and 0020: a migration adding a column must make it again; a test changes
every column of the table's definition and expects a refusal). PostgreSQL: the row trigger of
0019 (UPDATE OR DELETE) is split in two, a DELETE one and an UPDATE one whose WHEN compares the
whole rows but ``reason`` (``to_jsonb``: a later column is covered without a new migration);
the TRUNCATE trigger stays as it is. Both call the log's ``ledger_refuse_change()`` (0001).

Downgrade restores 0019's triggers; reasons already erased stay empty (nothing brings them
back).

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_TABLE = "beneficiary_resolution_grants"
_KEPT_COLUMNS = (
    "rowid",
    "beneficiary_token",
    "grant_number",
    "additional",
    "granted_by",
    "granted_at_us",
    "request_id",
)
"""What an erasure of the reason leaves unchanged, on SQLite: every column but ``reason`` (as of
0020) and the rowid (``IS``: equal, nulls included)."""
_SQLITE_ERASURE_ONLY = " AND ".join(
    ["NEW.reason IS ''", "OLD.reason IS NOT ''"]
    + [f"NEW.{column} IS OLD.{column}" for column in _KEPT_COLUMNS]
)
_POSTGRES_ERASURE_ONLY = (
    "NEW.reason IS NOT DISTINCT FROM '' AND OLD.reason IS DISTINCT FROM '' "
    "AND (to_jsonb(NEW) - 'reason') IS NOT DISTINCT FROM (to_jsonb(OLD) - 'reason')"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only_update")
        op.execute(
            f"CREATE TRIGGER {_TABLE}_append_only_update BEFORE UPDATE ON {_TABLE} "
            f"WHEN NOT ({_SQLITE_ERASURE_ONLY}) "
            f"BEGIN SELECT RAISE(ABORT, '{_TABLE} is append-only: UPDATE refused'); END"
        )
        return
    op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only ON {_TABLE}")
    op.execute(
        f"CREATE TRIGGER {_TABLE}_append_only BEFORE DELETE ON {_TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {_TABLE}_append_only_update BEFORE UPDATE ON {_TABLE} "
        f"FOR EACH ROW WHEN (NOT ({_POSTGRES_ERASURE_ONLY})) "
        "EXECUTE FUNCTION ledger_refuse_change()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only_update")
        op.execute(
            f"CREATE TRIGGER {_TABLE}_append_only_update BEFORE UPDATE ON {_TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{_TABLE} is append-only: UPDATE refused'); END"
        )
        return
    op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only_update ON {_TABLE}")
    op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only ON {_TABLE}")
    op.execute(
        f"CREATE TRIGGER {_TABLE}_append_only BEFORE UPDATE OR DELETE ON {_TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
