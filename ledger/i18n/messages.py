"""The human texts' message ids: English templates with ``{named}`` placeholders.

Each id is a gettext msgid of the ``ledger`` domain (catalogues in ``ledger/i18n/locales``).
:func:`N_` only marks a string for ``pybabel extract``; a :class:`Message` pairs an id with its
arguments, and :func:`ledger.i18n.render` translates and fills it. A placeholder is replaced by
its argument as is (a string) or as a date in the reader's language and calendar (a
``datetime.date``); a translation must use exactly the placeholders of its id (a test checks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CARD_SUMMARY",
    "CERTIFICATE_STATUS_NOTE",
    "CERTIFICATE_SUMMARY",
    "DOCUMENT_CANCELLED",
    "DOCUMENT_CURRENT",
    "DOCUMENT_EXPIRED",
    "DOCUMENT_REPLACED",
    "DOCUMENT_REVOKED",
    "DOCUMENT_STATUS_NOTE",
    "HIJRI_DATE",
    "HIJRI_MONTHS",
    "MESSAGE_IDS",
    "N_",
    "REGISTRATION_SUMMARY",
    "VERDICT_CANCELLED",
    "VERDICT_COHORT_NOT_PAID",
    "VERDICT_COVERED_THROUGH",
    "VERDICT_ENDS_ON",
    "VERDICT_GAP",
    "VERDICT_INSURER_SUSPENDED",
    "VERDICT_LAST_ENDED",
    "VERDICT_NON_PAYMENT",
    "VERDICT_NO_POLICY",
    "VERDICT_STARTS_LATER",
    "VERDICT_TRANSFER_GAP",
    "Message",
]

Argument = str | int | dt.date


def N_(message_id: str) -> str:  # noqa: N802 - the gettext convention pybabel extracts
    """Mark ``message_id`` for extraction; return it unchanged."""
    return message_id


@dataclass(frozen=True)
class Message:
    """A message id and the values of its placeholders."""

    message_id: str
    arguments: Mapping[str, Argument] = field(default_factory=dict)


# Household verdicts (ledger/coverage/reader.py), one per documented reason.
VERDICT_COVERED_THROUGH = N_("covered through {date}")
VERDICT_INSURER_SUSPENDED = N_("insurer '{insurer}' is suspended from {date}")
VERDICT_STARTS_LATER = N_("not covered on {date}; coverage starts on {start}")
VERDICT_LAST_ENDED = N_(
    "no coverage on {date}; the last ended on {end} ({reason}, policy '{policy}')"
)
VERDICT_NO_POLICY = N_("no policy covers {date}")
VERDICT_GAP = N_("not covered from {start} until {end}")
VERDICT_ENDS_ON = N_("coverage ends on {date} (policy '{policy}')")
VERDICT_CANCELLED = N_("coverage cancelled from {date} ({reason}, policy '{policy}')")
VERDICT_TRANSFER_GAP = N_(
    "not covered from {start} until {end}: policy '{policy}' replaced policy '{replaced}' of "
    "'{insurer}' and started late"
)
VERDICT_NON_PAYMENT = N_(
    "policy '{policy}' does not count from {date}: an instalment due then is unpaid past the "
    "grace period"
)

# Coverage certificates (ledger/coverage/certificate.py).
CERTIFICATE_SUMMARY = N_(
    "{person} is covered on {date} by insurer '{insurer}', policy '{policy}', plan '{plan}', "
    "from {start} to {end}."
)
CERTIFICATE_STATUS_NOTE = N_(
    "Signed by the ledger at log size {tree_size}. Verify the signature offline; the ledger may "
    "have cancelled or replaced this coverage since: check its current status online."
)

# Dates in the Hijri (Umm al-Qura) calendar: hijridate's English month names are the ids.
HIJRI_DATE = N_("{day} {month} {year} AH")
HIJRI_MONTHS = (
    N_("Muharram"),
    N_("Safar"),
    N_("Rabi' al-Awwal"),
    N_("Rabi' al-Thani"),
    N_("Jumada al-Ula"),
    N_("Jumada al-Akhirah"),
    N_("Rajab"),
    N_("Sha'ban"),
    N_("Ramadan"),
    N_("Shawwal"),
    N_("Dhu al-Qa'dah"),
    N_("Dhu al-Hijjah"),
)

# Task E (cards): insurance cards, registration certificates, document status (docs/cards.md).
CARD_SUMMARY = N_(
    "Insurance card {card} of {person}, issued by '{insurer}' on {issued}, valid until "
    "{valid_until}."
)
REGISTRATION_SUMMARY = N_(
    "{person} is registered with '{insurer}' under policy '{policy}' since {registered}. This "
    "certificate is valid until {valid_until}."
)
DOCUMENT_STATUS_NOTE = N_(
    "Signed by the ledger at log size {tree_size}. Verify the signature offline; the ledger may "
    "have replaced, revoked or cancelled it since: check its current status online."
)
DOCUMENT_CURRENT = N_("Current on {date} (entry {leaf}); valid until {valid_until}.")
DOCUMENT_EXPIRED = N_("Expired: it was valid until {valid_until}.")
DOCUMENT_REPLACED = N_("Replaced by card {replaced_by} (entry {leaf}): no longer valid.")
DOCUMENT_REVOKED = N_("Revoked (entry {leaf}): no longer valid.")
DOCUMENT_CANCELLED = N_("Cancelled since it was issued (entry {leaf}): no longer valid.")
# Task D (issue 11): funded cohorts (ledger/funds/, docs/funds.md).
VERDICT_COHORT_NOT_PAID = N_(
    "cohort '{cohort}' does not count from {date}: its funder '{funder}' has not paid the "
    "contribution for that month"
)

MESSAGE_IDS: tuple[str, ...] = (
    VERDICT_COVERED_THROUGH,
    VERDICT_INSURER_SUSPENDED,
    VERDICT_STARTS_LATER,
    VERDICT_LAST_ENDED,
    VERDICT_NO_POLICY,
    VERDICT_GAP,
    VERDICT_ENDS_ON,
    VERDICT_CANCELLED,
    VERDICT_NON_PAYMENT,
    VERDICT_TRANSFER_GAP,
    CERTIFICATE_SUMMARY,
    CERTIFICATE_STATUS_NOTE,
    HIJRI_DATE,
    *HIJRI_MONTHS,
    CARD_SUMMARY,
    REGISTRATION_SUMMARY,
    DOCUMENT_STATUS_NOTE,
    DOCUMENT_CURRENT,
    DOCUMENT_EXPIRED,
    DOCUMENT_REPLACED,
    DOCUMENT_REVOKED,
    DOCUMENT_CANCELLED,
    VERDICT_COHORT_NOT_PAID,
)
"""Every message id the code uses; each catalogue translates exactly these."""
