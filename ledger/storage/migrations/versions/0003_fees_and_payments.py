"""Renewal fees: the fee_refunds projection, and the payments' own tables.

The payments tables belong to the ``payments`` package (``payments/tables.py``), which shares
the ledger's metadata so one migration history creates the whole schema.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fee_refunds",
        sa.Column("leaf_index", sa.BigInteger, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("refund_reference", sa.String(128), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_fee_refunds"),
        sa.UniqueConstraint(
            "insurer_id", "refund_reference", name="uq_fee_refunds_insurer_reference"
        ),
    )
    op.create_index("ix_fee_refunds_insurer_id_policy", "fee_refunds", ["insurer_id", "policy_id"])
    op.create_table(
        "quotes",
        sa.Column("quote_id", sa.String(64)),
        sa.Column("jurisdiction", sa.String(2), nullable=False),
        sa.Column("sponsor_key", sa.String(64), nullable=False),
        sa.Column("quote_json", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("quote_id", name="pk_quotes"),
    )
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(64)),
        sa.Column("quote_id", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("captured_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False),
        sa.Column("gateway_reference", sa.String(128), nullable=False),
        sa.Column("redirect_url", sa.String(2000), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=True),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payments"),
        sa.UniqueConstraint("quote_id", name="uq_payments_quote_id"),
    )
    op.create_index("ix_payments_state", "payments", ["state"])
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.String(128)),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gateway_reference", sa.String(128), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("refund_id", name="pk_refunds"),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("result_id", sa.String(128), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name="pk_idempotency_keys"),
    )
    op.create_table(
        "gateway_notifications",
        sa.Column(
            "notification_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            autoincrement=True,
        ),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("verified", sa.String(5), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("received_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name="pk_gateway_notifications"),
    )
    op.create_index("ix_gateway_notifications_payment_id", "gateway_notifications", ["payment_id"])


def downgrade() -> None:
    op.drop_table("gateway_notifications")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_payments_state", table_name="payments")
    op.drop_table("payments")
    op.drop_table("quotes")
    op.drop_index("ix_fee_refunds_insurer_id_policy", table_name="fee_refunds")
    op.drop_table("fee_refunds")
