"""Person tokens: 130 random bits rendered as ``pt_`` and 26 lower-case base32 characters.

A token is drawn from :mod:`secrets`, never derived from the identifier: a residence number has
about 10^9 possible values and a Kuwaiti civil ID encodes a birth date, so any function of the
identifier alone (a hash, an HMAC whose key leaks) could be reversed by trying them all.
"""

from __future__ import annotations

import base64
import re
import secrets

__all__ = ["PERSON_TOKEN_CHARS", "PERSON_TOKEN_PREFIX", "is_person_token", "new_person_token"]

PERSON_TOKEN_PREFIX = "pt_"  # noqa: S105 (a prefix, not a secret)
_RANDOM_BYTES = 20
"""160 random bits drawn; the 26 base32 characters kept carry 130 of them."""
_BODY_CHARS = 26
PERSON_TOKEN_CHARS = len(PERSON_TOKEN_PREFIX) + _BODY_CHARS
"""Every token has exactly this many characters (29)."""
_PATTERN = re.compile(rf"{PERSON_TOKEN_PREFIX}[a-z2-7]{{{_BODY_CHARS}}}")


def new_person_token() -> str:
    """A fresh random token (at least 128 bits of :func:`secrets.token_bytes`)."""
    body = base64.b32encode(secrets.token_bytes(_RANDOM_BYTES)).decode("ascii").lower()
    return PERSON_TOKEN_PREFIX + body[:_BODY_CHARS]


def is_person_token(text: str) -> bool:
    """Whether ``text`` has a token's form (not whether the vault issued it)."""
    return _PATTERN.fullmatch(text) is not None
