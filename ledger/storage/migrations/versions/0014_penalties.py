"""Penalty decisions (task B, issue 10 item 8): PenaltyAssessed decisions, their per-person
lines, and the entries that followed each (objections, grievances, rejections, payments,
withdrawals), each with its ledger date (docs/compliance.md "Penalty decisions").

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "penalty_decisions",
        sa.Column("decision_id", sa.String(128), nullable=False),
        sa.Column("regulator_id", sa.String(64), nullable=False),
        sa.Column("establishment_number", sa.String(128), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("schedule_version", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("computed_at_tree_size", sa.BigInteger, nullable=False),
        sa.Column("assessed_on", sa.Date, nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_penalty_decisions"),
    )
    op.create_index(
        "ix_penalty_decisions_establishment",
        "penalty_decisions",
        ["establishment_number", "leaf_index"],
    )
    op.create_table(
        "penalty_lines",
        sa.Column("decision_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("person_token", sa.String(64), nullable=False),
        sa.Column("uninsured_days", sa.Integer, nullable=False),
        sa.Column("arrears_minor", sa.BigInteger, nullable=False),
        sa.Column("fine_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "position", name="pk_penalty_lines"),
    )
    op.create_table(
        "penalty_decision_entries",
        sa.Column("leaf_index", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("decision_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("ledger_date", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_penalty_decision_entries"),
    )
    op.create_index(
        "ix_penalty_decision_entries_decision",
        "penalty_decision_entries",
        ["decision_id", "leaf_index"],
    )


def downgrade() -> None:
    op.drop_index("ix_penalty_decision_entries_decision", table_name="penalty_decision_entries")
    op.drop_table("penalty_decision_entries")
    op.drop_table("penalty_lines")
    op.drop_index("ix_penalty_decisions_establishment", table_name="penalty_decisions")
    op.drop_table("penalty_decisions")
