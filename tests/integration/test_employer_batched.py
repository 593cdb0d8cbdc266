"""CheckEmployer's set-based read (issue 10 item 6) gives the answers of the per-person path.

``EmployerReader.check_employer`` reads a page in three queries (the obligations with their
identifiers, every coverage of the page's people, their premium schedules and payments) and
computes in memory, with a shortcut for records without non-payment. The reference here is the
path it replaced, restated plainly: one obligation at a time, that person's coverage rows read
alone, every record split by the household check's own functions
(``ledger.coverage.reader``: ``_span``, ``_non_payment``, ``_pieces``) and handed to
``uninsured.obligation_intervals``. Randomized establishments (several seeds) hold what changes
an answer: suspended insurers, instalments paid late, partly or never, transfer gaps, coverage
records cancelled on their first day, several permits per person, erased people, another
establishment's obligations and obligations outside the range; every page size from 1 to 9
walks the whole establishment. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, String, insert, null, select

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.clock import FixedClock
from ledger.compliance import uninsured
from ledger.compliance.employer import EmployerReader, PersonObligation, _runs_and_cuts
from ledger.coverage.model import PersonRef
from ledger.coverage.reader import _non_payment, _pieces, _span
from ledger.signing import Ed25519Signer
from ledger.storage.tables import (
    checkpoints,
    coverages,
    insurers,
    obligations,
    policies,
    premium_instalments,
    premiums,
    transfer_gaps,
)
from ledger.storage.vault_store import person_identities, person_tokens

EMPLOYER = "org:SA:7001234567"
OTHER_EMPLOYER = "org:SA:7009999999"
TODAY = dt.date(2026, 10, 15)
BASE = dt.date(2026, 1, 1)
ONE_DAY = dt.timedelta(days=1)
PLACEHOLDER = PersonRef(id_type="UNSPECIFIED", value="", country="")


def _day(generator: random.Random, low: int = -60, high: int = 400) -> dt.date:
    return BASE + dt.timedelta(days=generator.randint(low, high))


def _establishment(connection: Connection, generator: random.Random, signer: Ed25519Signer) -> None:
    """A random establishment of about 40 people, written straight into the projections."""
    connection.execute(
        insert(checkpoints),
        [
            {
                "tree_size": 0,
                "root_hash": hashlib.sha256(b"").digest(),
                "note_bytes": sign_checkpoint(
                    Checkpoint(signer.name, 0, hashlib.sha256(b"").digest()), signer
                ),
                "created_at_us": 0,
            }
        ],
    )
    insurer_rows = [
        {
            "insurer_id": f"ins-{number}",
            "name": f"Insurer {number}",
            "licence_number": f"L-{number}",
            "status": "suspended" if suspended else "licensed",
            "licensed_from": dt.date(2020, 1, 1),
            "suspended_from": suspended,
            "leaf_index": number,
        }
        for number, suspended in enumerate([None, None, _day(generator, 60, 300), BASE])
    ]
    connection.execute(insert(insurers), insurer_rows)
    leaf = iter(range(100, 1_000_000))
    tokens = [f"pt_bench{number:04d}" for number in range(40)]
    for number, token in enumerate(tokens):
        connection.execute(
            insert(person_tokens), [{"token": token, "country": "SA", "issued_at_us": 0}]
        )
        if number % 9 != 4:  # every ninth person erased from the vault: no identifier
            connection.execute(
                insert(person_identities),
                [
                    {
                        "token": token,
                        "id_type": "RESIDENCE_ID",
                        "country": "SA",
                        "value": f"2{number:09d}",
                    }
                ],
            )
    for number, token in enumerate(tokens):
        for permit in range(generator.choice([1, 1, 1, 2])):
            obligated_from = _day(generator, -30, 200)
            until = obligated_from + dt.timedelta(days=generator.randint(-5, 365))
            connection.execute(
                insert(obligations),
                [
                    {
                        "authority_id": generator.choice(["mol", "jawazat"]),
                        "permit_id": f"PRM-{number}-{permit}",
                        "person_token": token,
                        "relationship": "SELF" if number % 3 == 0 else "SPOUSE",
                        "obligated_from": obligated_from,
                        "obligated_until": until,
                        "responsible_key": OTHER_EMPLOYER if number % 11 == 7 else EMPLOYER,
                        "leaf_indexes": f"{next(leaf)},{next(leaf)}",
                    }
                ],
            )
        for record in range(generator.choice([0, 1, 1, 2, 3])):
            insurer = generator.choice(insurer_rows)["insurer_id"]
            policy = f"POL-{number}-{record}"
            start = _day(generator)
            end = start + dt.timedelta(days=generator.choice([-1, 30, 180, 364]))
            instalments = generator.choice([0, 0, 2, 3])
            connection.execute(
                insert(policies),
                [
                    {
                        "insurer_id": insurer,
                        "policy_id": policy,
                        "sponsor_key": token,
                        "holder_key": EMPLOYER,
                        "plan": "CCHI-BASIC",
                        "start_date": start,
                        "end_date": max(start, end),
                        "currency_code": "SAR",
                        "annual_premium_minor": 450_000,
                        "cancelled_from": None,
                        "cancel_reason": None,
                        "issued_leaf_index": next(leaf),
                        "cancelled_leaf_index": None,
                        "instalments": instalments,
                    }
                ],
            )
            connection.execute(
                insert(coverages),
                [
                    {
                        "insurer_id": insurer,
                        "policy_id": policy,
                        "person_key": token,
                        "start_date": start,
                        "end_date": end,
                        "sponsor_key": token,
                        "relationship": "self",
                        "end_reason": "PERIOD_END" if end > start else "CANCELLED",
                        "leaf_indexes": f"{next(leaf)},{next(leaf)}",
                    }
                ],
            )
            for position in range(instalments):
                due = start + dt.timedelta(days=120 * position)
                connection.execute(
                    insert(premium_instalments),
                    [
                        {
                            "insurer_id": insurer,
                            "policy_id": policy,
                            "position": position,
                            "due_date": due,
                            "amount_minor": 100_000,
                            "leaf_index": next(leaf),
                        }
                    ],
                )
                if generator.random() < 0.6:  # paid: in time, late, or after today
                    connection.execute(
                        insert(premiums),
                        [
                            {
                                "leaf_index": next(leaf),
                                "insurer_id": insurer,
                                "policy_id": policy,
                                "currency_code": "SAR",
                                "amount_minor": generator.choice([50_000, 100_000]),
                                "period_start": start,
                                "period_end": max(start, end),
                                "payer_type": "employer",
                                "payer_key": EMPLOYER,
                                "paid_on": due + dt.timedelta(days=generator.randint(-10, 200)),
                            }
                        ],
                    )
            if generator.random() < 0.3:
                gap_first = start - dt.timedelta(days=generator.randint(1, 40))
                connection.execute(
                    insert(transfer_gaps),
                    [
                        {
                            "leaf_index": next(leaf),
                            "insurer_id": insurer,
                            "policy_id": policy,
                            "replaced_insurer_id": "ins-0",
                            "replaced_policy_id": f"OLD-{number}-{record}",
                            "first_day": gap_first,
                            "last_day": start - ONE_DAY,
                        }
                    ],
                )


_NO_TEXT = null().cast(String)
_ONE_PERSON = (
    select(
        coverages,
        policies.c.plan,
        policies.c.instalments,
        insurers.c.suspended_from,
        insurers.c.leaf_index.label("insurer_leaf_index"),
        _NO_TEXT.label("sponsor_id_type"),
        _NO_TEXT.label("sponsor_value"),
        _NO_TEXT.label("sponsor_country"),
        transfer_gaps.c.replaced_insurer_id,
        transfer_gaps.c.replaced_policy_id,
        transfer_gaps.c.first_day.label("gap_first"),
        transfer_gaps.c.last_day.label("gap_last"),
    )
    .select_from(coverages)
    .join(
        policies,
        (policies.c.insurer_id == coverages.c.insurer_id)
        & (policies.c.policy_id == coverages.c.policy_id),
    )
    .join(insurers, insurers.c.insurer_id == coverages.c.insurer_id, isouter=True)
    .join(
        transfer_gaps,
        (transfer_gaps.c.insurer_id == coverages.c.insurer_id)
        & (transfer_gaps.c.policy_id == coverages.c.policy_id),
        isouter=True,
    )
)


def _per_person(engine: Engine, first: dt.date, last: dt.date) -> list[PersonObligation]:
    """The answers one obligation, and one person's coverage read, at a time."""
    answers = []
    with engine.connect() as connection:
        rows = connection.execute(
            select(obligations)
            .where(obligations.c.responsible_key == EMPLOYER)
            .order_by(
                obligations.c.person_token, obligations.c.authority_id, obligations.c.permit_id
            )
        ).all()
        for row in rows:
            if not (
                row.obligated_from <= last
                and row.obligated_until >= first
                and row.obligated_until >= row.obligated_from
            ):
                continue
            records = [
                record
                for record in connection.execute(
                    _ONE_PERSON.where(coverages.c.person_key == row.person_token)
                )
                if record.end_date >= record.start_date
            ]
            unpaid = _non_payment(
                connection,
                sorted({(r.insurer_id, r.policy_id) for r in records if r.instalments}),
                TODAY,
            )
            spans: list[Any] = []
            for record in records:
                span = _span(record, PLACEHOLDER)
                periods = unpaid.get((record.insurer_id, record.policy_id))
                spans.extend(_pieces(span, periods) if periods else [span])
            counting, cuts = _runs_and_cuts(spans)
            window_first, window_last = (
                max(first, row.obligated_from),
                min(last, row.obligated_until),
            )
            leaves = {int(leaf) for leaf in row.leaf_indexes.split(",")}
            for span in spans:
                if span.record.start <= window_last and span.record.end >= window_first:
                    leaves.update(span.record.leaf_indexes)
            identity = connection.execute(
                select(person_identities).where(person_identities.c.token == row.person_token)
            ).first()
            answers.append(
                PersonObligation(
                    person_token=row.person_token,
                    person=None
                    if identity is None
                    else PersonRef(
                        id_type=identity.id_type, value=identity.value, country=identity.country
                    ),
                    relationship=row.relationship,
                    authority_id=row.authority_id,
                    permit_id=row.permit_id,
                    obligated_from=row.obligated_from,
                    obligated_until=row.obligated_until,
                    intervals=uninsured.obligation_intervals(
                        window_first, window_last, counting, cuts
                    ),
                    leaf_indexes=tuple(sorted(leaves)),
                )
            )
    return answers


def _paged(reader: EmployerReader, first: dt.date, last: dt.date, size: int) -> list[Any]:
    people: list[PersonObligation] = []
    after = None
    while True:
        page = reader.check_employer(EMPLOYER, first, last, size, after)
        people.extend(page.people)
        if page.next_page is None:
            return people
        assert len(page.people) == size
        after = page.next_page


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_set_based_read_answers_as_the_per_person_path(
    engine: Engine, log_signer: Ed25519Signer, seed: int
) -> None:
    generator = random.Random(seed)
    with engine.begin() as connection:
        _establishment(connection, generator, log_signer)
    reader = EmployerReader(engine, FixedClock(dt.datetime(2026, 10, 15, 9, tzinfo=dt.UTC)))
    ranges = [(BASE, dt.date(2026, 12, 31)), (_day(generator, 0, 100), _day(generator, 150, 300))]
    for first, last in ranges:
        expected = _per_person(engine, first, last)
        assert expected  # the random establishment is not empty in the range
        if first == BASE:  # the whole year shows every state an answer can have
            states = {(i.covered, i.reason) for person in expected for i in person.intervals}
            assert states >= {(True, ""), *((False, r) for r in uninsured.REASONS)}
            assert (False, uninsured.NO_COVERAGE) in states
            assert any(person.person is None for person in expected)
        for size in range(1, 10):
            assert _paged(reader, first, last, size) == expected, (first, last, size)
        assert _paged(reader, first, last, 500) == expected
