"""Key history in the log: the key table becomes a projection of KeyRegistered / KeyRevoked.

Adds each key's signer role, jurisdiction and the log entries that registered and revoked it.
Keys registered before this revision (by the removed AdminService calls) are not in the log:
they get the role their principal implies and leaf 0, and ``policy-ledger rebuild`` reports
them, since no log entry produces them (re-register them through KeyRegistered events).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("insurer_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="insurer"))
        batch.add_column(sa.Column("jurisdiction", sa.String(2), nullable=False, server_default=""))
        batch.add_column(sa.Column("leaf_index", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("revoked_leaf_index", sa.BigInteger, nullable=True))
    op.execute("UPDATE insurer_keys SET role = 'operator' WHERE insurer_id = 'operator'")


def downgrade() -> None:
    with op.batch_alter_table("insurer_keys") as batch:
        batch.drop_column("revoked_leaf_index")
        batch.drop_column("leaf_index")
        batch.drop_column("jurisdiction")
        batch.drop_column("role")
