"""The people each beneficiary has obtained the token of (docs/privacy.md, "Who obtains
tokens"): a person may resolve at most ``limits.beneficiary_people_resolved_max`` people other
than themselves, remembered here so that a restart or another worker does not reset the count.
Tokens only, no identifier. A database before this revision starts with no resolutions
recorded: people resolved before count from the next call that names them.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "beneficiary_resolutions",
        sa.Column("beneficiary_token", sa.String(40), nullable=False),
        sa.Column("person_token", sa.String(40), nullable=False),
        sa.Column("resolved_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "beneficiary_token", "person_token", name="pk_beneficiary_resolutions"
        ),
    )


def downgrade() -> None:
    op.drop_table("beneficiary_resolutions")
