"""Enrolment codes: the one-time secret a new party trades for its client certificate.

The operator issues a code for one party (a role and a name) that expires; only its SHA-256 is
stored. A code carries ``limits.enrolment_code_bytes`` random bytes, so a fast hash is enough
(there is nothing to brute-force offline that a slow hash would protect), and the party may
try ``limits.enrolment_wrong_codes_max`` wrong codes before it is locked out. This module is
pure: storage is ``ledger/storage/enrolment_store.py``; the RPC is ``EnrolmentService``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets

from ledger import limits
from ledger.errors import InvalidArgument

__all__ = ["code_hash", "code_matches", "new_code", "parse_ttl"]

_TTL = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_TTL_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def new_code() -> str:
    """A fresh code: base32 without padding, so it can be read out and typed."""
    raw = secrets.token_bytes(limits.enrolment_code_bytes)
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def code_hash(code: str) -> str:
    """The stored form of ``code``: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def code_matches(code: str, stored_hash: str) -> bool:
    """Whether ``code`` hashes to ``stored_hash`` (compared in constant time)."""
    return hmac.compare_digest(code_hash(code), stored_hash)


def parse_ttl(text: str) -> dt.timedelta:
    """``30m``, ``24h`` or ``7d``; at most ``limits.enrolment_code_ttl_max``."""
    match = _TTL.match(text)
    if match is None:
        raise InvalidArgument(
            f"a time to live is a number and m, h or d (e.g. 24h): {text!r}", reason="TTL_INVALID"
        )
    ttl = dt.timedelta(**{_TTL_UNITS[match.group(2)]: int(match.group(1))})
    if ttl > limits.enrolment_code_ttl_max:
        raise InvalidArgument(
            f"time to live {text} is over {limits.enrolment_code_ttl_max.days} days",
            reason="TTL_TOO_LONG",
        )
    return ttl
