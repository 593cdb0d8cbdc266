"""Card rules inside one batch (the appender checks a batch's entries in order, with the
coverages earlier entries of the batch created): a card issued in the batch that issues the
policy, and refused events in the middle of a batch that change nothing; the projection is
rebuilt from the log alone. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from ledger.cards.document import DocumentFields
from ledger.cards.reader import CardReader
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.errors import FailedPrecondition, LedgerError
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.tables import cards, coverages
from ledger.v1 import events_pb2, types_pb2
from tests.builders import (
    OCCURRED,
    R,
    added,
    card_issued,
    card_number,
    card_replaced,
    fee_collected,
    issued,
    person,
)
from tests.conftest import onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)


def test_a_batch_issues_a_policy_and_its_cards_and_refusals_in_it_write_nothing(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer
) -> None:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    gulf = Ed25519Signer.generate("gulf-health")
    onboard_directly(engine, appender, operator_signer, "gulf-health", gulf, NOW)
    sponsor, child, stranger = person(9001), person(9002), person(9003)
    first, second, third = card_number(), card_number(), card_number()
    batch = [
        issued("gulf-health", "P-1", sponsor, [(sponsor, R.RELATIONSHIP_SELF)], JAN1, DEC31),
        card_issued("gulf-health", first, sponsor, DEC31),  # covered by the entry before
        card_issued("gulf-health", second, stranger, DEC31),  # refused: not covered
        added("gulf-health", "P-1", child, R.RELATIONSHIP_CHILD, dt.date(2026, 11, 1)),
        card_issued("gulf-health", second, child, DEC31),  # the number is still unused
        card_replaced("gulf-health", first, third, DEC31),
        card_issued("gulf-health", card_number(), sponsor, DEC31),  # refused: holds `third`
    ]
    outcomes = appender.append_batch([pending(gulf, event) for event in batch], NOW)
    assert [type(outcome) for outcome in outcomes] == [
        Receipt,
        Receipt,
        FailedPrecondition,
        Receipt,
        Receipt,
        Receipt,
        FailedPrecondition,
    ]
    refused = [outcome for outcome in outcomes if isinstance(outcome, LedgerError)]
    assert [error.details.reason for error in refused] == [
        "CARD_PERSON_NOT_COVERED",
        "CARD_ALREADY_HELD",
    ]
    with engine.connect() as connection:
        rows = {row.card_number: row for row in connection.execute(select(cards))}
    assert set(rows) == {first, second, third}
    assert (rows[first].status, rows[first].replaced_by) == ("REPLACED", third)
    assert rows[second].status == rows[third].status == "CURRENT"
    reader = CardReader(engine)
    state, _ = reader.card_status(first, NOW.date())
    assert isinstance(outcomes[5], Receipt) and state.leaf_index == outcomes[5].leaf_index
    assert rebuild_and_compare(engine).consistent


def test_a_certificate_of_a_refunded_fee_stops_being_current(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer
) -> None:
    """Item 8: a certificate whose coverage the ledger later refunded answers CANCELLED, with
    the refund's entry; before the refund, CURRENT."""
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    authority = Ed25519Signer.generate("kw-gov-health")
    onboard_directly(
        engine, appender, operator_signer, "kw-gov-health", authority, NOW, SignerRole.AUTHORITY
    )
    [collected] = appender.append_batch(
        [pending(authority, fee_collected("kw-gov-health", "R-1"))], NOW
    )
    assert isinstance(collected, Receipt)
    with engine.connect() as connection:
        [row] = connection.execute(
            select(coverages).where(coverages.c.leaf_indexes == str(collected.leaf_index))
        ).all()
    document = DocumentFields(
        kind="coverage certificate",
        fields={"insurer": row.insurer_id, "policy": row.policy_id, "person-token": row.person_key},
        valid_until=row.end_date,
        leaf_index=collected.leaf_index,
    )
    reader = CardReader(engine)
    state, _ = reader.document_status(document, NOW.date())
    assert (state.status, state.leaf_index) == ("CURRENT", collected.leaf_index)

    refund = events_pb2.Event(event_id="refund-R-1", insurer_id="kw-gov-health")
    refund.occurred_at.FromDatetime(OCCURRED)
    refund.fee_refunded.renewal_id = "R-1"
    refund.fee_refunded.refund_reference = "REF-1"
    refund.fee_refunded.amount.CopyFrom(types_pb2.Money(currency_code="KWD", amount_minor=100_000))
    [refunded] = appender.append_batch([pending(authority, refund)], NOW)
    assert isinstance(refunded, Receipt), refunded
    state, _ = reader.document_status(document, NOW.date())
    assert (state.status, state.leaf_index) == ("CANCELLED", refunded.leaf_index)
    assert rebuild_and_compare(engine).consistent
