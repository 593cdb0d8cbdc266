"""A fund issues one-time enrolment codes for the people it insures (issue 11, item 4).

The operator issues codes on the database (``policy-ledger enrol issue``); a fund (an insurer)
asks the server for one (``BeneficiaryService/IssueEnrolmentCode``) for a person it covers as
SELF, and delivers it out of band. The person then enrols as ``beneficiary/<person token>``
(ledger/enrolment.py). docs/beneficiaries.md, section 1.
"""

from __future__ import annotations

import datetime as dt

from ledger.clock import Clock
from ledger.coverage.person_record import PersonRecordReader
from ledger.enrolment import new_code, parse_ttl
from ledger.errors import FieldViolation, PermissionDenied, refuse_violations
from ledger.events import check_person_token
from ledger.storage.enrolment_store import EnrolmentStore

__all__ = ["FundEnrolment"]

_DEFAULT_TTL = "24h"


class FundEnrolment:
    """A fund issues a one-time enrolment code for a person it insures (issue 11, item 4).

    (1) the token's form and the ttl (INVALID_ARGUMENT); (2) an insurer caller covers the person
    as SELF today, else PERMISSION_DENIED ``PERSON_NOT_INSURED_BY_CALLER`` (the operator may
    issue for anyone); (3) the code is stored (its hash) for ``beneficiary/<token>``. A refusal
    stores nothing.
    """

    def __init__(self, reader: PersonRecordReader, store: EnrolmentStore, clock: Clock) -> None:
        self._reader = reader
        self._store = store
        self._clock = clock

    def issue(
        self, caller: tuple[str, str] | None, person_token: str, ttl_text: str
    ) -> tuple[str, dt.datetime]:
        """The code and its expiry, once (1)-(3) hold."""
        violations: list[FieldViolation] = []
        check_person_token(violations, "person_token", person_token)  # (1)
        refuse_violations(violations)
        ttl = parse_ttl(ttl_text or _DEFAULT_TTL)
        if caller is None or (  # (2)
            caller[0] != "operator" and not self._reader.insured_by(caller[1], person_token)
        ):
            raise PermissionDenied(
                "a fund issues enrolment codes only for the people it insures (covered as SELF "
                "by one of its policies today)",
                reason="PERSON_NOT_INSURED_BY_CALLER",
                metadata={"person_token": person_token},
            )
        now = self._clock.now()
        code = new_code()
        self._store.issue("beneficiary", person_token, code, now, ttl)  # (3)
        return code, now + ttl
