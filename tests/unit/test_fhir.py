"""FHIR R4 export: every resource validates with fhir.resources' R4 models and R4's own rules."""

from __future__ import annotations

import ast
import base64
import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import fhir.resources as fhir_resources
import pytest
from fhir.resources.coverage import Coverage
from fhir.resources.coverageeligibilityresponse import CoverageEligibilityResponse
from pydantic import ValidationError

from ledger.coverage import fhir
from ledger.coverage.model import (
    BlockReason,
    CoverageRecord,
    HouseholdVerdict,
    MemberVerdict,
    PersonRef,
    Relationship,
)

AS_OF = dt.date(2026, 1, 10)
THROUGH = dt.date(2026, 12, 31)
CREATED = dt.datetime(2026, 1, 10, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
CHECKPOINT = (
    "ledger.example/log\n42\nq83ZR0l9DqVb6VfTL6hO0eQ6c4LY1U2Pj0iIJv0hQ0w=\n\n\u2014 sig\n".encode()
)
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"

SPONSOR = PersonRef("RESIDENCE_ID", "2123456789", "SA")
SPOUSE = PersonRef("RESIDENCE_ID", "2123456790", "SA")
CHILD = PersonRef("BORDER_NUMBER", "3001234567", "SA")
WORKER = PersonRef("PASSPORT", "P1234567", "PH")
PARENT = PersonRef("RESIDENCE_ID", "2123456791", "SA")

# R4 required bindings (FinancialResourceStatusCodes, EligibilityResponsePurpose, RemittanceOutcome)
# and the subscriber-relationship codes: fhir.resources checks types, not code values.
FINANCIAL_STATUS = {"active", "cancelled", "draft", "entered-in-error"}
PURPOSES = {"auxiliary-billing", "benefits", "discovery", "validation"}
OUTCOMES = {"queued", "complete", "error", "partial"}
RELATIONSHIP_CODES = {"child", "parent", "spouse", "common", "other", "self", "injured"}


def record(
    person: PersonRef,
    relationship: Relationship,
    *,
    insurer: str = "INS-001",
    policy: str = "POL-2026-0001",
    start: dt.date = dt.date(2026, 1, 1),
    end: dt.date = dt.date(2026, 12, 31),
    cancelled: bool = False,
    end_reason: str = "PERIOD_END",
    leaves: tuple[int, ...] = (3, 17),
) -> CoverageRecord:
    return CoverageRecord(
        person=person,
        sponsor=SPONSOR,
        relationship=relationship,
        insurer_id=insurer,
        policy_id=policy,
        plan="ENHANCED-B",
        start=start,
        end=end,
        cancelled=cancelled,
        end_reason=end_reason,
        leaf_indexes=leaves,
    )


def member(
    person: PersonRef,
    relationship: Relationship,
    records: tuple[CoverageRecord, ...],
    *,
    reason: BlockReason = BlockReason.COVERED,
    detail: str = "",
    covered_until: dt.date | None = THROUGH,
) -> MemberVerdict:
    return MemberVerdict(
        person=person,
        relationship=relationship,
        covered=reason is BlockReason.COVERED,
        reason=reason,
        detail=detail,
        covered_until=covered_until,
        coverages=records,
    )


def renewable_household() -> HouseholdVerdict:
    return HouseholdVerdict(
        sponsor=SPONSOR,
        as_of=AS_OF,
        through=THROUGH,
        renewable=True,
        members=(
            member(SPONSOR, Relationship.SELF, (record(SPONSOR, Relationship.SELF),)),
            member(SPOUSE, Relationship.SPOUSE, (record(SPOUSE, Relationship.SPOUSE),)),
            member(CHILD, Relationship.CHILD, (record(CHILD, Relationship.CHILD),)),
        ),
        tree_size=42,
        checkpoint=CHECKPOINT,
        leaf_indexes=(3, 17),
    )


def blocked_household() -> HouseholdVerdict:
    cancelled = record(
        SPOUSE,
        Relationship.SPOUSE,
        end=dt.date(2026, 3, 1),
        cancelled=True,
        end_reason="FINAL_EXIT",
        leaves=(3, 17, 25),
    )
    worker = record(
        WORKER, Relationship.DOMESTIC_WORKER, insurer="INS 002/GCC", policy="DW-9", leaves=(8,)
    )
    gap = (
        record(PARENT, Relationship.PARENT, end=dt.date(2026, 5, 31), leaves=(3,)),
        record(PARENT, Relationship.PARENT, start=dt.date(2026, 7, 1), leaves=(30,)),
    )
    return HouseholdVerdict(
        sponsor=SPONSOR,
        as_of=AS_OF,
        through=THROUGH,
        renewable=False,
        members=(
            member(SPONSOR, Relationship.SELF, (record(SPONSOR, Relationship.SELF),)),
            member(
                SPOUSE,
                Relationship.SPOUSE,
                (cancelled,),
                reason=BlockReason.CANCELLED,
                detail="cancelled on 2026-03-01 (FINAL_EXIT)",
                covered_until=dt.date(2026, 3, 1),
            ),
            member(
                CHILD,
                Relationship.CHILD,
                (),
                reason=BlockReason.NO_POLICY,
                detail="لا توجد وثيقة تأمين: no policy on 2026-01-10",
                covered_until=None,
            ),
            member(WORKER, Relationship.DOMESTIC_WORKER, (worker,)),
            member(
                PARENT,
                Relationship.PARENT,
                gap,
                reason=BlockReason.GAP,
                detail="not covered 2026-06-01..2026-06-30",
                covered_until=dt.date(2026, 5, 31),
            ),
        ),
        tree_size=42,
        checkpoint=CHECKPOINT,
        leaf_indexes=(3, 8, 17, 25, 30),
    )


# --- R4 rules the model classes do not enforce ----------------------------------------------


def walk(node: Any) -> Any:
    """Every dict in a JSON tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def check_r4_rules(resource: dict[str, Any]) -> None:
    """Cardinalities of required complex elements, required bindings, ext-1, dom-2/3, base64."""
    for node in walk(resource):
        if "valueBase64Binary" in node:
            assert is_base64(node["valueBase64Binary"]), node
        if "url" in node and ("extension" in node or any(k.startswith("value") for k in node)):
            has_value = any(k.startswith("value") for k in node)
            assert has_value != ("extension" in node), f"ext-1 violated: {node}"
        for value in node.values():
            assert value not in ("", [], {}), f"empty value in {node}"
    if resource["resourceType"] == "Coverage":
        check_coverage_rules(resource)
        return
    assert resource["resourceType"] == "CoverageEligibilityResponse"
    assert resource["status"] in FINANCIAL_STATUS
    assert resource["purpose"] and set(resource["purpose"]) <= PURPOSES
    assert resource["outcome"] in OUTCOMES
    for key in ("patient", "created", "request", "insurer"):
        assert resource[key], key
    contained = {c["id"]: c for c in resource.get("contained", [])}
    for c in contained.values():
        assert "contained" not in c, "dom-2"
        check_coverage_rules(c)
    outside = {k: v for k, v in resource.items() if k != "contained"}
    local_refs = {
        n["reference"][1:] for n in walk(outside) if str(n.get("reference", "")).startswith("#")
    }
    assert local_refs == set(contained), "dom-3: contained and #references must match"
    for entry in resource.get("insurance", []):
        assert entry["coverage"]["reference"][1:] in contained


def check_coverage_rules(resource: dict[str, Any]) -> None:
    assert resource["status"] in FINANCIAL_STATUS
    assert resource["beneficiary"]
    assert resource["payor"]
    codes = [
        c["code"]
        for c in resource["relationship"]["coding"]
        if c["system"] == SUBSCRIBER_RELATIONSHIP
    ]
    assert len(codes) == 1 and codes[0] in RELATIONSHIP_CODES


def ext_value(extensions: list[Any], url: str) -> list[Any]:
    """The value[x] of every (model) extension with this url."""
    out = []
    for e in extensions or []:
        if e.url == url:
            values = {k: v for k, v in e.dict().items() if k.startswith("value")}
            assert len(values) == 1
            out.append(next(iter(values.values())))
    return out


def sub_extensions(extension: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for sub in extension.extension:
        values = [v for k, v in sub.dict().items() if k.startswith("value")]
        out.setdefault(sub.url, []).append(values[0])
    return out


def parse_response(resource: dict[str, Any]) -> CoverageEligibilityResponse:
    check_r4_rules(resource)
    return CoverageEligibilityResponse.parse_obj(json.loads(fhir.to_json(resource)))


# --- tests ----------------------------------------------------------------------------------


def test_the_validator_is_r4() -> None:
    assert fhir_resources.__fhir_version__ == "4.0.1"


def test_module_does_not_import_the_fhir_library() -> None:
    tree = ast.parse(Path(fhir.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith(("fhir", "pydantic"))}


def test_coverage_validates_with_its_fields() -> None:
    rec = record(SPOUSE, Relationship.SPOUSE)
    resource = fhir.coverage_resource(rec)
    check_r4_rules(resource)
    cov = Coverage.parse_obj(resource)

    assert cov.status == "active"
    assert cov.period.start == dt.date(2026, 1, 1)
    assert cov.period.end == dt.date(2026, 12, 31)
    assert next((c.system, c.code) for c in cov.relationship.coding) == (
        SUBSCRIBER_RELATIONSHIP,
        "spouse",
    )
    assert cov.identifier[0].system == "urn:policy-ledger:insurer:INS-001:policy"
    assert cov.identifier[0].value == "POL-2026-0001"
    assert cov.beneficiary.type == "Patient"
    assert cov.beneficiary.identifier.system == "urn:policy-ledger:person-id:SA:RESIDENCE_ID"
    assert cov.beneficiary.identifier.value == "2123456790"
    assert cov.subscriber.identifier.value == SPONSOR.value
    assert cov.payor[0].type == "Organization"
    assert cov.payor[0].identifier.value == "INS-001"
    assert cov.class_fhir[0].type.coding[0].system == (
        "http://terminology.hl7.org/CodeSystem/coverage-class"
    )
    assert cov.class_fhir[0].type.coding[0].code == "plan"
    assert cov.class_fhir[0].value == "ENHANCED-B"
    assert ext_value(cov.extension, "urn:policy-ledger:extension:leaf-index") == [3, 17]
    assert ext_value(cov.extension, "urn:policy-ledger:extension:end-reason") == ["PERIOD_END"]


def test_coverage_id_is_deterministic_and_a_fhir_id() -> None:
    a = fhir.coverage_resource(record(WORKER, Relationship.DOMESTIC_WORKER, insurer="INS 002/x"))
    b = fhir.coverage_resource(record(WORKER, Relationship.DOMESTIC_WORKER, insurer="INS 002/x"))
    other = fhir.coverage_resource(record(WORKER, Relationship.DOMESTIC_WORKER, policy="P-2"))
    assert a["id"] == b["id"] != other["id"]
    assert 1 <= len(a["id"]) <= 64
    assert Coverage.parse_obj(a).id == a["id"]
    # Data in a system URI is percent-encoded.
    assert a["identifier"][0]["system"] == "urn:policy-ledger:insurer:INS%20002%2Fx:policy"


def test_cancelled_record_and_custom_base() -> None:
    rec = record(SPOUSE, Relationship.SPOUSE, cancelled=True, end_reason="FINAL_EXIT")
    resource = fhir.coverage_resource(rec, base="urn:gcc-ledger")
    check_r4_rules(resource)
    cov = Coverage.parse_obj(resource)
    assert cov.status == "cancelled"
    assert cov.beneficiary.identifier.system == "urn:gcc-ledger:person-id:SA:RESIDENCE_ID"
    assert ext_value(cov.extension, "urn:gcc-ledger:extension:end-reason") == ["FINAL_EXIT"]


@pytest.mark.parametrize(
    ("relationship", "code"),
    [
        (Relationship.SELF, "self"),
        (Relationship.SPOUSE, "spouse"),
        (Relationship.CHILD, "child"),
        (Relationship.PARENT, "parent"),
        (Relationship.DOMESTIC_WORKER, "other"),
        (Relationship.OTHER, "other"),
    ],
)
def test_relationship_codes(relationship: Relationship, code: str) -> None:
    cov = Coverage.parse_obj(fhir.coverage_resource(record(WORKER, relationship)))
    hl7 = [c for c in cov.relationship.coding if c.system == SUBSCRIBER_RELATIONSHIP]
    assert [c.code for c in hl7] == [code]
    if relationship is Relationship.DOMESTIC_WORKER:
        assert cov.relationship.text == "domestic worker"
        assert "domestic_worker" in [c.code for c in cov.relationship.coding]


def test_renewable_household() -> None:
    verdict = renewable_household()
    resource = fhir.eligibility_response(verdict, created=CREATED)
    resp = parse_response(resource)

    assert resp.status == "active"
    assert resp.purpose == ["validation"]
    assert resp.outcome == "complete"
    assert resp.created == dt.datetime(2026, 1, 10, 6, 30, tzinfo=dt.UTC)
    assert resource["created"] == "2026-01-10T06:30:00Z"
    assert resp.servicedPeriod.start == AS_OF
    assert resp.servicedPeriod.end == THROUGH
    assert resp.patient.identifier.value == SPONSOR.value
    assert resp.insurer.identifier.system == "urn:ietf:rfc:3986"
    assert resp.insurer.identifier.value == "urn:policy-ledger"
    assert resp.request.type == "CoverageEligibilityRequest"
    assert resp.disposition.startswith("Renewable: all 3")
    assert [i.inforce for i in resp.insurance] == [True, True, True]
    assert all(i.benefitPeriod.end == THROUGH for i in resp.insurance)

    contained = {c.id: c for c in resp.contained}
    assert len(contained) == 3
    beneficiaries = [
        contained[i.coverage.reference[1:]].beneficiary.identifier.value for i in resp.insurance
    ]
    assert beneficiaries == [SPONSOR.value, SPOUSE.value, CHILD.value]
    assert all(c.status == "active" for c in contained.values())

    (proof,) = [e for e in resp.extension if e.url == "urn:policy-ledger:extension:ledger-proof"]
    parts = sub_extensions(proof)
    assert parts["treeSize"] == [42]
    assert base64.b64decode(resource["extension"][0]["extension"][1]["valueBase64Binary"]) == (
        CHECKPOINT
    )
    assert parts["leafIndex"] == [3, 17]


def test_blocked_household() -> None:
    verdict = blocked_household()
    resource = fhir.eligibility_response(verdict, created=CREATED)
    resp = parse_response(resource)

    assert [i.inforce for i in resp.insurance] == [True, False, False, True, False]
    contained = {c.id: c for c in resp.contained}
    primary = [contained[i.coverage.reference[1:]] for i in resp.insurance]

    # The cancelled spouse: the cancelled record, its reason and detail.
    assert primary[1].status == "cancelled"
    assert primary[1].period.end == dt.date(2026, 3, 1)
    spouse = sub_extensions(resp.insurance[1].extension[0])
    assert spouse["reason"] == ["cancelled"]
    assert spouse["detail"] == ["cancelled on 2026-03-01 (FINAL_EXIT)"]
    assert resp.insurance[1].benefitPeriod.end == dt.date(2026, 3, 1)

    # The child with no policy: a draft self-pay placeholder, never in force.
    child = primary[2]
    assert child.status == "draft"
    assert child.period is None
    assert child.type.coding[0].code == "pay"
    assert child.beneficiary.identifier.value == CHILD.value
    assert child.payor[0].identifier.value == CHILD.value
    assert resp.insurance[2].benefitPeriod is None
    assert sub_extensions(resp.insurance[2].extension[0])["reason"] == ["no_policy"]

    # The domestic worker: covered, coded "other".
    worker = primary[3]
    assert worker.status == "active"
    assert next(c.code for c in worker.relationship.coding) == "other"
    assert worker.relationship.text == "domestic worker"

    # The parent with a gap: the record in force on as_of is primary, the other is referenced.
    parent = sub_extensions(resp.insurance[4].extension[0])
    assert primary[4].period.end == dt.date(2026, 5, 31)
    (other,) = parent["otherCoverage"]
    assert contained[other["reference"][1:]].period.start == dt.date(2026, 7, 1)

    # Who blocks, and why, in the disposition.
    assert resp.disposition.startswith("Not renewable: 3 of 5")
    for who in (SPOUSE, CHILD, PARENT):
        assert who.key in resp.disposition
    assert WORKER.key not in resp.disposition
    assert "cancelled on 2026-03-01 (FINAL_EXIT)" in resp.disposition
    assert len(contained) == 6


def test_household_with_no_members_is_valid() -> None:
    verdict = HouseholdVerdict(SPONSOR, AS_OF, THROUGH, False, (), 1, CHECKPOINT, ())
    resource = fhir.eligibility_response(verdict, created=CREATED)
    assert "insurance" not in resource
    assert "contained" not in resource
    parse_response(resource)


def mutate(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("contained", 0, "period", "end"), "2026-02-30"),
        (("contained", 0, "id"), "cov_not_a_fhir_id"),
        (("contained", 0, "status"), "active "),
        (("contained", 0, "kind"), "insurance"),  # an R5 Coverage element, unknown to R4
        (("insurance", 0, "inforce"), "perhaps"),
        (("servicedPeriod", "start"), "10/01/2026"),
        (("created",), "2026-01-10T09:30:00+25:00"),
        (("extension", 0, "extension", 0, "valueUnsignedInt"), -1),
        (("purpose",), "validation"),
    ],
)
def test_malformed_resources_are_rejected(path: tuple[Any, ...], value: Any) -> None:
    good = fhir.eligibility_response(blocked_household(), created=CREATED)
    CoverageEligibilityResponse.parse_obj(good)
    with pytest.raises(ValidationError):
        CoverageEligibilityResponse.parse_obj(mutate(good, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("contained", 0, "status"), "in-force"),  # not in FinancialResourceStatusCodes
        (("outcome",), "done"),
        (("contained", 2, "payor"), []),
        (("insurance", 1, "coverage", "reference"), "#missing"),
        (("extension", 0, "extension", 1, "valueBase64Binary"), "not base64!"),
        (("insurance", 0, "extension", 0, "valueString"), "both a value and extensions"),
    ],
)
def test_r4_rules_the_model_classes_miss_are_checked(path: tuple[Any, ...], value: Any) -> None:
    good = fhir.eligibility_response(blocked_household(), created=CREATED)
    check_r4_rules(good)
    with pytest.raises(AssertionError):
        check_r4_rules(mutate(good, path, value))


def test_output_is_deterministic_canonical_json() -> None:
    first = fhir.to_json(fhir.eligibility_response(blocked_household(), created=CREATED))
    second = fhir.to_json(fhir.eligibility_response(blocked_household(), created=CREATED))
    assert first == second
    parsed = json.loads(first)
    assert fhir.to_json(parsed) == first
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == first
    assert "لا توجد وثيقة تأمين" in first  # kept as text, not \u escapes
    assert json.loads(first.encode("utf-8").decode("utf-8")) == parsed
    # The same answer built again gives the same ids.
    again = fhir.eligibility_response(blocked_household(), created=CREATED)
    assert again["id"] == parsed["id"]
    assert [c["id"] for c in again["contained"]] == [c["id"] for c in parsed["contained"]]


def test_to_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        fhir.to_json({"resourceType": "Basic", "x": float("nan")})


def test_naive_created_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        fhir.eligibility_response(renewable_household(), created=dt.datetime(2026, 1, 10))


def test_indexes_beyond_unsigned_int_are_refused() -> None:
    with pytest.raises(ValueError, match="unsignedInt"):
        fhir.coverage_resource(record(SPOUSE, Relationship.SPOUSE, leaves=(2**31,)))
