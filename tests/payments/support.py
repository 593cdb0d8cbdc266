"""A renewal stack without a server: real database, real appender and rules, simulated gateway."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine

from clients.operator import key_registered, key_revoked
from ledger.clock import FixedClock
from ledger.coverage.reader import CoverageReader
from ledger.errors import LedgerError, Unavailable
from ledger.identifiers import example_kuwait_civil_id
from ledger.keys import insurer_key_id
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.key_store import KeyStore
from ledger.storage.migrate import upgrade
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.gateway import PaymentGateway
from payments.gateways.simulated import FaultPlan, SimulatedGateway
from payments.renewal import Crash, MemberInput, QuoteRequest, Renewals
from payments.service import AppenderRecorder
from tests.conftest import onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
AUTHORITY = "kw-gov-health"
PERIOD = (dt.date(2027, 1, 1), dt.date(2027, 12, 31))


def civil_id(household: int, position: int) -> types_pb2.PersonId:
    """A valid Kuwaiti civil ID, distinct per (household, position): the generator may move to
    the next serial to find a check digit, so serials are spaced by three."""
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=household % 20_000)
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_CIVIL_ID,
        value=example_kuwait_civil_id(birth, 3 * position + 3 * 4 * (household // 20_000)),
        country_code="KW",
    )


def family_request(number: int, size: int) -> QuoteRequest:
    """An expatriate worker's household of ``size`` (1..4) members."""
    kinds = [
        (fees.Relationship.SELF, fees.ResidenceCategory.PRIVATE_SECTOR_WORKER),
        (fees.Relationship.SPOUSE, fees.ResidenceCategory.DEPENDENT),
        (fees.Relationship.CHILD, fees.ResidenceCategory.DEPENDENT),
        (fees.Relationship.DOMESTIC_WORKER, fees.ResidenceCategory.DOMESTIC_WORKER),
    ]
    members = tuple(
        MemberInput(
            person=civil_id(number, position),
            relationship=relationship,
            residence_category=category,
            birth_date=dt.date(1990, 1, 1),
            domestic_worker_ordinal=1
            if relationship is fees.Relationship.DOMESTIC_WORKER
            else None,
        )
        for position, (relationship, category) in enumerate(kinds[:size])
    )
    return QuoteRequest(
        jurisdiction="KW",
        sponsor=civil_id(number, 0),
        sponsor_is_kuwaiti=False,
        members=members,
        period_start=PERIOD[0],
        period_end=PERIOD[1],
    )


class SlowLedger:
    """The ledger recorder with its answer lost (``LedgerRecorder`` timing out): UNAVAILABLE
    after the entry was appended (``applied``), without it (``lost``), or with the submission
    still queued, appended only when :meth:`land_late` runs (``late``: the entry arrives after
    the saga gave up waiting). ``next`` forces the next fault; ``rate`` draws one at random."""

    FAULTS = ("applied", "lost", "late")

    def __init__(self, ledger: AppenderRecorder, rng: random.Random) -> None:
        self.ledger = ledger
        self.rng = rng
        self.rate = 0.0
        self.next: str | None = None
        self.queued: list[tuple[events_pb2.Event, Callable[[Connection, int], None]]] = []
        self.faults: Counter[str] = Counter()
        self.landed = 0

    def check(self, event: events_pb2.Event) -> None:
        self.ledger.check(event)

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt:
        fault, self.next = self.next, None
        if fault is None and self.rate and self.rng.random() < self.rate:
            fault = self.rng.choice(self.FAULTS)
        if fault is None:
            return self.ledger(event, on_append)
        self.faults[fault] += 1
        if fault == "applied":
            with contextlib.suppress(LedgerError):  # its answer, refusal or receipt, is lost
                self.ledger(event, on_append)
        elif fault == "late":
            self.queued.append((event, on_append))
        raise Unavailable(
            "the ledger did not answer in time (test)",
            reason="RECORD_OUTCOME_UNKNOWN",
            metadata={"event_id": event.event_id},
        )

    def land_late(self) -> None:
        """The queued submissions reach the sequencer now (appended, or refused)."""
        queued, self.queued = self.queued, []
        for event, on_append in queued:
            with contextlib.suppress(LedgerError):
                self.ledger(event, on_append)
                self.landed += 1


class Stack:
    """Renewals wired to a real ledger (appender in-process) and a simulated gateway."""

    def __init__(
        self,
        folder: Path,
        *,
        plan: FaultPlan | None = None,
        seed: int = 0,
        gateways: dict[str, PaymentGateway] | None = None,
    ) -> None:
        self.engine: Engine = create_ledger_engine(sqlite_url(folder / "ledger.db"))
        upgrade(self.engine)
        self.log_signer = Ed25519Signer.generate("test/log")
        self.appender = Appender(self.engine, self.log_signer, self.log_signer.name)
        self.appender.initialize(NOW)
        self.authority = Ed25519Signer.generate(AUTHORITY)
        self.operator = Ed25519Signer.generate("operator")
        onboard_directly(
            self.engine,
            self.appender,
            self.operator,
            AUTHORITY,
            self.authority,
            NOW,
            role=SignerRole.AUTHORITY,
        )
        self.clock = FixedClock(NOW)
        self.gateway = SimulatedGateway(plan or FaultPlan(), seed=seed)
        self.crash_rate = 0.0
        self.crash_rng = random.Random(seed)
        self.crashes = 0
        self.suspended = False
        self.suspensions = 0
        self.at_point: dict[str, Callable[[], None]] = {}
        """Something that happens meanwhile at a saga step (state changing under the saga)."""
        # The same recorder `policy-ledger payments reconcile` uses: validate, sign, append.
        self.record = AppenderRecorder(
            self.appender, self.authority, self.clock, KeyStore(self.engine)
        )
        self.recorder = SlowLedger(self.record, random.Random(seed + 1))
        """The recorder the saga calls: the ledger, whose answers may be lost (timeouts)."""
        self.renewals = Renewals(
            self.engine,
            {"simulated": self.gateway, **(gateways or {})},
            self.recorder,
            CoverageReader(self.engine),
            self.clock,
            authority_id=AUTHORITY,
            crash=self.maybe_crash,
        )

    def maybe_crash(self, point: str) -> None:
        meanwhile = self.at_point.pop(point, None)
        if meanwhile is not None:
            meanwhile()
        if self.crash_rate and self.crash_rng.random() < self.crash_rate:
            self.crashes += 1
            raise Crash(point)

    def suspend_authority(self) -> None:
        """The operator stops the renewal authority from signing: an authority holds no
        licence, so this revokes its key from now on (a signed KeyRevoked event in the log)."""
        self.suspensions += 1
        self.revoke_authority_key()
        self.suspended = True

    def relicense_authority(self) -> None:
        """The operator lets the renewal authority sign again: a new key, registered by a signed
        KeyRegistered event; the recorder signs with it from now on."""
        self.authority = Ed25519Signer.generate(AUTHORITY)
        event = key_registered(
            AUTHORITY,
            self.authority.public_key,
            role=SignerRole.AUTHORITY,
            valid_from=self.clock.now(),
            occurred_at=self.clock.now(),
        )
        self._append_as_operator(event)
        self.record.use_signer(self.authority)
        self.suspended = False

    def revoke_authority_key(self) -> None:
        """The operator revokes the authority's signing key from now on (a signed event)."""
        event = key_revoked(
            insurer_key_id(self.authority.public_key),
            reason="test",
            occurred_at=self.clock.now(),
        )
        self._append_as_operator(event)

    def _append_as_operator(self, event: events_pb2.Event) -> None:
        [outcome] = self.appender.append_batch([pending(self.operator, event)], self.clock.now())
        assert not isinstance(outcome, Exception), outcome
