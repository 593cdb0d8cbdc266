"""``make run``'s Sudan step (task D, issue 11; docs/funds.md): the Zakat chamber, a funder in
its own right, enrols a cohort with the national health insurance fund, pays this month's
contributions, and a member is covered today; next month, not yet paid, the same member is not
covered (NON_PAYMENT, naming the cohort and the funder). The totals per state follow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc

from clients.fund import FundClient
from clients.funder import cohort_events, contribution_paid, sdg
from clients.insurer import InsurerClient
from clients.operator import OperatorClient
from clients.portal import PortalClient
from clients.verify import TrustedLog
from ledger.funds.rules import first_of_month, last_of_month
from ledger.pki import issue_into_directory
from ledger.signers import SignerRole
from ledger.signing import generate_keypair, parse_signer_key
from ledger.v1 import types_pb2

__all__ = ["FUNDER_ID", "run_sudan_step"]

FUNDER_ID = "zakat-chamber"
FUND_ID = "sd-nhif"
_MEMBERS = 300
_STATES = ("SD-KH", "SD-GZ", "SD-KA")


def _sudanese(number: int) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=f"4{number:010d}", country_code="SD"
    )


def run_sudan_step(
    operator: OperatorClient,
    pki: Path,
    channel_as: Callable[[str], grpc.Channel],
    *,
    trusted: TrustedLog,
    keys_valid_from: dt.datetime,
    say: Callable[[str], None],
) -> None:
    """The step: a key and an mTLS certificate (in ``pki``) for the funder, then the story."""
    funder_signer = parse_signer_key(generate_keypair(FUNDER_ID)[0])
    issue_into_directory(pki, "funder", FUNDER_ID)
    operator.register_key(
        FUNDER_ID, funder_signer.public_key, role=SignerRole.FUNDER, valid_from=keys_valid_from
    )
    funder = InsurerClient(channel_as(f"funder-{FUNDER_ID}"), signer=funder_signer, log=trusted)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    start = first_of_month(today)
    end = last_of_month(start + dt.timedelta(days=31 * 11))  # twelve months
    people = [_sudanese(number) for number in range(_MEMBERS)]
    tokens = funder.tokens.tokens(people)
    cohort = f"ZC-{start:%Y-%m}"
    monthly = sdg(1_500)
    events = cohort_events(
        FUNDER_ID,
        cohort,
        [(token, _STATES[n % len(_STATES)]) for n, token in enumerate(tokens)],
        (start, end),
        monthly,
        fund_id=FUND_ID,
        occurred_at=now,
    )
    receipts = list(funder.submit_stream(events))
    say(
        f"8. funder: in Sudan, the Zakat chamber ({FUNDER_ID!r}) enrolled cohort {cohort} of "
        f"{_MEMBERS} beneficiaries in 3 states with fund {FUND_ID!r}, {start}..{end}, in "
        f"{len(receipts)} signed CohortEnrolled events on one stream (docs/funds.md)"
    )
    month = (start, last_of_month(start))
    paid = funder.submit(
        contribution_paid(
            FUNDER_ID, cohort, month, monthly, _MEMBERS, occurred_at=now, reference="M1"
        )
    )
    say(
        f"   it paid {month[0]:%B %Y} for all of them: SDG "
        f"{monthly.amount_minor * _MEMBERS / 100:,.2f} (ContributionPaid at leaf "
        f"{paid.leaf_index})"
    )
    portal = PortalClient(channel_as("auditor-auditor"), log=trusted)
    member = people[0]
    next_month = month[1] + dt.timedelta(days=1)
    for day in (today, next_month):
        answer = portal.check_household(member, [], as_of=day, through=day).response
        verdict = answer.members[0]
        payer = verdict.coverages[0].funder_id if verdict.coverages else "-"
        state = "COVERED" if verdict.covered else "NOT COVERED"
        say(f"   member {member.value} on {day}: {state} (payer {payer}): {verdict.detail}")
    totals = FundClient(channel_as("auditor-auditor"), log=trusted).totals(
        FUNDER_ID, (start.year, start.month), (next_month.year, next_month.month)
    )
    for total in totals.response.totals:
        say(
            f"   totals {total.state_code} {total.month.year}-{total.month.month:02d}: "
            f"{total.beneficiaries_covered}/{total.beneficiaries_enrolled} covered, paid SDG "
            f"{total.paid.amount_minor / 100:,.2f}, owed SDG {total.owed.amount_minor / 100:,.2f}"
        )
    say(f"   (totals at tree size {totals.checkpoint.size}, checkpoint verified)")
