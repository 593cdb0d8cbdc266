"""Who may sign what (ledger/signers.py): every event type x every signer role, at append.

Each event is built so that the rules accept it from a role the table allows; from any other role
it must be refused with PERMISSION_DENIED naming the event type and the signer, and write
nothing. The appender is called directly (past admission), so this is the commit-time check.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clients.beneficiary import Declared, beneficiaries_declared, declaration_decided
from clients.operator import insurer_licensed, key_registered, key_revoked
from ledger.errors import LedgerError, PermissionDenied
from ledger.keys import insurer_key_id
from ledger.signers import SIGNING_RULES, SignerRole, rule_for, signing_table_markdown
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.tables import PROJECTION_TABLES, checkpoints, log_entries
from ledger.v1 import events_pb2, types_pb2
from tests.builders import (
    OCCURRED,
    R,
    added,
    cancelled,
    card_issued,
    card_number,
    card_replaced,
    card_revoked,
    change_notified,
    cohort_ended,
    cohort_enrolled,
    contribution_paid,
    erased,
    fee_collected,
    issued,
    objection_filed,
    objection_rejected,
    paid,
    penalty_assessed,
    penalty_paid,
    penalty_withdrawn,
    permit_ended,
    permit_issued,
    permit_renewed,
    person,
    removed,
    sar,
    sdg,
    sudanese,
    suspended,
    token,
)
from tests.conftest import KEYS_VALID_FROM, key_event, onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
PRINCIPALS = {
    SignerRole.OPERATOR: "operator",
    SignerRole.INSURER: "gulf-health",
    SignerRole.AUTHORITY: "kw-gov-health",
    SignerRole.REGULATOR: "cchi",
    SignerRole.FUNDER: "zakat-fund",
    SignerRole.BENEFICIARY: "beneficiary-1",
}
_serials = itertools.count(500)


def _fee_refunded(signer_id: str, renewal_id: str, reference: str) -> events_pb2.Event:
    event = events_pb2.Event(event_id=f"refund-{reference}", insurer_id=signer_id)
    event.occurred_at.FromDatetime(OCCURRED)
    body = event.fee_refunded
    body.renewal_id = renewal_id
    body.refund_reference = reference
    body.amount.CopyFrom(types_pb2.Money(currency_code="KWD", amount_minor=1_000))
    return event


def _as(signer_id: str, event: events_pb2.Event) -> events_pb2.Event:
    event.insurer_id = signer_id
    return event


class World:
    """A log with one principal of every role, and what each event type acts on."""

    def __init__(self, engine: Engine, appender: Appender, operator: Ed25519Signer) -> None:
        self.engine = engine
        self.appender = appender
        self.signers: dict[str, Ed25519Signer] = {"operator": operator}
        self.spare_keys: dict[SignerRole, str] = {}
        self.card_holders: dict[SignerRole, types_pb2.PersonId] = {}
        self.cards: dict[tuple[str, SignerRole], str] = {}

    def append(self, signer_id: str, event: events_pb2.Event) -> Receipt | LedgerError:
        [outcome] = self.appender.append_batch([pending(self.signers[signer_id], event)], NOW)
        return outcome

    def accept(self, signer_id: str, event: events_pb2.Event) -> None:
        outcome = self.append(signer_id, event)
        assert isinstance(outcome, Receipt), outcome

    def snapshot(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            state: dict[str, Any] = {
                table.name: sorted(map(tuple, connection.execute(select(table))), key=repr)
                for table in PROJECTION_TABLES
            }
            for table in (log_entries, checkpoints):
                state[table.name] = connection.execute(
                    select(func.count()).select_from(table)
                ).scalar_one()
        return state


@pytest.fixture
def world(engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer) -> World:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    insurer = Ed25519Signer.generate("gulf-health")
    onboard_directly(engine, appender, operator_signer, "gulf-health", insurer, NOW)
    world = World(engine, appender, operator_signer)
    world.signers["gulf-health"] = insurer
    # A beneficiary's principal is its person token (issue 11, item 4): one from this vault.
    PRINCIPALS[SignerRole.BENEFICIARY] = token(person(next(_serials)))
    for role, principal in PRINCIPALS.items():
        if role not in (SignerRole.OPERATOR, SignerRole.INSURER):
            world.signers[principal] = Ed25519Signer.generate(principal)
            world.accept("operator", key_event(principal, world.signers[principal], role))
    for role in PRINCIPALS:
        spare = Ed25519Signer.generate(f"spare-{role}")
        world.accept("operator", key_event(f"spare-{role}", spare, SignerRole.INSURER))
        world.spare_keys[role] = insurer_key_id(spare.public_key)
        for what in ("cancel", "pay", "add", "remove", "notice"):
            sponsor = person(next(_serials))
            world.accept(
                "gulf-health",
                issued(
                    "gulf-health",
                    f"{what}-{role}",
                    sponsor,
                    [(sponsor, R.RELATIONSHIP_SELF), (person(next(_serials)), 2)],
                    JAN1,
                    DEC31,
                ),
            )
        # Task E (cards): a covered person, and cards to replace and to revoke.
        holder = person(next(_serials))
        world.accept(
            "gulf-health",
            issued(
                "gulf-health", f"card-{role}", holder, [(holder, R.RELATIONSHIP_SELF)], JAN1, DEC31
            ),
        )
        world.card_holders[role] = holder
        for what in ("replace", "revoke"):
            covered = person(next(_serials))
            world.accept(
                "gulf-health",
                issued(
                    "gulf-health", f"{what}-card-{role}", covered,
                    [(covered, R.RELATIONSHIP_SELF)], JAN1, DEC31,
                ),
            )  # fmt: skip
            number = card_number()
            world.accept("gulf-health", card_issued("gulf-health", number, covered, DEC31))
            world.cards[(what, role)] = number
        world.accept("kw-gov-health", fee_collected("kw-gov-health", f"R-{role}"))
        if role is SignerRole.OPERATOR:  # once: the beneficiary's own policy
            insured = PRINCIPALS[SignerRole.BENEFICIARY]
            world.accept(
                "gulf-health",
                issued("gulf-health", "declare-home", insured, [(insured, 1)], JAN1, DEC31),
            )
        world.accept(
            PRINCIPALS[SignerRole.BENEFICIARY],
            _declared(PRINCIPALS[SignerRole.BENEFICIARY], f"decl-{role}"),
        )
        for what in ("renew", "end"):  # Task A (issue 10): permits to renew and end
            world.accept(
                "kw-gov-health",
                permit_issued(
                    "kw-gov-health", f"{what}-{role}", person(next(_serials)), "7000000001",
                    [], JAN1, JAN1, DEC31,
                ),
            )  # fmt: skip
        world.accept("cchi", _decision("cchi", f"D-{role}"))
        for cohort in (f"C-{role}", f"E-{role}"):
            world.accept(
                "zakat-fund",
                cohort_enrolled(
                    "zakat-fund", cohort, [(sudanese(next(_serials)), "SD-KH")], JAN1, DEC31
                ),
            )
        world.accept(
            "operator",
            insurer_licensed(
                f"to-suspend-{role}",
                name="to be suspended",
                licence_number=f"L-{role}",
                effective=JAN1,
                occurred_at=OCCURRED,
            ),
        )
    return world


def _events_of(world: World, role: SignerRole) -> dict[str, Callable[[], events_pb2.Event]]:
    """One buildable event per event type, as ``role``'s principal would sign it."""
    who = PRINCIPALS[role]
    sponsor = person(next(_serials))
    removed_member = _member_of(world, f"remove-{role}")
    return {
        "policy_issued": lambda: issued(
            who, f"new-{role}", sponsor, [(sponsor, R.RELATIONSHIP_SELF)], JAN1, DEC31
        ),
        "policy_cancelled": lambda: cancelled(
            who, f"cancel-{role}", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT
        ),
        "premium_paid": lambda: paid(who, f"pay-{role}", sar(1000), JAN1, dt.date(2026, 3, 31)),
        "insurer_change_notified": lambda: change_notified(who, f"notice-{role}"),
        "member_added": lambda: added(
            who, f"add-{role}", person(next(_serials)), R.RELATIONSHIP_CHILD, dt.date(2026, 2, 1)
        ),
        "member_removed": lambda: _removed(who, f"remove-{role}", removed_member),
        "fee_collected": lambda: fee_collected(who, f"R-new-{role}"),
        "fee_refunded": lambda: _fee_refunded(who, f"R-{role}", f"refund-{role}"),
        "insurer_licensed": lambda: _as(
            who,
            insurer_licensed(
                f"licensed-by-{role}",
                name="new insurer",
                licence_number=f"N-{role}",
                effective=JAN1,
                occurred_at=OCCURRED,
            ),
        ),
        "insurer_suspended": lambda: _as(who, suspended(f"to-suspend-{role}", JAN1)),
        "key_registered": lambda: _as(
            who,
            key_registered(
                f"new-principal-{role}",
                Ed25519Signer.generate("k").public_key,
                role=SignerRole.INSURER,
                valid_from=KEYS_VALID_FROM,
                occurred_at=OCCURRED,
            ),
        ),
        "key_revoked": lambda: _as(
            who, key_revoked(world.spare_keys[role], reason="test", occurred_at=OCCURRED)
        ),
        "person_erased": lambda: _as(who, erased(person(next(_serials)))),
        # Task A (issue 10).
        "permit_issued": lambda: permit_issued(
            who, f"new-permit-{role}", person(next(_serials)), "7000000001", [], JAN1, JAN1, DEC31
        ),
        "permit_renewed": lambda: permit_renewed(who, f"renew-{role}", dt.date(2027, 12, 31)),
        "permit_ended": lambda: permit_ended(
            who, f"end-{role}", dt.date(2026, 9, 1), R.PERMIT_END_REASON_FINAL_EXIT
        ),
        "penalty_assessed": lambda: _decision(who, f"D-new-{role}"),
        "objection_filed": lambda: objection_filed(who, f"D-{role}"),
        "objection_rejected": lambda: objection_rejected(who, f"D-{role}"),
        "penalty_paid": lambda: penalty_paid(who, f"D-{role}", sar(100)),
        "penalty_withdrawn": lambda: penalty_withdrawn(who, f"D-{role}"),
        # Task E (cards).
        "card_issued": lambda: card_issued(who, card_number(), world.card_holders[role], DEC31),
        "card_replaced": lambda: card_replaced(
            who, world.cards[("replace", role)], card_number(), DEC31
        ),
        "card_revoked": lambda: card_revoked(who, world.cards[("revoke", role)]),
        "cohort_enrolled": lambda: cohort_enrolled(
            who, f"new-cohort-{role}", [(sudanese(next(_serials)), "SD-KH")], JAN1, DEC31
        ),
        "contribution_paid": lambda: contribution_paid(
            who, f"C-{role}", JAN1, dt.date(2026, 1, 31), sdg(1_000), 1
        ),
        "cohort_ended": lambda: cohort_ended(who, f"E-{role}", dt.date(2026, 6, 1)),
        "beneficiaries_declared": lambda: _as(
            who, _declared(PRINCIPALS[SignerRole.BENEFICIARY], f"new-{role}")
        ),
        "declaration_decided": lambda: declaration_decided(
            who,
            PRINCIPALS[SignerRole.BENEFICIARY],
            f"decl-{role}",
            accepted=True,
            occurred_at=OCCURRED,
        ),
    }


def _declared(insured: str, declaration_id: str) -> events_pb2.Event:
    child = Declared(
        token(person(next(_serials))),
        R.RELATIONSHIP_CHILD,
        ((R.DOCUMENT_KIND_BIRTH_CERTIFICATE, f"DOC-{declaration_id}"),),
    )
    return beneficiaries_declared(
        insured,
        declaration_id,
        ("gulf-health", "declare-home"),
        [child],
        effective=dt.date(2026, 7, 1),
        occurred_at=OCCURRED,
    )


def _decision(who: str, decision_id: str) -> events_pb2.Event:
    return penalty_assessed(
        who, decision_id, "7001234567", [(person(next(_serials)), 30, 900, 100)]
    )


def _member_of(world: World, policy_id: str) -> str:
    """The token of the second member of ``policy_id`` (its PolicyIssued, read from the log)."""
    from ledger.entry import decode_entry
    from ledger.events import decode_event

    with world.engine.connect() as connection:
        rows = connection.execute(select(log_entries.c.entry_bytes)).scalars().all()
    for data in rows:
        event = decode_event(decode_entry(bytes(data)).envelope.payload)
        if event.WhichOneof("body") == "policy_issued" and event.policy_issued.policy_id == (
            policy_id
        ):
            return event.policy_issued.members[1].person_token
    raise AssertionError(f"no policy {policy_id}")


def _removed(who: str, policy_id: str, member: str) -> events_pb2.Event:
    return removed(who, policy_id, member, dt.date(2026, 4, 1), R.CANCELLATION_REASON_DEATH)


def test_the_table_names_every_event_type_once() -> None:
    bodies = {field.name for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert sorted(rule.body for rule in SIGNING_RULES) == sorted(bodies)
    for rule in SIGNING_RULES:
        message = events_pb2.Event.DESCRIPTOR.fields_by_name[rule.body].message_type
        assert message.name == rule.event_type
    assert rule_for("unheard_of") is None


def test_every_event_type_by_every_signer_role(world: World) -> None:
    accepted, refused = 0, 0
    for role in SignerRole:
        for body, build in _events_of(world, role).items():
            event = build()
            assert event.WhichOneof("body") == body
            rule = rule_for(body)
            assert rule is not None
            before = world.snapshot()
            outcome = world.append(PRINCIPALS[role], event)
            if role in rule.roles:
                assert isinstance(outcome, Receipt), (body, role, outcome)
                accepted += 1
                continue
            assert isinstance(outcome, PermissionDenied), (body, role, outcome)
            assert outcome.reason == "SIGNER_ROLE_NOT_ALLOWED", (body, role, outcome)
            assert rule.event_type in outcome.message and PRINCIPALS[role] in outcome.message
            assert outcome.details.metadata["event_type"] == rule.event_type
            assert outcome.details.metadata["signer"] == PRINCIPALS[role]
            assert world.snapshot() == before, f"refused {body} by {role} wrote something"
            refused += 1
    allowed = sum(len(rule.roles) for rule in SIGNING_RULES)
    assert accepted == allowed
    assert refused == len(SIGNING_RULES) * len(SignerRole) - allowed


def test_an_authority_collects_only_in_its_jurisdiction(world: World) -> None:
    saudi = Ed25519Signer.generate("sa-authority")
    world.signers["sa-authority"] = saudi
    world.accept(
        "operator",
        key_registered(
            "sa-authority",
            saudi.public_key,
            role=SignerRole.AUTHORITY,
            jurisdiction="SA",
            valid_from=KEYS_VALID_FROM,
            occurred_at=OCCURRED,
        ),
    )
    before = world.snapshot()
    outcome = world.append("sa-authority", fee_collected("sa-authority", "R-kuwaiti"))
    assert isinstance(outcome, PermissionDenied) and outcome.reason == "OUTSIDE_JURISDICTION"
    assert world.snapshot() == before


def test_the_docs_render_the_table() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "coverage.md").read_text(encoding="utf-8")
    assert signing_table_markdown() in docs
