"""Empty: the payments' state history moved to the payments' own Alembic branch
(``payments/migrations/versions``, revision payments_0001), which keeps the table on a database
migrated before the move. The revision stays so that such a database's version is known.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
