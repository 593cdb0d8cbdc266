"""The payments' schema on its own branch: quotes, payments, refunds, idempotency keys, gateway
notifications and the append-only payment history (``payments/tables.py``).

These tables were created by the ledger's revisions 0003 and 0005 until they moved here; on a
database migrated then, the tables that exist are kept as they are (with their rows) and only
what is missing is created. ``payment_history`` is append-only in the database itself: UPDATE and
DELETE (and TRUNCATE on PostgreSQL) are refused by triggers, like the ledger's entries.

Revision ID: payments_0001
Revises: (base of branch ``payments``)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "payments_0001"
down_revision = None
branch_labels = ("payments",)
depends_on = None

APPEND_ONLY_TABLES = ("payment_history",)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "quotes" not in existing:
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
    if "payments" not in existing:
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
    if "refunds" not in existing:
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
    if "idempotency_keys" not in existing:
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
    if "gateway_notifications" not in existing:
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
        op.create_index(
            "ix_gateway_notifications_payment_id", "gateway_notifications", ["payment_id"]
        )
    if "payment_history" not in existing:
        op.create_table(
            "payment_history",
            sa.Column(
                "history_id",
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                autoincrement=True,
            ),
            sa.Column("payment_id", sa.String(64), nullable=False),
            sa.Column("refund_id", sa.String(128), nullable=False),
            sa.Column("from_state", sa.String(16), nullable=False),
            sa.Column("to_state", sa.String(16), nullable=False),
            sa.Column("why", sa.String(500), nullable=False),
            sa.Column("gateway_reference", sa.String(128), nullable=False),
            sa.Column("leaf_index", sa.BigInteger, nullable=True),
            sa.Column("at_us", sa.BigInteger, nullable=False),
            sa.PrimaryKeyConstraint("history_id", name="pk_payment_history"),
        )
        op.create_index("ix_payment_history_payment_id", "payment_history", ["payment_id"])
    for table in APPEND_ONLY_TABLES:
        _create_append_only_triggers(table)


def downgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        _drop_append_only_triggers(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS payments_refuse_change()")
    op.drop_index("ix_payment_history_payment_id", table_name="payment_history")
    op.drop_table("payment_history")
    op.drop_index("ix_gateway_notifications_payment_id", table_name="gateway_notifications")
    op.drop_table("gateway_notifications")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_payments_state", table_name="payments")
    op.drop_table("payments")
    op.drop_table("quotes")


def _create_append_only_triggers(table: str) -> None:
    """Refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) in the database itself (with
    the payments' own trigger function: this branch needs nothing of the ledger's)."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION payments_refuse_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
        "USING ERRCODE = 'restrict_violation'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION payments_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION payments_refuse_change()"
    )


def _drop_append_only_triggers(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{action}")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
