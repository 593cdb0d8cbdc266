"""Funded cohorts (task D, issue 11; docs/funds.md): cohorts, their beneficiaries by state, and
the contributions paid for them. Projections of CohortEnrolled / ContributionPaid / CohortEnded
entries; a log without such entries leaves them empty.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fund_cohorts",
        sa.Column("cohort_id", sa.String(128), nullable=False),
        sa.Column("funder_id", sa.String(64), nullable=False),
        sa.Column("fund_id", sa.String(64), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("monthly_minor", sa.BigInteger, nullable=False),
        sa.Column("beneficiaries", sa.Integer, nullable=False),
        sa.Column("ended_from", sa.Date, nullable=True),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.Column("end_leaf_index", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("cohort_id", name="pk_fund_cohorts"),
    )
    op.create_index("ix_fund_cohorts_funder_id", "fund_cohorts", ["funder_id"])
    op.create_table(
        "fund_cohort_members",
        sa.Column("cohort_id", sa.String(128), nullable=False),
        sa.Column("person_token", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state_code", sa.String(8), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("cohort_id", "person_token", name="pk_fund_cohort_members"),
    )
    op.create_index("ix_fund_cohort_members_person_token", "fund_cohort_members", ["person_token"])
    op.create_table(
        "fund_contributions",
        sa.Column("leaf_index", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("cohort_id", sa.String(128), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("beneficiary_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_fund_contributions"),
    )
    op.create_index("ix_fund_contributions_cohort_id", "fund_contributions", ["cohort_id"])


def downgrade() -> None:
    op.drop_index("ix_fund_contributions_cohort_id", table_name="fund_contributions")
    op.drop_table("fund_contributions")
    op.drop_index("ix_fund_cohort_members_person_token", table_name="fund_cohort_members")
    op.drop_table("fund_cohort_members")
    op.drop_index("ix_fund_cohorts_funder_id", table_name="fund_cohorts")
    op.drop_table("fund_cohorts")
