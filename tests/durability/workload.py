"""Load for the durability tests, and the checks that nothing acknowledged was lost.

Streaming and unary submitters run in threads; every receipt they get is verified (signature and
inclusion, by :class:`clients.insurer.InsurerClient`) and remembered with the envelope that was
signed. A fault (a killed process, an injected I/O error) ends a submitter at its first
refusal. The checks afterwards ask the (restarted) server for every acknowledged leaf, prove each
checkpoint seen consistent with the next, audit the whole log, and resubmit every event that was
never acknowledged: each must get a receipt (new or duplicate), never a conflict.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from sqlalchemy.exc import DBAPIError

from clients.auditor import AuditorClient
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.samples import policy_issued
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.checkpoint import Checkpoint
from ledger.keys import insurer_key_id
from ledger.merkle import leaf_hash
from ledger.signing import Signer
from ledger.v1 import types_pb2
from tests.builders import tokens

__all__ = ["Ledger", "Load", "Recorded"]

OCCURRED_AT = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
"""Every event's time: fixed, so a resubmitted event is the same bytes."""
EVENTS_PER_SUBMITTER_MAX = 10_000
"""Each submitter numbers its events in its own block of this size (no two share an id); one
submitter sends far fewer in a cycle (a kill comes after tens of receipts)."""
HOUSEHOLDS_MAX = 10**8 // 16
"""Sample households (``clients.samples.household``: iqamas ``16 * number + position`` on 8
digits) have people of their own below this number; above, they wrap onto earlier households'
people, whose second policy the ledger refuses (DOUBLE_COVERAGE): blocks stay below it."""
STREAM_WINDOW = 32
"""Events one stream sends ahead of its receipts: enough to keep batches full, few enough that
resubmitting the unacknowledged ones after a kill stays quick."""


@dataclass
class Recorded:
    """What the clients saw: receipts, refusals, and every envelope they signed."""

    envelopes: dict[str, types_pb2.Envelope] = field(default_factory=dict)
    receipts: dict[str, VerifiedReceipt] = field(default_factory=dict)
    refusals: list[ClientError] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.acknowledged = threading.Condition(self.lock)

    def signed(self, event_id: str, envelope: types_pb2.Envelope) -> None:
        with self.lock:
            self.envelopes[event_id] = envelope

    def receipt(self, receipt: VerifiedReceipt) -> None:
        with self.lock:
            self.receipts[receipt.event_id] = receipt
            self.checkpoints.append(receipt.checkpoint)
            self.acknowledged.notify_all()

    def refusal(self, error: ClientError) -> None:
        with self.lock:
            self.refusals.append(error)
            self.acknowledged.notify_all()

    def wait_for_receipts(self, count: int, stopped: threading.Event) -> None:
        """Return once ``count`` receipts are recorded, or every submitter has stopped."""
        with self.acknowledged:
            self.acknowledged.wait_for(lambda: len(self.receipts) >= count or stopped.is_set())

    def unacknowledged(self) -> list[str]:
        with self.lock:
            return [event_id for event_id in self.envelopes if event_id not in self.receipts]


@dataclass
class Ledger:
    """How the tests reach one log: its trusted key, the insurer's signer and its address."""

    log: TrustedLog
    insurer_id: str
    insurer_signer: Signer
    operator_signer: Signer
    log_signer: Signer
    """Signs the genesis entry (leaf 0), which names the operator's first key."""

    def insurer_keys(self) -> dict[str, bytes]:
        signers = (self.insurer_signer, self.operator_signer, self.log_signer)
        return {insurer_key_id(signer.public_key): signer.public_key for signer in signers}


class Load:
    """Streaming and unary submitters against one server, until each meets its first refusal."""

    def __init__(self, ledger: Ledger, recorded: Recorded, first_block: int) -> None:
        self._ledger = ledger
        self._recorded = recorded
        self._blocks = itertools.count(first_block)
        self._threads: list[threading.Thread] = []
        self._running = 0
        self.stopped = threading.Event()
        """Set once every submitter has ended."""
        self.stopping = threading.Event()
        """Set once any stream has ended (its request generator must not block)."""

    def start(self, channel: grpc.Channel, streams: int, unary: int) -> None:
        self._running = streams + unary
        for number in range(streams + unary):
            target = self._stream if number < streams else self._unary
            thread = threading.Thread(
                target=self._run, args=(target, channel, next(self._blocks)), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _run(self, target: object, channel: grpc.Channel, block: int) -> None:
        try:
            target(channel, block)  # type: ignore[operator]
        finally:
            with self._recorded.lock:
                self._running -= 1
                if self._running == 0:
                    self.stopped.set()
                self._recorded.acknowledged.notify_all()

    def _client(self, channel: grpc.Channel) -> InsurerClient:
        return InsurerClient(channel, signer=self._ledger.insurer_signer, log=self._ledger.log)

    def _envelopes(
        self, client: InsurerClient, block: int, window: threading.Semaphore | None = None
    ) -> Iterator[types_pb2.Envelope]:
        first = block * EVENTS_PER_SUBMITTER_MAX
        if first + EVENTS_PER_SUBMITTER_MAX > HOUSEHOLDS_MAX:
            raise ValueError(
                f"block {block} would number households past {HOUSEHOLDS_MAX:,}, whose people "
                "repeat earlier households' (run fewer cycles)"
            )
        for number in range(first, first + EVENTS_PER_SUBMITTER_MAX):
            if window is not None:
                window.acquire()
                if self.stopping.is_set():
                    return
            try:
                event = policy_issued(number, self._ledger.insurer_id, OCCURRED_AT, tokens=tokens)
            except DBAPIError:
                # The tokens come straight from the vault's database: when the test kills that
                # database, this submitter has nothing more to send (an exception here would
                # reach the server as the client's own UNKNOWN "Exception iterating requests").
                return
            envelope = client.sign(event)
            self._recorded.signed(event.event_id, envelope)
            yield envelope

    def _stream(self, channel: grpc.Channel, block: int) -> None:
        client = self._client(channel)
        window = threading.Semaphore(STREAM_WINDOW)
        try:
            # One envelope per message: the generator waits for the window, so it must not be
            # asked for more envelopes than the window lets it yield before results come back.
            envelopes = self._envelopes(client, block, window)
            for result in client.submit_envelopes(envelopes, per_message=1):
                window.release()
                if isinstance(result, ClientError):
                    self._recorded.refusal(result)
                    return
                self._recorded.receipt(result)
        except ClientError as error:
            self._recorded.refusal(error)
        finally:
            # Wake the request generator if it waits for the window, so its thread ends.
            self.stopping.set()
            window.release(STREAM_WINDOW)

    def _unary(self, channel: grpc.Channel, block: int) -> None:
        client = self._client(channel)
        for envelope in self._envelopes(client, block):
            try:
                receipt = client.submit_envelope(envelope)
            except ClientError as error:
                self._recorded.refusal(error)
                return
            self._recorded.receipt(receipt)


def check_nothing_acknowledged_is_lost(auditor: AuditorClient, recorded: Recorded) -> Checkpoint:
    """Every receipt's leaf is at its index with its hash; return the latest checkpoint."""
    latest = auditor.checkpoint()
    by_index = {receipt.leaf_index: receipt for receipt in recorded.receipts.values()}
    assert all(index < latest.size for index in by_index), "an acknowledged leaf is beyond the log"
    for index, data in auditor.entries(0, latest.size):
        if index in by_index:
            assert leaf_hash(data) == by_index[index].leaf_hash, f"leaf {index} changed"
    return latest


def check_checkpoints_consistent(auditor: AuditorClient, checkpoints: list[Checkpoint]) -> None:
    """Each checkpoint seen is consistent with the next larger one (no rewrite, no fork)."""
    distinct = sorted(
        {(c.size, c.root_hash): c for c in checkpoints}.values(), key=lambda c: c.size
    )
    for older, newer in itertools.pairwise(distinct):
        auditor.verify_consistency(older, newer)


def resubmit_unacknowledged(channel: grpc.Channel, ledger: Ledger, recorded: Recorded) -> int:
    """Resubmit every event never acknowledged: each gets a receipt, never a conflict."""
    client = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
    event_ids = recorded.unacknowledged()
    envelopes = [recorded.envelopes[event_id] for event_id in event_ids]
    results = client.submit_envelopes(envelopes)
    for event_id, result in zip(event_ids, results, strict=True):
        assert not isinstance(result, ClientError), f"resubmitting {event_id}: {result}"
        recorded.receipt(result)
    return len(event_ids)
