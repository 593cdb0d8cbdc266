"""The renewal payments' tables (mutable state; the ledger keeps the signed record).

They are the payments' own: their own ``metadata`` (the ledger's naming convention) and their
own Alembic branch, ``payments`` (``payments/migrations/versions``), which the ledger's
migration runner applies with its own (entry-point group ``policy_ledger.migrations``).
``payment_history`` is append-only, enforced by the database's triggers. Instants are integer
microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from ledger.storage.tables import metadata as ledger_metadata

__all__ = [
    "APPEND_ONLY_TABLES",
    "gateway_notifications",
    "idempotency_keys",
    "metadata",
    "payment_history",
    "payments",
    "quotes",
    "refunds",
]

metadata = MetaData(naming_convention=ledger_metadata.naming_convention)
"""The payments' tables (and only them)."""

APPEND_ONLY_TABLES = ("payment_history",)
"""Tables whose rows are never changed or deleted (database triggers refuse it)."""

quotes = Table(
    "quotes",
    metadata,
    Column("quote_id", String(64), primary_key=True),
    Column("jurisdiction", String(2), nullable=False),
    Column("sponsor_key", String(64), nullable=False),
    Column("quote_json", Text, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
)
"""Quotes as answered (lines, schedule version, period), JSON; a payment is for one quote."""

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(64), primary_key=True),
    Column("quote_id", String(64), nullable=False, unique=True),
    Column("gateway", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("captured_minor", BigInteger, nullable=False),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("gateway_reference", String(128), nullable=False),
    Column("redirect_url", String(2000), nullable=False),
    Column("leaf_index", BigInteger, nullable=True),
    Column("message", String(500), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Index("ix_payments_state", "state"),
)
"""One payment per quote; ``payment_id`` is the merchant reference the gateway knows.
``state``: started, pending, authorized, captured, recorded, declined, voided, unknown."""

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(128), primary_key=True),
    Column("payment_id", String(64), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("gateway_reference", String(128), nullable=False),
    Column("leaf_index", BigInteger, nullable=True),
    Column("created_at_us", BigInteger, nullable=False),
)
"""Refunds by their reference (derived from the caller's idempotency key)."""

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("idempotency_key", String(128), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("result_id", String(128), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)
"""Idempotency keys, kept at least 30 days, with the SHA-256 of the canonical request and the
request itself (to name the differing field when a key is reused for another request)."""

gateway_notifications = Table(
    "gateway_notifications",
    metadata,
    Column(
        "notification_id",
        BigInteger().with_variant(Integer, "sqlite"),  # SQLite: an INTEGER key is the rowid
        primary_key=True,
        autoincrement=True,
    ),
    Column("payment_id", String(64), nullable=False, index=True),
    Column("gateway", String(64), nullable=False),
    Column("verified", String(5), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
)
"""Server-to-server notifications, stored verbatim before they are acknowledged (``verified``:
``true``/``false``), and what portals relayed from the gateway (``portal``, never trusted)."""

payment_history = Table(
    "payment_history",
    metadata,
    Column(
        "history_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("payment_id", String(64), nullable=False, index=True),
    Column("refund_id", String(128), nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("why", String(500), nullable=False),
    Column("gateway_reference", String(128), nullable=False),
    Column("leaf_index", BigInteger, nullable=True),
    Column("at_us", BigInteger, nullable=False),
)
"""Every state change of a payment (``refund_id`` empty) or of one of its refunds, appended by
:func:`payments.states.move_payment` / ``move_refund`` in the change's own transaction.
Append-only (revision ``payments_0001``'s triggers)."""
