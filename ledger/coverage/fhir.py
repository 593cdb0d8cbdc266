"""FHIR R4 (4.0.1) JSON export of coverage answers: Coverage and CoverageEligibilityResponse.

Pure functions from the :mod:`ledger.coverage.model` values to JSON-able dicts; no FHIR library is
imported here (the tests validate the output with ``fhir.resources`` 6.4, whose models are R4).

Naming. Every system and extension URL is ``base`` followed by ``:``-separated segments, so with the
default ``base="urn:policy-ledger"``:

* ``urn:policy-ledger:person-id:{country}:{id_type}`` -- a person's identifier (PersonRef);
* ``urn:policy-ledger:insurer`` -- an insurer's ledger id (the payor Organization);
* ``urn:policy-ledger:insurer:{insurer_id}:policy`` -- a policy id, scoped by its insurer;
* ``urn:policy-ledger:relationship`` -- the ledger's relationship codes (``domestic_worker``...);
* ``urn:policy-ledger:household-check`` -- the household check a response answers;
* ``urn:policy-ledger:extension:...`` -- the extensions below.

Segments taken from data (country, id type, insurer id) are percent-encoded so the result is a URI.
People, insurers and the request are *logical* references (``Reference.identifier`` with a
``type``): the ledger holds no Patient or Organization resources to point at.

Extensions (all ours, all valid R4: ``url`` plus either one ``value[x]`` or sub-extensions):

* ``{base}:extension:leaf-index`` on ``Coverage``, repeated, ``valueUnsignedInt``: the log entries
  the record was derived from, in the record's order.
* ``{base}:extension:end-reason`` on ``Coverage``, ``valueCode``: why coverage ends on ``end``
  (``PERIOD_END``, ``FINAL_EXIT``, ``MEMBER_REMOVED``...).
* ``{base}:extension:ledger-proof`` on ``CoverageEligibilityResponse``, complex: ``treeSize``
  (``valueUnsignedInt``), ``checkpoint`` (``valueBase64Binary``: the signed C2SP checkpoint note of
  that size, standard base64) and ``leafIndex`` (``valueUnsignedInt``, repeated, ascending). With
  them a client can fetch inclusion proofs for every entry the answer relied on against a
  checkpoint it verifies itself. R4 has no 64-bit integer type: an index or size above 2**31 - 1
  raises ``ValueError`` rather than being written wrongly.
* ``{base}:extension:member-verdict`` on each ``CoverageEligibilityResponse.insurance``, complex:
  ``reason`` (``valueCode``, a :class:`~ledger.coverage.model.BlockReason` value), ``detail``
  (``valueString``, the operator sentence), ``relationship`` (``valueCode``, the ledger's
  relationship) and ``otherCoverage`` (``valueReference``, repeated) for the member's further
  coverage records, so that every contained resource is referenced (R4 invariant dom-3).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any
from urllib.parse import quote

from ledger.coverage.model import (
    CoverageRecord,
    HouseholdVerdict,
    MemberVerdict,
    PersonRef,
    Relationship,
)

__all__ = ["coverage_resource", "eligibility_response", "to_json"]

SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
COVERAGE_SELFPAY = "http://terminology.hl7.org/CodeSystem/coverage-selfpay"
URI_SYSTEM = "urn:ietf:rfc:3986"
"""The FHIR identifier system whose values are URIs: the ledger is identified by ``base``."""

_MAX_UNSIGNED_INT = 2**31 - 1

# Ledger relationship -> (subscriber-relationship code, its display).
_FHIR_RELATIONSHIP: dict[Relationship, tuple[str, str]] = {
    Relationship.SELF: ("self", "Self"),
    Relationship.SPOUSE: ("spouse", "Spouse"),
    Relationship.CHILD: ("child", "Child"),
    Relationship.PARENT: ("parent", "Parent"),
    Relationship.DOMESTIC_WORKER: ("other", "Other"),
    Relationship.OTHER: ("other", "Other"),
}


def coverage_resource(record: CoverageRecord, *, base: str = "urn:policy-ledger") -> dict[str, Any]:
    """One coverage record as an R4 ``Coverage``.

    ``id`` is ``cov-`` and 40 hex digits of SHA-256 over the insurer, policy, person and start day:
    deterministic, within FHIR's ``[A-Za-z0-9\\-.]{1,64}``, and distinct for the two runs of a
    person removed from and re-added to one policy. ``status`` is ``cancelled`` when the record was
    cancelled or the member removed early, or does not count on the day asked about (an
    instalment unpaid past its grace, a suspended insurer: the ``not-counting`` extension says
    which), else ``active``. ``period`` holds civil dates; a FHIR
    date ``end`` includes the whole day, matching the record's inclusive ``end``. ``subscriber`` is
    the sponsor, ``beneficiary`` the person, ``payor`` the insurer, ``class`` the plan. The leaf
    indexes and the end reason are extensions (see the module docstring).
    """
    _require(record.insurer_id, "insurer_id")
    _require(record.policy_id, "policy_id")
    _require(record.plan, "plan")
    extensions: list[dict[str, Any]] = [
        {"url": _ext(base, "leaf-index"), "valueUnsignedInt": _unsigned(i, "leaf index")}
        for i in record.leaf_indexes
    ]
    if record.end_reason:
        extensions.append({"url": _ext(base, "end-reason"), "valueCode": record.end_reason})
    if record.not_counting:
        extensions.append({"url": _ext(base, "not-counting"), "valueCode": record.not_counting})
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": _hash_id(
            "cov", record.insurer_id, record.policy_id, record.person.key, record.start.isoformat()
        ),
        "identifier": [
            {
                "system": f"{base}:insurer:{_segment(record.insurer_id)}:policy",
                "value": record.policy_id,
            }
        ],
        "status": "cancelled" if record.cancelled or record.not_counting else "active",
        "subscriber": _person(base, record.sponsor),
        "beneficiary": _person(base, record.person),
        "relationship": _relationship(base, record.relationship),
        "period": {"start": record.start.isoformat(), "end": record.end.isoformat()},
        "payor": [
            {
                "type": "Organization",
                "identifier": {"system": f"{base}:insurer", "value": record.insurer_id},
            }
        ],
        "class": [
            {
                "type": {"coding": [{"system": COVERAGE_CLASS, "code": "plan", "display": "Plan"}]},
                "value": record.plan,
            }
        ],
    }
    if extensions:
        resource["extension"] = extensions
    return resource


def eligibility_response(
    verdict: HouseholdVerdict, *, created: dt.datetime, base: str = "urn:policy-ledger"
) -> dict[str, Any]:
    """The household check as an R4 ``CoverageEligibilityResponse``.

    * ``patient`` is the sponsor; ``servicedPeriod`` is ``as_of`` .. ``through`` (inclusive days);
      ``purpose`` is ``["validation"]``, ``status`` ``active``, ``outcome`` ``complete``;
      ``created`` must be timezone-aware and is written in UTC (``ValueError`` otherwise).
    * ``insurer`` (1..1 in R4) is the ledger itself as the responding organization: a logical
      reference whose identifier is ``base`` under the ``urn:ietf:rfc:3986`` system.
    * ``request`` (1..1 in R4) is a logical reference to the portal's question, identified under
      ``{base}:household-check`` by ``{sponsor key}/{as_of}/{through}``.
    * ``disposition`` says "Renewable: ..." or "Not renewable: ..." listing each blocking member
      with their relationship and ``detail``.
    * One ``insurance`` entry per member, in the verdict's order: ``inforce`` is
      ``member.covered``; ``coverage`` references a ``contained`` Coverage built by
      :func:`coverage_resource` -- the record in force on ``as_of`` if any, else the first; the
      member's other records are referenced from the member-verdict extension, which also
      carries the block reason and ``detail``. ``benefitPeriod`` is ``as_of`` .. ``covered_until``
      when the member is covered on ``as_of``.
    * A member with no coverage record still needs a Coverage (``insurance.coverage`` is 1..1 and
      ``Coverage.payor`` 1..*): it gets a contained placeholder Coverage with ``status`` ``draft``
      (never an in-force instance, so nothing counting ``active`` coverage counts it), ``type``
      ``pay`` from the coverage-selfpay code system (no insurer: the person would pay), the member
      as ``beneficiary`` and ``payor``, the sponsor as ``subscriber`` and no ``period``.
      Its ``id`` is ``none-`` and a hash of the person.
    * ``error`` is not used: a blocked member is a complete answer, not a processing error.
    * The ledger proof (tree size, checkpoint, leaf indexes) is an extension, so the answer can be
      verified against the log (see the module docstring).
    """
    if created.tzinfo is None or created.utcoffset() is None:
        raise ValueError("created must be timezone-aware")
    contained: list[dict[str, Any]] = []
    seen: set[str] = set()
    insurance: list[dict[str, Any]] = []
    for member in verdict.members:
        resources = [coverage_resource(r, base=base) for r in member.coverages]
        if not resources:
            resources = [_no_coverage(base, member, verdict.sponsor)]
        for res in resources:
            if res["id"] not in seen:
                seen.add(res["id"])
                contained.append(res)
        primary = _primary_index(member, verdict.as_of)
        ids = [res["id"] for res in resources]
        insurance.append(
            _insurance_entry(
                base, member, verdict.as_of, ids[primary], ids[:primary] + ids[1 + primary :]
            )
        )

    resource: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "id": _hash_id(
            "elig",
            verdict.sponsor.key,
            verdict.as_of.isoformat(),
            verdict.through.isoformat(),
            str(verdict.tree_size),
        ),
        "extension": [_proof_extension(base, verdict)],
        "status": "active",
        "purpose": ["validation"],
        "patient": _person(base, verdict.sponsor),
        "servicedPeriod": {
            "start": verdict.as_of.isoformat(),
            "end": verdict.through.isoformat(),
        },
        "created": created.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "request": {
            "type": "CoverageEligibilityRequest",
            "identifier": {
                "system": f"{base}:household-check",
                "value": f"{verdict.sponsor.key}/{verdict.as_of}/{verdict.through}",
            },
        },
        "outcome": "complete",
        "disposition": _disposition(verdict),
        "insurer": {
            "type": "Organization",
            "identifier": {"system": URI_SYSTEM, "value": base},
            "display": "policy-ledger",
        },
    }
    if contained:
        resource["contained"] = contained
    if insurance:
        resource["insurance"] = insurance
    return resource


def to_json(resource: dict[str, Any]) -> str:
    """Canonical JSON text: sorted keys, no whitespace, non-ASCII kept as is (encode as UTF-8).

    NaN and infinities are refused (FHIR JSON has none).
    """
    return json.dumps(
        resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _insurance_entry(
    base: str, member: MemberVerdict, as_of: dt.date, coverage_id: str, other_ids: list[str]
) -> dict[str, Any]:
    verdict_ext: list[dict[str, Any]] = [{"url": "reason", "valueCode": member.reason.value}]
    if member.detail:
        verdict_ext.append({"url": "detail", "valueString": member.detail})
    verdict_ext.append({"url": "relationship", "valueCode": member.relationship.value})
    verdict_ext.extend(
        {"url": "otherCoverage", "valueReference": {"reference": f"#{i}", "type": "Coverage"}}
        for i in other_ids
    )
    entry: dict[str, Any] = {
        "extension": [{"url": _ext(base, "member-verdict"), "extension": verdict_ext}],
        "coverage": {"reference": f"#{coverage_id}", "type": "Coverage"},
        "inforce": member.covered,
    }
    if member.covered_until is not None:
        entry["benefitPeriod"] = {
            "start": as_of.isoformat(),
            "end": member.covered_until.isoformat(),
        }
    return entry


def _primary_index(member: MemberVerdict, as_of: dt.date) -> int:
    """The record in force on ``as_of``, else the first (0 also for the placeholder)."""
    for i, record in enumerate(member.coverages):
        if record.start <= as_of <= record.end:
            return i
    return 0


def _no_coverage(base: str, member: MemberVerdict, sponsor: PersonRef) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": _hash_id("none", member.person.key),
        "status": "draft",
        "type": {
            "coding": [{"system": COVERAGE_SELFPAY, "code": "pay", "display": "Pay"}],
            "text": "no coverage on the ledger",
        },
        "subscriber": _person(base, sponsor),
        "beneficiary": _person(base, member.person),
        "relationship": _relationship(base, member.relationship),
        "payor": [_person(base, member.person)],
    }


def _proof_extension(base: str, verdict: HouseholdVerdict) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "treeSize", "valueUnsignedInt": _unsigned(verdict.tree_size, "tree size")}
    ]
    if verdict.checkpoint:
        parts.append(
            {
                "url": "checkpoint",
                "valueBase64Binary": base64.b64encode(verdict.checkpoint).decode("ascii"),
            }
        )
    parts.extend(
        {"url": "leafIndex", "valueUnsignedInt": _unsigned(i, "leaf index")}
        for i in verdict.leaf_indexes
    )
    return {"url": _ext(base, "ledger-proof"), "extension": parts}


def _disposition(verdict: HouseholdVerdict) -> str:
    span = f"from {verdict.as_of} through {verdict.through}"
    total = len(verdict.members)
    if verdict.renewable:
        return f"Renewable: all {total} household members are covered {span}."
    blocked = [m for m in verdict.members if not m.covered]
    if not blocked:
        return f"Not renewable: the household is not covered {span}."
    reasons = "; ".join(
        f"{m.person.key} ({m.relationship.value.replace('_', ' ')}): "
        f"{m.detail or m.reason.value.replace('_', ' ')}"
        for m in blocked
    )
    count = f"{len(blocked)} of {total} household members are"
    return f"Not renewable: {count} not covered {span}: {reasons}."


def _person(base: str, person: PersonRef) -> dict[str, Any]:
    _require(person.value, "person id value")
    return {
        "type": "Patient",
        "identifier": {
            "system": f"{base}:person-id:{_segment(person.country)}:{_segment(person.id_type)}",
            "value": person.value,
        },
    }


def _relationship(base: str, relationship: Relationship) -> dict[str, Any]:
    code, display = _FHIR_RELATIONSHIP[relationship]
    text = relationship.value.replace("_", " ")
    return {
        "coding": [
            {"system": SUBSCRIBER_RELATIONSHIP, "code": code, "display": display},
            {"system": f"{base}:relationship", "code": relationship.value, "display": text},
        ],
        "text": text,
    }


def _ext(base: str, name: str) -> str:
    return f"{base}:extension:{name}"


def _segment(text: str) -> str:
    return quote(text, safe="")


def _hash_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:40]}"


def _unsigned(value: int, what: str) -> int:
    if not 0 <= value <= _MAX_UNSIGNED_INT:
        raise ValueError(f"{what} {value} does not fit FHIR unsignedInt (0..{_MAX_UNSIGNED_INT})")
    return value


def _require(text: str, what: str) -> None:
    if not text or text != text.strip():
        raise ValueError(f"{what} must be non-empty without surrounding whitespace: {text!r}")
