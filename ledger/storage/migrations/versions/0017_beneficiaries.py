"""Task F (issue 11, item 4): beneficiaries declared by the insured and the fund's decisions.

Two projections of BeneficiariesDeclared / DeclarationDecided entries (docs/beneficiaries.md);
a log recorded before this revision has no such entries, so both start empty.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "beneficiary_declarations",
        sa.Column("declared_by", sa.String(64), nullable=False),
        sa.Column("declaration_id", sa.String(128), nullable=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("declared_leaf_index", sa.BigInteger, nullable=False),
        sa.Column("decided_leaf_index", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint(
            "declared_by", "declaration_id", name="pk_beneficiary_declarations"
        ),
    )
    op.create_index(
        "ix_beneficiary_declarations_policy",
        "beneficiary_declarations",
        ["insurer_id", "policy_id"],
    )
    op.create_table(
        "declared_beneficiaries",
        sa.Column("declared_by", sa.String(64), nullable=False),
        sa.Column("declaration_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("person_token", sa.String(64), nullable=False),
        sa.Column("relationship", sa.String(32), nullable=False),
        sa.Column("documents", sa.String(4096), nullable=False),
        sa.PrimaryKeyConstraint(
            "declared_by", "declaration_id", "position", name="pk_declared_beneficiaries"
        ),
    )
    op.create_index("ix_declared_beneficiaries_person", "declared_beneficiaries", ["person_token"])


def downgrade() -> None:
    op.drop_index("ix_declared_beneficiaries_person", table_name="declared_beneficiaries")
    op.drop_table("declared_beneficiaries")
    op.drop_index("ix_beneficiary_declarations_policy", table_name="beneficiary_declarations")
    op.drop_table("beneficiary_declarations")
