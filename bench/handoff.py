"""Admission and hand-off costs per event (issue 13 items 3 and 5): what each process of
``serve --workers N`` spends, and what the worker -> sequencer hand-off adds to admission.

:func:`cpu_seconds_by_process` splits the server's CPU time over its processes (the supervisor,
the sequencer process, each worker; Linux /proc); :func:`bench_handoff_codec` times, in this
process and on its own CPU clock (``time.thread_time``, best of several rounds, so a busy machine
slows it less than the wall clock), the work the hand-off does per event at each end beside the
payload decoding admission does anyway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bench.kit import Line
from clients.insurer import sign_event
from clients.samples import sample_events
from ledger.dsse import Envelope
from ledger.entry import envelope_from_proto
from ledger.events import decode_event
from ledger.handoff import wire
from ledger.internal.v1 import handoff_pb2
from ledger.signing import Ed25519Signer
from ledger.storage.append import PendingEntry, Receipt

__all__ = ["bench_handoff_codec", "cpu_seconds_by_process", "process_split"]

_T = TypeVar("_T")
_R = TypeVar("_R")


def _role(pid: int) -> str:
    """``sequencer``, ``worker`` or ``main`` (the single process, or the supervisor)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "main"
    if b"ledger.rpc.children" in words:
        position = words.index(b"ledger.rpc.children")
        if position + 1 < len(words):
            return words[position + 1].decode()
    return "main"


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_process(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid`` and its live descendants, summed by role (``main``,
    ``sequencer``, ``worker``: all workers together)."""
    totals: dict[str, float] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        role = _role(current)
        totals[role] = totals.get(role, 0.0) + _own_cpu_seconds(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return totals


def process_split(before: dict[str, float], after: dict[str, float], events: int) -> str:
    """`` (sequencer 640, workers 250)``: each role's CPU us per event between two readings;
    empty for the single process (its total says it all)."""
    roles = [role for role in ("sequencer", "worker") if role in after]
    if not roles:
        return ""
    parts = [
        f"{role}{'s' if role == 'worker' else ''} "
        f"{(after[role] - before.get(role, 0.0)) / events * 1e6:,.0f}"
        for role in roles
    ]
    return f" ({', '.join(parts)})"


def _best_us(work: Callable[[_T], _R], items: Sequence[_T], rounds: int = 5) -> float:
    """The least CPU time ``work`` took per item over ``rounds`` passes, in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for item in items:
            work(item)
        best = min(best, time.thread_time() - started)
    return best / len(items) * 1e6


def bench_handoff_codec(line: Line, count: int = 2000) -> None:
    """Per event: admission's payload decoding, and each end of the hand-off."""
    signer = Ed25519Signer.generate("bench-insurer")
    now = dt.datetime.now(dt.UTC)
    events = list(
        sample_events(count, "bench-insurer", now, tokens=lambda ids: ["pt_" + "a" * 26] * len(ids))
    )
    envelopes = [envelope_from_proto(sign_event(event, signer)) for event in events]
    items = [
        PendingEntry(envelope, "bench-insurer", event.event_id, "key", event=event)
        for envelope, event in zip(envelopes, events, strict=True)
    ]
    frames = [
        wire.encode_frame(handoff_pb2.Frame(admitted=wire.admitted_of(item, 1, "caller")))
        for item in items
    ]
    receipt = Receipt(
        "bench-insurer-issue-1", 1 << 20, b"h" * 32, b"e" * 600, b"c" * 400, (1 << 20) + 1,
        tuple(b"p" * 32 for _ in range(20)), False,
    )  # fmt: skip
    outcomes = [
        wire.encode_frame(wire.outcome_frame(handoff_id, receipt)) for handoff_id in range(count)
    ]
    load = f"load average {os.getloadavg()[0]:.1f}"

    def decode(envelope: Envelope) -> None:
        decode_event(envelope.payload)

    def worker_sends(item: PendingEntry) -> None:
        wire.encode_frame(handoff_pb2.Frame(admitted=wire.admitted_of(item, 1, "caller")))

    def sequencer_takes(frame: bytes) -> None:
        wire.pending_entry_of(handoff_pb2.Frame.FromString(frame[4:]).admitted)

    def sequencer_answers(handoff_id: int) -> None:
        wire.encode_frame(wire.outcome_frame(handoff_id, receipt))

    def worker_takes(frame: bytes) -> None:
        wire.outcome_of(handoff_pb2.Frame.FromString(frame[4:]).outcome)

    line(
        "admission: decode the payload (strict)",
        f"{_best_us(decode, envelopes):.1f} us/event",
        load,
    )
    line("hand-off: worker encodes an entry", f"{_best_us(worker_sends, items):.1f} us/event", load)
    line(
        "hand-off: sequencer decodes it", f"{_best_us(sequencer_takes, frames):.1f} us/event", load
    )
    line(
        "hand-off: sequencer encodes the outcome",
        f"{_best_us(sequencer_answers, range(count)):.1f} us/event",
        load,
    )
    line(
        "hand-off: worker decodes the outcome",
        f"{_best_us(worker_takes, outcomes):.1f} us/event",
        load,
    )
