"""The sequencer's CPU time per event, in process: :meth:`Appender.append_batch` alone.

Under ``serve --workers N`` one sequencer process writes the log, so its CPU time per event
bounds the whole server (docs/benchmarks.md, "Sequencer CPU per event"). This measures that
part without gRPC, admission or the hand-off: a fresh SQLite file (the server's options: WAL,
``synchronous=FULL``), an insurer onboarded by operator events, then the bench's streaming mix
(household policies, premiums, every tenth cancelled; signed, and decoded as admission hands
them over) appended in batches of ``--batch`` entries. The figure is the calling thread's CPU
time (``time.thread_time``) per event, which holds on a busy machine where wall time does not;
the load average is printed beside it.

Run alone: ``python -m bench.sequencer_cpu --events 3000 --batch 64`` (``--profile FILE`` writes
a cProfile of the appends). ``--postgres`` appends to a fresh database on the bench's PostgreSQL
server (``POLICY_LEDGER_TEST_POSTGRES_URL``, as ``bench.multi_instance``) instead, and prints
beside the CPU the statements a batch and the round trips a batch (libpq's ReadyForQuery
messages: one a simple query or Sync, so one a wait for the server outside a pipeline).

``--fees`` appends renewals' FeeCollected entries instead of the streaming mix: each as the
renewal saga submits it (``payments.recording.record``): signed by the renewal authority, with
the ``payments.mark_recorded`` append hook moving its payment to recorded in the batch's
transaction. The payments are quoted and captured first, in process (the simulated gateway at
no latency), by the saga itself, whose submissions are held back and appended here, so what is
timed is the sequencer's part of a renewal only (docs/benchmarks.md, "the sequencer's fixed
cost"). ``python -m bench.sequencer_cpu --fees --events 400 --batch 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import Connection, Engine
from sqlalchemy import event as sqlalchemy_event

from clients.operator import OPERATOR_ID, insurer_licensed, key_registered
from clients.samples import sample_events
from ledger.clock import FixedClock
from ledger.coverage.projector import person_ref
from ledger.coverage.reader import CoverageReader
from ledger.dsse import sign_envelope
from ledger.errors import Unavailable
from ledger.events import EVENT_PAYLOAD_TYPE, decode_event
from ledger.identifiers import example_kuwait_civil_id
from ledger.keys import insurer_key_id
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, Signer
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.storage.vault_store import VaultStore
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.gateways.simulated import SimulatedGateway
from payments.renewal import MemberInput, QuoteRequest, Renewals

if TYPE_CHECKING:  # only --round-trips, on PostgreSQL, has a psycopg connection
    import psycopg
    from psycopg.rows import TupleRow

__all__ = ["SequencerFigures", "measure_sequencer_cpu", "sequencer_process_cpu_seconds"]

_INSURER = "bench-insurer"
_AUTHORITY = "bench-authority"


class SequencerFigures:
    """What one run measured."""

    def __init__(
        self,
        events: int,
        cpu_seconds: float,
        wall_seconds: float,
        batches: int = 0,
        statements: int = 0,
        round_trips: int = 0,
    ) -> None:
        self.events = events
        self.cpu_seconds = cpu_seconds
        self.wall_seconds = wall_seconds
        self.batches = batches
        self.statements = statements
        self.round_trips = round_trips

    @property
    def cpu_us_per_event(self) -> float:
        """The appending thread's CPU time per event, in microseconds."""
        return self.cpu_seconds / self.events * 1e6

    @property
    def cpu_us_per_batch(self) -> float:
        """The appending thread's CPU time per batch, in microseconds."""
        return self.cpu_seconds / max(self.batches, 1) * 1e6


def _pending(
    signer: Signer,
    event: events_pb2.Event,
    on_append: Callable[[Connection, int], None] | None = None,
) -> PendingEntry:
    payload = event.SerializeToString(deterministic=True)
    key_id = insurer_key_id(signer.public_key)
    envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, signer, key_id)
    return PendingEntry(
        envelope=envelope,
        insurer_id=event.insurer_id,
        event_id=event.event_id,
        key_id=key_id,
        event=decode_event(payload),
        on_append=on_append,
    )


def _onboard(appender: Appender, operator: Signer, insurer: Signer, now: dt.datetime) -> None:
    appender.anchor_operator(operator.public_key, now)
    since = now - dt.timedelta(days=1)
    events = [
        key_registered(
            _INSURER,
            insurer.public_key,
            role=SignerRole.INSURER,
            valid_from=since,
            occurred_at=since,
        ),
        insurer_licensed(
            _INSURER, name="Bench", licence_number="B-1", effective=since.date(), occurred_at=since
        ),
    ]
    for outcome in appender.append_batch([_pending(operator, event) for event in events], now):
        if not isinstance(outcome, Receipt):
            raise RuntimeError(f"onboarding refused: {outcome}")


class _HeldRecorder:
    """The renewal saga's recorder, holding each FeeCollected submission (signed by the
    authority, with its append hook) instead of appending it: the saga's answer is "the ledger
    did not answer", which leaves the payment ``recording``, as a submission in flight does."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.held: list[PendingEntry] = []

    def check(self, event: events_pb2.Event) -> None:
        """Admits everything: the appender checks the rules again."""

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> NoReturn:
        self.held.append(_pending(self.signer, event, on_append))
        raise Unavailable("held for the bench", reason="RECORD_OUTCOME_UNKNOWN")


def _renewal_request(number: int) -> QuoteRequest:
    """A household of a private-sector worker and a spouse (as ``bench.renewals`` quotes)."""
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=number % 20_000)
    sponsor, spouse = (
        types_pb2.PersonId(
            type=types_pb2.PERSON_ID_TYPE_CIVIL_ID,
            value=example_kuwait_civil_id(birth, 3 * position),
            country_code="KW",
        )
        for position in (0, 1)
    )
    return QuoteRequest(
        jurisdiction="KW",
        sponsor=sponsor,
        sponsor_is_kuwaiti=False,
        members=(
            MemberInput(
                sponsor,
                fees.Relationship.SELF,
                fees.ResidenceCategory.PRIVATE_SECTOR_WORKER,
                dt.date(1990, 1, 1),
            ),
            MemberInput(
                spouse,
                fees.Relationship.SPOUSE,
                fees.ResidenceCategory.DEPENDENT,
                dt.date(1990, 1, 1),
            ),
        ),
        period_start=dt.date(2027, 1, 1),
        period_end=dt.date(2027, 12, 31),
    )


def _fee_items(
    engine: Engine, appender: Appender, operator: Signer, count: int, now: dt.datetime
) -> list[PendingEntry]:
    """``count`` renewals quoted and captured by the saga, their FeeCollected submissions held
    (see :class:`_HeldRecorder`): the authority is registered first."""
    import payments.recording  # noqa: F401 (registers the payments.mark_recorded append hook)

    authority = Ed25519Signer.generate(_AUTHORITY)
    since = now - dt.timedelta(days=1)
    registered = key_registered(
        _AUTHORITY,
        authority.public_key,
        role=SignerRole.AUTHORITY,
        valid_from=since,
        occurred_at=since,
    )
    for outcome in appender.append_batch([_pending(operator, registered)], now):
        if not isinstance(outcome, Receipt):
            raise RuntimeError(f"onboarding refused: {outcome}")
    recorder = _HeldRecorder(authority)
    renewals = Renewals(
        engine,
        {"simulated": SimulatedGateway()},
        recorder,
        CoverageReader(engine),
        FixedClock(now),
        authority_id=_AUTHORITY,
    )
    for number in range(count):
        quote = renewals.quote(_renewal_request(number))
        with contextlib.suppress(Unavailable):  # held: the payment stays recording
            renewals.start_payment(quote.quote_id, f"bench-{number:08d}", "simulated")
    if len(recorder.held) != count:
        raise RuntimeError(f"{len(recorder.held)} of {count} renewals reached their record")
    return recorder.held


class _Counter:
    """Statements SQLAlchemy sends (``before_cursor_execute``, an ``executemany`` counting
    once) and, on PostgreSQL, the server's ReadyForQuery messages read from libpq's trace."""

    def __init__(self, engine: Engine, trace: Path | None) -> None:
        self.statements = 0
        self._trace = trace
        self._handles: list[io.BufferedWriter] = []

        @sqlalchemy_event.listens_for(engine, "before_cursor_execute")
        def _count(*_arguments: object) -> None:
            self.statements += 1

        if trace is not None:

            @sqlalchemy_event.listens_for(engine, "connect")
            def _traced(dbapi_connection: psycopg.Connection[TupleRow], _record: object) -> None:
                handle = trace.open("ab")
                self._handles.append(handle)
                dbapi_connection.pgconn.trace(handle.fileno())

    def round_trips(self) -> int:
        """ReadyForQuery messages traced so far."""
        if self._trace is None or not self._trace.exists():
            return 0
        for handle in self._handles:
            handle.flush()
        with self._trace.open("rb") as lines:
            return sum(1 for line in lines if b"\tB\t" in line and b"ReadyForQuery" in line)


def measure_sequencer_cpu(
    folder: Path,
    events: int,
    batch: int,
    profile: Path | None = None,
    url: str | None = None,
    trace: bool = False,
    fees: bool = False,
) -> SequencerFigures:
    """Append ``events`` of the streaming mix (with ``fees``, renewals' FeeCollected entries)
    in batches of ``batch`` to a fresh log in ``folder`` (or at ``url``); the appending
    thread's CPU and wall time, statements and round trips."""
    engine = create_ledger_engine(url or sqlite_url(folder / "sequencer.db"))
    counter = _Counter(engine, folder / "libpq.trace" if url is not None and trace else None)
    upgrade(engine)
    log_signer = Ed25519Signer.generate("bench/log")
    operator, insurer = Ed25519Signer.generate(OPERATOR_ID), Ed25519Signer.generate(_INSURER)
    now = dt.datetime.now(dt.UTC)
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(now)
    _onboard(appender, operator, insurer, now)
    vault = VaultStore(engine)

    def tokens(people: Sequence[types_pb2.PersonId]) -> list[str]:
        return vault.tokens_for([person_ref(p) for p in people], now)

    items = (
        _fee_items(engine, appender, operator, events, now)
        if fees
        else [_pending(insurer, e) for e in sample_events(events, _INSURER, now, tokens=tokens)]
    )
    batches = [items[start : start + batch] for start in range(0, len(items), batch)]
    profiler = cProfile.Profile() if profile is not None else None
    statements, round_trips = counter.statements, counter.round_trips()
    cpu_started, wall_started = time.thread_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for group in batches:
        for outcome in appender.append_batch(group, dt.datetime.now(dt.UTC)):
            if not isinstance(outcome, Receipt):
                raise RuntimeError(f"refused: {outcome}")
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.thread_time() - cpu_started, time.perf_counter() - wall_started
    figures = SequencerFigures(
        len(items),
        cpu,
        wall,
        len(batches),
        counter.statements - statements,
        counter.round_trips() - round_trips,
    )
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    engine.dispose()
    return figures


def sequencer_process_cpu_seconds(server_pid: int) -> float | None:
    """User + system CPU seconds so far of the sequencer process under ``serve --workers N``
    (the descendant of ``server_pid`` running ``ledger.rpc.children sequencer``); None without
    one (``--workers 0``) or off Linux."""
    for pid in _descendants(server_pid):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"ledger.rpc.children" not in arguments or b"sequencer" not in arguments:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in children.read_text().split())
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in _descendants(child)]


@contextmanager
def _database(postgres: bool) -> Iterator[str | None]:
    if not postgres:
        yield None
        return
    from bench.multi_instance import fresh_database

    with fresh_database() as url:
        yield url


def report(
    events: int,
    batch: int,
    postgres: bool = False,
    trace: bool = False,
    fees: bool = False,
) -> None:
    """Print the figure in the bench's format (one line)."""
    with (
        tempfile.TemporaryDirectory(prefix="policy-ledger-sequencer-") as scratch,
        _database(postgres) as url,
    ):
        figures = measure_sequencer_cpu(
            Path(scratch), events, batch, url=url, trace=trace, fees=fees
        )
    load = os.getloadavg()[0]
    where = "PostgreSQL" if postgres else "SQLite"
    mix = "FeeCollected" if fees else "append_batch"
    text = (
        f"  sequencer CPU ({where}, {mix}, batches of {batch})".ljust(58)
        + f"{figures.cpu_us_per_event:,.0f} us/event".rjust(14)
        + f", {figures.cpu_us_per_batch:,.0f} us/batch"
        + f"  {figures.events} events, {figures.events / figures.wall_seconds:,.0f}/s wall, "
        f"{figures.wall_seconds / max(figures.batches, 1) * 1e3:,.2f} ms/batch wall, "
        f"{figures.statements / max(figures.batches, 1):.1f} statements/batch"
        + (
            f", {figures.round_trips / max(figures.batches, 1):.1f} round trips/batch"
            if trace
            else ""
        )
        + f"; load average {load:.1f}"
    )
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sequencer_cpu``: the figure, or a cProfile of it."""
    parser = argparse.ArgumentParser(prog="python -m bench.sequencer_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the appends here")
    parser.add_argument("--postgres", action="store_true", help="append to PostgreSQL")
    parser.add_argument(
        "--fees", action="store_true", help="renewals' FeeCollected entries with their hook"
    )
    parser.add_argument(
        "--round-trips",
        action="store_true",
        help="with --postgres: count round trips from a libpq trace (which costs CPU itself)",
    )
    args = parser.parse_args(argv)
    if args.profile is not None:
        with (
            tempfile.TemporaryDirectory(prefix="policy-ledger-sequencer-") as scratch,
            _database(args.postgres) as url,
        ):
            figures = measure_sequencer_cpu(
                Path(scratch), args.events, args.batch, args.profile, url=url, fees=args.fees
            )
        print(f"{figures.cpu_us_per_event:,.0f} us/event (profiled)")
        return 0
    for _ in range(args.repeat):
        report(
            args.events,
            args.batch,
            postgres=args.postgres,
            trace=args.round_trips,
            fees=args.fees,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
