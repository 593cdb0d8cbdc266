"""The operator grants one person more people to resolve (docs/privacy.md, "A person asking for
tokens"; AdminService.GetBeneficiaryResolutions / GrantBeneficiaryResolutions).

A person (role beneficiary) may obtain the tokens of ``limits.beneficiary_people_resolved_max``
people other than themselves, ever. Slots spent on typos or a large family are never given
back; without a way to raise one person's bound, that person would be stuck. Support staff
read a person's count and bound, then the operator grants more, with a reason: each grant is
a row that is never deleted, and the bound is the base one plus the sum of the grants, itself
bounded (``limits.beneficiary_resolutions_granted_max``). A grant is idempotent by its request
id, chosen by the caller: an operator whose answer was lost retries with the same id and the
same request, and is answered without a second grant.

This module checks what the operator asks (:meth:`ResolutionGrants.grant`'s step (1)); the
store (:class:`ledger.storage.vault_store.VaultStore`) checks it against the vault and writes
it under the person's lock.
"""

from __future__ import annotations

from ledger import limits
from ledger.clock import Clock
from ledger.errors import FieldViolation, check, refuse_violations
from ledger.events import check_person_token
from ledger.storage.resolution_grants import BeneficiaryResolutions, ResolutionGrant
from ledger.storage.vault_store import VaultStore

__all__ = ["ResolutionGrants", "check_grant_request"]


def check_grant_request(person_token: str, additional: int, reason: str, request_id: str) -> None:
    """Raise INVALID_ARGUMENT ``GRANT_REQUEST_INVALID`` with a violation per bad field: the
    token's form, ``additional`` within 1..``limits.beneficiary_resolutions_grant_max``, a
    reason given, printable and at most ``limits.resolution_grant_reason_chars_max``, a
    request id given, printable and ``limits.resolution_grant_request_id_chars_min`` to
    ``limits.resolution_grant_request_id_chars_max`` characters (as payments' idempotency
    keys)."""
    violations: list[FieldViolation] = []
    check_person_token(violations, "person_token", person_token)
    grant_max = limits.beneficiary_resolutions_grant_max
    if not 1 <= additional <= grant_max:
        violations.append(FieldViolation("additional", f"{additional} is outside 1..{grant_max}"))
    reason_max = limits.resolution_grant_reason_chars_max
    if not reason.strip():
        violations.append(FieldViolation("reason", "required: why the person needs more"))
    elif len(reason) > reason_max:
        violations.append(FieldViolation("reason", f"{len(reason)} characters, over {reason_max}"))
    elif not reason.isprintable():
        violations.append(FieldViolation("reason", "must not contain control characters"))
    _check_request_id(violations, request_id)
    refuse_violations(violations, "grant", "GRANT_REQUEST_INVALID")


def _check_request_id(violations: list[FieldViolation], request_id: str) -> None:
    shortest = limits.resolution_grant_request_id_chars_min
    longest = limits.resolution_grant_request_id_chars_max
    if not request_id:
        violations.append(
            FieldViolation("request_id", "required: the call's idempotency key, kept to retry")
        )
    elif not shortest <= len(request_id) <= longest:
        violations.append(
            FieldViolation(
                "request_id", f"{len(request_id)} characters, outside {shortest}..{longest}"
            )
        )
    elif not request_id.isprintable():
        violations.append(FieldViolation("request_id", "must not contain control characters"))


class ResolutionGrants:
    """A person's resolutions, and the operator's grants of more."""

    def __init__(self, store: VaultStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def resolutions(self, person_token: str) -> BeneficiaryResolutions:
        """How many people ``person_token`` resolved and may resolve; writes nothing.
        (1) the token's form (INVALID_ARGUMENT), (2) issued by the vault (NOT_FOUND), (3) read."""
        violations: list[FieldViolation] = []
        check_person_token(violations, "person_token", person_token)  # (1)
        refuse_violations(violations, "request", "GRANT_REQUEST_INVALID")
        return self._store.resolutions(person_token)  # (2), (3)

    def grant(
        self, person_token: str, additional: int, reason: str, request_id: str, granted_by: str
    ) -> BeneficiaryResolutions:
        """Grant ``person_token`` ``additional`` more people, for ``reason``, by the caller
        ``granted_by`` (a SPIFFE ID), once per ``request_id``; their resolutions with the grant
        (the last of grants, or, for a repeat of a request id, as they are now).
        (1) the request (:func:`check_grant_request`), (2) the store's checks and the row
        (:meth:`VaultStore.grant_resolutions`). A refusal or a repeat writes nothing."""
        check(bool(granted_by), "a grant names who made it")
        check_grant_request(person_token, additional, reason, request_id)  # (1)
        grant = ResolutionGrant(
            additional=additional,
            reason=reason,
            granted_by=granted_by,
            granted_at=self._clock.now(),
            request_id=request_id,
        )
        return self._store.grant_resolutions(person_token, grant)  # (2)
