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
a cProfile of the appends).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from clients.operator import OPERATOR_ID, insurer_licensed, key_registered
from clients.samples import sample_events
from ledger.coverage.projector import person_ref
from ledger.dsse import sign_envelope
from ledger.events import EVENT_PAYLOAD_TYPE, decode_event
from ledger.keys import insurer_key_id
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, Signer
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.storage.vault_store import VaultStore
from ledger.v1 import events_pb2, types_pb2

__all__ = ["SequencerFigures", "measure_sequencer_cpu", "sequencer_process_cpu_seconds"]

_INSURER = "bench-insurer"


class SequencerFigures:
    """What one run measured."""

    def __init__(self, events: int, cpu_seconds: float, wall_seconds: float) -> None:
        self.events = events
        self.cpu_seconds = cpu_seconds
        self.wall_seconds = wall_seconds

    @property
    def cpu_us_per_event(self) -> float:
        """The appending thread's CPU time per event, in microseconds."""
        return self.cpu_seconds / self.events * 1e6


def _pending(signer: Signer, event: events_pb2.Event) -> PendingEntry:
    payload = event.SerializeToString(deterministic=True)
    key_id = insurer_key_id(signer.public_key)
    envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, signer, key_id)
    return PendingEntry(
        envelope=envelope,
        insurer_id=event.insurer_id,
        event_id=event.event_id,
        key_id=key_id,
        event=decode_event(payload),
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


def measure_sequencer_cpu(
    folder: Path, events: int, batch: int, profile: Path | None = None
) -> SequencerFigures:
    """Append ``events`` of the streaming mix in batches of ``batch`` to a fresh log in
    ``folder``; the appending thread's CPU and wall time."""
    engine = create_ledger_engine(sqlite_url(folder / "sequencer.db"))
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

    items = [_pending(insurer, e) for e in sample_events(events, _INSURER, now, tokens=tokens)]
    batches = [items[start : start + batch] for start in range(0, len(items), batch)]
    profiler = cProfile.Profile() if profile is not None else None
    cpu_started, wall_started = time.thread_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for group in batches:
        for outcome in appender.append_batch(group, dt.datetime.now(dt.UTC)):
            if not isinstance(outcome, Receipt):
                raise RuntimeError(f"refused: {outcome}")
    if profiler is not None:
        profiler.disable()
    figures = SequencerFigures(
        len(items), time.thread_time() - cpu_started, time.perf_counter() - wall_started
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


def report(events: int, batch: int, line: object = None) -> None:
    """Print the figure in the bench's format (one line)."""
    with tempfile.TemporaryDirectory(prefix="policy-ledger-sequencer-") as scratch:
        figures = measure_sequencer_cpu(Path(scratch), events, batch)
    load = os.getloadavg()[0]
    text = (
        f"  sequencer CPU (append_batch, batches of {batch})".ljust(58)
        + f"{figures.cpu_us_per_event:,.0f} us/event".rjust(14)
        + f"  {figures.events} events, {figures.events / figures.wall_seconds:,.0f}/s wall; "
        f"load average {load:.1f}"
    )
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sequencer_cpu``: the figure, or a cProfile of it."""
    parser = argparse.ArgumentParser(prog="python -m bench.sequencer_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the appends here")
    args = parser.parse_args(argv)
    if args.profile is not None:
        with tempfile.TemporaryDirectory(prefix="policy-ledger-sequencer-") as scratch:
            figures = measure_sequencer_cpu(Path(scratch), args.events, args.batch, args.profile)
        print(f"{figures.cpu_us_per_event:,.0f} us/event (profiled)")
        return 0
    for _ in range(args.repeat):
        report(args.events, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
