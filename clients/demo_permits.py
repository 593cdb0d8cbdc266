"""The demo's permits step (issue 10, task A): the residence authority issues a permit, and the
regulator's questions follow from it: who must the employer insure, who is uninsured, what does
it owe.

Called with one line from :func:`clients.demo.run_demo`, after the households are checked (the
family of ``iqama(0)`` is insured by then; its maid, ``iqama(15)``, is not).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc

from clients.insurer import InsurerClient
from clients.operator import OperatorClient
from clients.portal import civil_date
from clients.samples import iqama
from clients.verify import TrustedLog, verify_checkpoint
from ledger.pki import issue_into_directory
from ledger.signers import SignerRole
from ledger.signing import generate_keypair, parse_signer_key
from ledger.v1 import compliance_service_pb2 as compliance_pb
from ledger.v1 import compliance_service_pb2_grpc as compliance_grpc
from ledger.v1 import coverage_service_pb2 as coverage_pb
from ledger.v1 import coverage_service_pb2_grpc as coverage_grpc
from ledger.v1 import events_pb2, types_pb2

__all__ = ["RESIDENCE_AUTHORITY_ID", "show_permits"]

RESIDENCE_AUTHORITY_ID = "sa-residence"
ESTABLISHMENT = "7001234567"


def show_permits(
    say: Callable[[str], None],
    *,
    operator: OperatorClient,
    channel_as: Callable[[str], grpc.Channel],
    trusted: TrustedLog,
    keys_valid_from: dt.datetime,
    today: dt.date,
    pki: Path,
) -> None:
    """Issue a permit naming an uninsured maid; ask CheckEmployer and ComputeArrears."""
    issue_into_directory(pki, "authority", RESIDENCE_AUTHORITY_ID)
    signer = parse_signer_key(generate_keypair(RESIDENCE_AUTHORITY_ID)[0])
    operator.onboard(
        RESIDENCE_AUTHORITY_ID,
        signer.public_key,
        name="Residence authority (demo)",
        licence_number="-",
        valid_from=keys_valid_from,
        role=SignerRole.AUTHORITY,
    )
    authority = InsurerClient(
        channel_as(f"authority-{RESIDENCE_AUTHORITY_ID}"), signer=signer, log=trusted
    )
    holder, spouse, maid = authority.tokens.tokens([iqama(0), iqama(1), iqama(15)])
    entry = today
    event = events_pb2.Event(event_id="demo-permit-1", insurer_id=RESIDENCE_AUTHORITY_ID)
    event.occurred_at.FromDatetime(dt.datetime.now(dt.UTC))
    body = event.permit_issued
    body.permit_id, body.holder_token = "SA-DEMO-PERMIT-1", holder
    body.sponsor.organization.registration_number = ESTABLISHMENT
    body.sponsor.organization.country_code = "SA"
    for token, relationship in (
        (spouse, events_pb2.RELATIONSHIP_SPOUSE),
        (maid, events_pb2.RELATIONSHIP_DOMESTIC_WORKER),
    ):
        body.members.add(
            person_token=token, relationship=relationship, dependent_since=civil_date(entry)
        )
    body.entry_date.CopyFrom(civil_date(entry))
    body.start_date.CopyFrom(civil_date(entry))
    body.end_date.CopyFrom(civil_date(entry + dt.timedelta(days=364)))
    receipt = authority.submit(event)
    say(
        f"4b. residence authority {RESIDENCE_AUTHORITY_ID!r}: PermitIssued at leaf "
        f"{receipt.leaf_index}: worker {iqama(0).value} of establishment {ESTABLISHMENT}, entered "
        f"{entry}, with his spouse and a domestic worker: all three must be insured from {entry}"
    )
    purpose = types_pb2.ACCESS_PURPOSE_AUDIT
    first, last = entry, entry + dt.timedelta(days=89)
    answer = coverage_grpc.CoverageServiceStub(channel_as("portal-SA")).CheckEmployer(
        coverage_pb.CheckEmployerRequest(
            establishment_number=ESTABLISHMENT,
            jurisdiction="SA",
            from_date=civil_date(first),
            through_date=civil_date(last),
            purpose=purpose,
        ),
        timeout=30,
    )
    verify_checkpoint(answer.basis.checkpoint, trusted)
    say(f"   CheckEmployer {ESTABLISHMENT} {first}..{last} (portal/SA, checkpoint verified):")
    for person in answer.people:
        runs = [f"{run.reason} {run.days} days" for run in person.intervals if not run.covered] or [
            "insured every day"
        ]
        kind = events_pb2.Relationship.Name(person.relationship).removeprefix("RELATIONSHIP_")
        say(f"     {person.person.value} ({kind.lower()}): {', '.join(runs)}")
    arrears = compliance_grpc.ComplianceServiceStub(channel_as("operator-operator"))
    figures = arrears.ComputeArrears(
        compliance_pb.ComputeArrearsRequest(
            establishment_number=ESTABLISHMENT,
            jurisdiction="SA",
            from_date=civil_date(first),
            through_date=civil_date(last),
            activity="CONSTRUCTION",
            region="RIYADH",
            purpose=purpose,
        ),
        timeout=30,
    )
    say(
        f"   ComputeArrears: arrears {figures.total_arrears.amount_minor}, fines "
        f"{figures.total_fines.amount_minor} {figures.total_arrears.currency_code} minor units "
        f"(schedule {figures.schedule_version}, {figures.average_basis} average "
        f"{figures.average_annual_premium.amount_minor})"
    )
    for line in figures.people:
        say(f"     {line.person.value}: {'; '.join(line.explanation[1:])}")
