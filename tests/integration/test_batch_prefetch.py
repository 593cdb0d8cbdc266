"""What a batch reads once (``Projector.prefetch``) never hides what an earlier entry of the same
batch changed: an erasure, a new policy, a new coverage. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from clients.operator import person_erased
from clients.samples import household, policy_issued, premium_paid
from ledger.errors import AlreadyExists, FailedPrecondition
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, PendingEntry, Receipt
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import licensed_appender, pending

NOW = test_clock.now()
INSURER = "gulf-health"


@pytest.fixture
def appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> Appender:
    return licensed_appender(engine, log_signer, operator_signer, INSURER, insurer_signer, NOW)


def test_a_person_erased_earlier_in_the_batch_is_refused_later_in_it(
    appender: Appender, insurer_signer: Ed25519Signer, operator_signer: Ed25519Signer
) -> None:
    sponsor = tokens(household(7)[:1])[0]
    items = [
        pending(insurer_signer, premium_paid(7, INSURER, NOW, tokens=tokens)),
        pending(operator_signer, person_erased(sponsor, basis="test", occurred_at=NOW)),
        pending(insurer_signer, policy_issued(7, INSURER, NOW, tokens=tokens)),
    ]
    # The premium is refused first (no such policy), having had the sponsor's token read.
    first, erased, issued = appender.append_batch(items, NOW)
    assert not isinstance(first, Receipt)
    assert isinstance(erased, Receipt)
    assert isinstance(issued, FailedPrecondition)
    assert issued.reason == "PERSON_ERASED"


def test_a_policy_issued_twice_in_one_batch_or_across_batches_is_refused(
    appender: Appender, insurer_signer: Ed25519Signer
) -> None:
    issue = pending(insurer_signer, policy_issued(3, INSURER, NOW, tokens=tokens))
    again = policy_issued(3, INSURER, NOW, tokens=tokens)
    again.event_id = "another-id"
    first, second = appender.append_batch([issue, pending(insurer_signer, again)], NOW)
    assert isinstance(first, Receipt) and not first.duplicate
    assert isinstance(second, AlreadyExists) and second.reason == "POLICY_EXISTS"
    again.event_id = "a-third-id"
    (third,) = appender.append_batch([pending(insurer_signer, again)], NOW)
    assert isinstance(third, AlreadyExists) and third.reason == "POLICY_EXISTS"


def test_members_covered_earlier_in_the_batch_or_before_it_are_not_covered_twice(
    appender: Appender, insurer_signer: Ed25519Signer
) -> None:
    def same_household(policy_id: str) -> PendingEntry:
        event = policy_issued(5, INSURER, NOW, tokens=tokens)
        event.event_id = f"issue-{policy_id}"
        event.policy_issued.policy_id = policy_id
        return pending(insurer_signer, event)

    first, second = appender.append_batch([same_household("POL-A"), same_household("POL-B")], NOW)
    assert isinstance(first, Receipt)
    assert isinstance(second, FailedPrecondition) and second.reason == "DOUBLE_COVERAGE"
    (third,) = appender.append_batch([same_household("POL-C")], NOW)
    assert isinstance(third, FailedPrecondition) and third.reason == "DOUBLE_COVERAGE"
