"""Sudan (issue 11, items 1-2; docs/funds.md) end to end on a real server, on SQLite and
PostgreSQL: the Zakat chamber, a funder in its own right, enrols a cohort of 2,500 beneficiaries
in one SubmitEvents stream (10 CohortEnrolled events of 250), pays their contributions, and a
member is covered while the month is paid, not covered (NON_PAYMENT, naming the cohort and the
funder) when it is not. FundService totals per funder, state and month equal the totals this
test recomputes from the raw log entries. Every refusal over gRPC writes nothing."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import inspect, text

from clients.auditor import AuditorClient
from clients.certificate import CertificateClient
from clients.errors import ClientError
from clients.fund import FundClient
from clients.funder import cohort_events, contribution_paid, sdg
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.entry import decode_entry
from ledger.events import decode_event
from ledger.funds.states import sudan_states
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine
from ledger.v1 import coverage_service_pb2, events_pb2, types_pb2
from tests import clock
from tests import clock as test_clock
from tests.conftest import ServerHandle, onboard, start_server_thread

ZAKAT, OTHER, FUND = "zakat-chamber", "other-funder", "sd-nhif"
COHORT = "ZC-2026-A"
MEMBERS = 2_500
"""Beneficiaries streamed in make test (``make bench`` streams 25,000)."""
START, END = dt.date(2026, 1, 1), dt.date(2027, 12, 31)
MONTHLY = sdg(1_500)  # SDG 15.00 a month per beneficiary (illustrative)
LATE = 5
"""Beneficiaries enrolled after the first payment: owed for the months paid before them."""


def _sudanese(serial: int) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=f"2{serial:010d}", country_code="SD"
    )


@dataclass
class Sudan:
    server: ServerHandle
    database_url: str
    trusted: TrustedLog
    zakat: InsurerClient
    other: InsurerClient
    people: list[types_pb2.PersonId]
    states: list[str]
    channels: list[grpc.Channel]

    def channel(self, role: str, name: str) -> grpc.Channel:
        channel = self.server.channel(role, name)
        self.channels.append(channel)
        return channel

    def tree_size(self) -> int:
        auditor = AuditorClient(self.channel("auditor", "auditor"), log=self.trusted)
        return auditor.checkpoint().size

    def written(self) -> dict[str, int]:
        engine = create_ledger_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return {
                    table: int(connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar())
                    for table in inspect(connection).get_table_names()
                    if table != "access_records"  # reads are recorded; refusals write nothing else
                }
        finally:
            engine.dispose()


@pytest.fixture
def sudan(
    database_url: str, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path
) -> Iterator[Sudan]:
    server = start_server_thread(database_url, log_signer, tmp_path)
    channels: list[grpc.Channel] = []
    try:
        trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
        signers = {name: Ed25519Signer.generate(name) for name in (ZAKAT, OTHER)}
        for name, signer in signers.items():
            onboard(server, operator_signer, name, signer, role=SignerRole.FUNDER)
        clients = {}
        for name, signer in signers.items():
            channel = server.channel("funder", name)
            channels.append(channel)
            clients[name] = InsurerClient(channel, signer=signer, log=trusted)
        codes = sorted(sudan_states())
        people = [_sudanese(n) for n in range(MEMBERS + LATE)]
        states = [codes[n % len(codes)] for n in range(MEMBERS + LATE)]
        yield Sudan(
            server, database_url, trusted, clients[ZAKAT], clients[OTHER], people, states, channels
        )
    finally:
        for channel in channels:
            channel.close()
        server.stop()


def _submit_all(client: InsurerClient, events: list[events_pb2.Event]) -> None:
    results = list(client.submit_stream(events))
    refused = [r for r in results if isinstance(r, ClientError)]
    assert not refused, refused[:3]
    assert len(results) == len(events)


def _household(sudan: Sudan, who: types_pb2.PersonId, day: dt.date) -> object:
    portal = PortalClient(sudan.channel("auditor", "auditor"), log=sudan.trusted)
    answer = portal.check_household(who, [], through=day, as_of=day)
    return answer.response.members[0]


def test_a_funded_cohort_from_enrolment_to_totals(sudan: Sudan) -> None:
    # (1) The Zakat chamber enrols 2,500 beneficiaries in one stream of 10 events of 250.
    tokens = sudan.zakat.tokens.tokens(sudan.people)
    pairs = list(zip(tokens, sudan.states, strict=True))
    now = clock.now()
    events = cohort_events(
        ZAKAT, COHORT, pairs[:MEMBERS], (START, END), MONTHLY, fund_id=FUND, occurred_at=now
    )
    assert len(events) == MEMBERS // limits.cohort_beneficiaries_per_event_max
    _submit_all(sudan.zakat, events)
    # (2) It pays January to June for them; five more join; it pays July to November for all.
    paid = contribution_paid(
        ZAKAT,
        COHORT,
        (START, dt.date(2026, 6, 30)),
        MONTHLY,
        MEMBERS,
        occurred_at=now,
        reference="H1",
    )
    sudan.zakat.submit(paid)
    late = cohort_events(
        ZAKAT, COHORT, pairs[MEMBERS:], (START, END), MONTHLY, fund_id=FUND, occurred_at=now
    )
    late[0].event_id = f"{COHORT}-enrol-late"
    _submit_all(sudan.zakat, late)
    sudan.zakat.submit(
        contribution_paid(
            ZAKAT,
            COHORT,
            (dt.date(2026, 7, 1), dt.date(2026, 11, 30)),
            MONTHLY,
            MEMBERS + LATE,
            occurred_at=now,
            reference="H2",
        )
    )

    # (3) A member is covered in a paid month, with the funder as payer; not in an unpaid one.
    member = _household(sudan, sudan.people[0], dt.date(2026, 3, 15))
    assert member.covered
    [coverage] = member.coverages
    assert (coverage.funder_id, coverage.insurer_id, coverage.policy_id) == (ZAKAT, FUND, COHORT)
    unpaid = _household(sudan, sudan.people[0], dt.date(2026, 12, 10))
    assert not unpaid.covered
    assert unpaid.verdict == coverage_service_pb2.COVERAGE_VERDICT_NON_PAYMENT
    assert COHORT in unpaid.detail and ZAKAT in unpaid.detail
    late_member = sudan.people[MEMBERS]
    assert not _household(sudan, late_member, dt.date(2026, 3, 15)).covered
    assert _household(sudan, late_member, dt.date(2026, 8, 15)).covered
    portal = PortalClient(sudan.channel("auditor", "auditor"), log=sudan.trusted)
    answer = portal.get_coverage(sudan.people[1], dt.date(2026, 12, 10))
    assert [c.not_counting for c in answer.response.coverages] == ["NON_PAYMENT"]

    # A paid day has a coverage certificate that verifies offline; an unpaid day has none.
    certificates = CertificateClient(
        sudan.channel("auditor", "auditor"), log_key=sudan.server.log_verifier_key
    )
    [certificate] = certificates.get(sudan.people[0], dt.date(2026, 3, 15))
    assert certificate.statement is not None
    assert certificate.coverage.funder_id == ZAKAT
    with pytest.raises(ClientError) as none:
        certificates.get(sudan.people[0], dt.date(2026, 12, 10))
    assert none.value.code == grpc.StatusCode.NOT_FOUND

    # (4) The totals, from the projections, equal the totals recomputed from the raw entries.
    funds = FundClient(sudan.channel("auditor", "auditor"), log=sudan.trusted)
    answer_totals = funds.totals(ZAKAT, (2026, 1), (2027, 12))
    response = answer_totals.response
    assert response.tree_size == sudan.tree_size()
    served = {
        (t.funder_id, t.state_code, t.month.year, t.month.month): (
            t.beneficiaries_enrolled,
            t.beneficiaries_covered,
            t.paid.amount_minor,
            t.owed.amount_minor,
            tuple(t.leaf_indexes),
        )
        for t in response.totals
    }
    assert served == _totals_from_the_log(sudan, response.tree_size, today=test_clock.now().date())
    khartoum_june = served[(ZAKAT, "SD-KH", 2026, 6)]
    assert khartoum_june[1] <= khartoum_june[0]
    assert sum(v[2] for v in served.values()) == MONTHLY.amount_minor * (
        MEMBERS * 6 + (MEMBERS + LATE) * 5
    )
    # A funder reads its own totals, not another's.
    own = FundClient(sudan.channel("funder", ZAKAT), log=sudan.trusted)
    assert own.totals(ZAKAT, (2026, 1), (2026, 2)).response.totals
    before = sudan.written()
    with pytest.raises(ClientError) as refused:
        FundClient(sudan.channel("funder", OTHER), log=sudan.trusted).totals(
            ZAKAT, (2026, 1), (2026, 2)
        )
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert sudan.written() == before


def _totals_from_the_log(
    sudan: Sudan, tree_size: int, *, today: dt.date
) -> dict[tuple[str, str, int, int], tuple[int, int, int, int, tuple[int, ...]]]:
    """The totals recomputed from the entries alone, as an auditor would (docs/funds.md)."""
    auditor = AuditorClient(sudan.channel("auditor", "auditor"), log=sudan.trusted)
    members: list[tuple[str, int, str, int]] = []  # cohort, position, state, leaf
    cohorts: dict[str, tuple[str, int, dt.date, dt.date, int]] = {}
    paid: dict[str, list[tuple[dt.date, dt.date, int, int]]] = defaultdict(list)
    for leaf, data in auditor.entries(0, tree_size):
        event = decode_event(decode_entry(data).envelope.payload)
        kind = event.WhichOneof("body")
        if kind == "cohort_enrolled":
            body = event.cohort_enrolled
            start = dt.date(body.period_start.year, body.period_start.month, 1)
            end = dt.date(body.period_end.year, body.period_end.month, body.period_end.day)
            cohorts.setdefault(
                body.cohort_id,
                (event.insurer_id, body.monthly_contribution.amount_minor, start, end, leaf),
            )
            count = sum(1 for m in members if m[0] == body.cohort_id)
            for offset, entry in enumerate(body.beneficiaries):
                members.append((body.cohort_id, count + offset + 1, entry.state_code, leaf))
        elif kind == "contribution_paid":
            body_paid = event.contribution_paid
            first = dt.date(body_paid.period_start.year, body_paid.period_start.month, 1)
            last = dt.date(body_paid.period_end.year, body_paid.period_end.month, 1)
            paid[body_paid.cohort_id].append((first, last, body_paid.beneficiary_count, leaf))
    found: dict[tuple[str, str, int, int], list[object]] = {}
    for cohort_id, position, state, leaf in members:
        funder, monthly, start, end, first_leaf = cohorts[cohort_id]
        month = start
        while month <= end:
            key = (funder, state, month.year, month.month)
            row = found.setdefault(key, [0, 0, 0, 0, set()])
            row[0] += 1  # type: ignore[operator]
            row[4].update({first_leaf, leaf})  # type: ignore[attr-defined]
            paying = [p for p in paid[cohort_id] if p[0] <= month <= p[1]]
            if paying:
                row[4].add(paying[0][3])  # type: ignore[attr-defined]
            if paying and position <= paying[0][2]:
                row[1] += 1  # type: ignore[operator]
                row[2] += monthly  # type: ignore[operator]
            elif month <= today:
                row[3] += monthly  # type: ignore[operator]
            month = (month + dt.timedelta(days=32)).replace(day=1)
    return {
        key: (row[0], row[1], row[2], row[3], tuple(sorted(row[4])))  # type: ignore[arg-type]
        for key, row in found.items()
    }


def test_refusals_over_grpc_write_nothing_and_have_accepted_twins(sudan: Sudan) -> None:
    tokens = sudan.zakat.tokens.tokens(sudan.people[:300])
    now = clock.now()
    pairs = [(token, "SD-KH") for token in tokens]
    limit = limits.cohort_beneficiaries_per_event_max

    def refused(client: InsurerClient, event: events_pb2.Event) -> ClientError:
        before = sudan.written()
        with pytest.raises(ClientError) as raised:
            client.submit(event)
        assert sudan.written() == before, f"{raised.value} wrote something"
        return raised.value

    [twin] = cohort_events(
        ZAKAT, "R-1", pairs[:limit], (START, END), MONTHLY, fund_id=FUND, occurred_at=now
    )
    over = events_pb2.Event()
    over.CopyFrom(twin)
    over.cohort_enrolled.beneficiaries.add(person_token=tokens[limit], state_code="SD-KH")
    assert refused(sudan.zakat, over).code == grpc.StatusCode.INVALID_ARGUMENT
    sudan.zakat.submit(twin)

    unknown = contribution_paid(
        ZAKAT,
        "NO-SUCH",
        (START, dt.date(2026, 1, 31)),
        MONTHLY,
        limit,
        occurred_at=now,
        reference="U",
    )
    assert refused(sudan.zakat, unknown).code == grpc.StatusCode.NOT_FOUND
    foreign = contribution_paid(
        OTHER,
        "R-1",
        (START, dt.date(2026, 1, 31)),
        MONTHLY,
        limit,
        occurred_at=now,
        reference="F",
    )
    assert refused(sudan.other, foreign).code == grpc.StatusCode.PERMISSION_DENIED
    usd = contribution_paid(
        ZAKAT,
        "R-1",
        (START, dt.date(2026, 1, 31)),
        types_pb2.Money(currency_code="USD", amount_minor=MONTHLY.amount_minor),
        limit,
        occurred_at=now,
        reference="USD",
    )
    assert refused(sudan.zakat, usd).reason == "CURRENCY_MISMATCH"
    sudan.zakat.submit(
        contribution_paid(
            ZAKAT,
            "R-1",
            (START, dt.date(2026, 1, 31)),
            MONTHLY,
            limit,
            occurred_at=now,
            reference="OK",
        )
    )
    again = contribution_paid(
        ZAKAT,
        "R-1",
        (START, dt.date(2026, 2, 28)),
        MONTHLY,
        limit,
        occurred_at=now,
        reference="AGAIN",
    )
    assert refused(sudan.zakat, again).reason == "CONTRIBUTION_PERIOD_OVERLAPS"
