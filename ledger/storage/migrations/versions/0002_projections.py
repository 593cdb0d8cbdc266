"""Coverage projections: insurers, policies, coverages, premiums and the subject index.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insurers",
        sa.Column("insurer_id", sa.String(64)),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("licence_number", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("licensed_from", sa.Date, nullable=False),
        sa.Column("suspended_from", sa.Date, nullable=True),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("insurer_id", name="pk_insurers"),
    )
    op.create_table(
        "policies",
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("sponsor_key", sa.String(64), nullable=False),
        sa.Column("holder_key", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("annual_premium_minor", sa.BigInteger, nullable=False),
        sa.Column("cancelled_from", sa.Date, nullable=True),
        sa.Column("cancel_reason", sa.String(32), nullable=True),
        sa.Column("issued_leaf_index", sa.BigInteger, nullable=False),
        sa.Column("cancelled_leaf_index", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("insurer_id", "policy_id", name="pk_policies"),
    )
    op.create_index("ix_policies_sponsor_key", "policies", ["sponsor_key"])
    op.create_index("ix_policies_policy_id", "policies", ["policy_id"])
    op.create_table(
        "coverages",
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("person_key", sa.String(64), nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("sponsor_key", sa.String(64), nullable=False),
        sa.Column("relationship", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(48), nullable=False),
        sa.Column("leaf_indexes", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint(
            "insurer_id", "policy_id", "person_key", "start_date", name="pk_coverages"
        ),
    )
    op.create_index("ix_coverages_person_key_start", "coverages", ["person_key", "start_date"])
    op.create_index("ix_coverages_sponsor_key", "coverages", ["sponsor_key"])
    op.create_table(
        "premiums",
        sa.Column("leaf_index", sa.BigInteger, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("payer_type", sa.String(16), nullable=False),
        sa.Column("payer_key", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_premiums"),
    )
    op.create_index("ix_premiums_insurer_id_policy", "premiums", ["insurer_id", "policy_id"])
    op.create_table(
        "subject_entries",
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("subject", "leaf_index", name="pk_subject_entries"),
    )


def downgrade() -> None:
    op.drop_table("subject_entries")
    op.drop_index("ix_premiums_insurer_id_policy", table_name="premiums")
    op.drop_table("premiums")
    op.drop_index("ix_coverages_sponsor_key", table_name="coverages")
    op.drop_index("ix_coverages_person_key_start", table_name="coverages")
    op.drop_table("coverages")
    op.drop_index("ix_policies_policy_id", table_name="policies")
    op.drop_index("ix_policies_sponsor_key", table_name="policies")
    op.drop_table("policies")
    op.drop_table("insurers")
