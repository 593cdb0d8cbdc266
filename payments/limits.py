"""The renewal payments' limits, in one place (the ledger's own are in ``ledger/limits.py``).

Requests over a limit are refused at the boundary (``payments/service.py``) before any work;
stored texts are cut to their column's width.
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "GATEWAY_RESULT_BYTES_MAX",
    "IDEMPOTENCY_DAYS",
    "IDEMPOTENCY_KEY_CHARS",
    "JURISDICTIONS_KEPT",
    "MESSAGE_CHARS_MAX",
    "NOTIFICATION_BYTES_MAX",
    "QUOTE_TTL",
    "RECEIPTS_KEPT",
    "RECORD_TIMEOUT_SECONDS",
    "REFERENCE_CHARS_MAX",
    "REFUND_REASON_CHARS_MAX",
    "RENEWAL_DAYS_MAX",
    "URL_CHARS_MAX",
]

IDEMPOTENCY_DAYS = 30
"""Idempotency keys are kept at least this long."""
IDEMPOTENCY_KEY_CHARS = range(8, 129)
"""An idempotency key has 8 to 128 printable characters."""
QUOTE_TTL = dt.timedelta(minutes=30)
"""How long a quote may be paid."""
RENEWAL_DAYS_MAX = 3 * 366
"""The longest renewal period a quote covers."""
GATEWAY_RESULT_BYTES_MAX = 8 * 1024
"""What a portal may relay from the gateway (CompletePayment.gateway_result)."""
NOTIFICATION_BYTES_MAX = 64 * 1024
"""A gateway's server-to-server notification body."""
URL_CHARS_MAX = 2000
"""A return or redirect URL (``payments.redirect_url``)."""
MESSAGE_CHARS_MAX = 500
"""A payment's message and a history row's reason (``payments.message``)."""
REFERENCE_CHARS_MAX = 128
"""A gateway reference (``payments.gateway_reference``)."""
REFUND_REASON_CHARS_MAX = 256
"""A refund's reason as the FeeRefunded entry carries it."""
RECORD_TIMEOUT_SECONDS = 120.0
"""How long the saga waits for the ledger to append (or admit) a FeeCollected / FeeRefunded
entry; past it the outcome is unknown: UNAVAILABLE, and the payment stays ``recording``."""
JURISDICTIONS_KEPT = 10_000
"""Quotes and payments whose jurisdiction a server process remembers for the authorization of
the calls that name them (about a megabyte; the least recently used go first)."""
RECEIPTS_KEPT = 256
"""Receipts the ledger recorder keeps for the answers that carry them (each is taken by one
answer moments after its append; one whose answer never comes is dropped past this)."""
