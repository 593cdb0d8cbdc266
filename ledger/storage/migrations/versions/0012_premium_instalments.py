"""Premium schedules (PolicyIssued.instalments) and the ledger date of each payment: what the
non-payment rule reads (docs/compliance.md "Premiums"); transfer gaps by the replacing policy,
which household verdicts name.

``policies.instalments`` counts each policy's instalments (0: none), so reads skip the
schedule lookup for the others. Rows recorded before this revision have neither (policies: 0;
payments: NULL, read as paid in time), so such a policy's schedule is not enforced;
``policy-ledger rebuild`` reports each such row against the log (it compares and writes
nothing: filling them in needs a repair step that does not exist yet).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "premium_instalments",
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "insurer_id", "policy_id", "position", name="pk_premium_instalments"
        ),
    )
    with op.batch_alter_table("premiums") as batch:
        batch.add_column(sa.Column("paid_on", sa.Date, nullable=True))
    with op.batch_alter_table("policies") as batch:
        batch.add_column(sa.Column("instalments", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_transfer_gaps_policy", "transfer_gaps", ["insurer_id", "policy_id"])


def downgrade() -> None:
    op.drop_index("ix_transfer_gaps_policy", table_name="transfer_gaps")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("instalments")
    with op.batch_alter_table("premiums") as batch:
        batch.drop_column("paid_on")
    op.drop_table("premium_instalments")
