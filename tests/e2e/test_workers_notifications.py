"""`serve --workers 2` with the payments extension: the gateway-notification receiver listens in
one process only, the sequencer process, and the workers give gateways its URL
(payments/notifications.py ``place_receiver``, the supervisor's
``policy_ledger.child_environments`` entry point).

Without that hook every process would start a receiver of its own on a port of its own, and each
worker would hand gateways its own URL: payments would still be confirmed, so only counting the
listeners shows it. Here a KNET payment started through a worker names the sequencer process's
receiver as its ``responseURL``; that receiver is the only extra listener of the whole process
tree; the sandbox's notification to it is stored and acknowledged, and the receiver's own
confirmation (an inquiry, then the FeeCollected entry) records the payment. Every wait is for an
event: the serving line, the watch's heartbeat after the commit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from clients.portal import PortalClient, WatchStream
from clients.renewal import RenewalClient
from clients.verify import TrustedLog
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.append import Appender
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.v1 import events_pb2, types_pb2
from payments.notifications import NOTIFY_LISTEN_ENVIRONMENT, NOTIFY_URL_ENVIRONMENT
from payments.sandbox.knet import KnetSandbox
from payments.tables import gateway_notifications
from payments.v1 import renewal_service_pb2 as pb
from tests.conftest import onboard_directly
from tests.durability.processes import ServerProcess, start_server_process
from tests.payments.support import civil_id

AUTHORITY = "kw-gov-health"
SPONSOR = civil_id(4711, 0)
WAIT_SECONDS = 120.0
"""A hang guard on the watch, never a timing assumption."""


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on: its socket inodes (/proc/PID/fd) looked up
    in its network namespace's tables (/proc/PID/net/tcp and tcp6, state 0A is LISTEN)."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except FileNotFoundError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_address, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                ports.add(int(local_address.rpartition(":")[2], 16))
    return ports


@pytest.fixture
def knet() -> Iterator[KnetSandbox]:
    with KnetSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def server(
    tmp_path: Path,
    knet: KnetSandbox,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServerProcess]:
    """`serve --workers 2` with the payments extension, KNET pointing at the sandbox and the
    receiver configured on port 0 (the supervisor picks one), on a log where the renewal
    authority's key is registered."""
    database_url = sqlite_url(tmp_path / "ledger.db")
    authority = Ed25519Signer.generate(AUTHORITY)
    engine = create_ledger_engine(database_url)
    try:
        upgrade(engine)
        appender = Appender(engine, log_signer, log_signer.name)
        now = dt.datetime.now(dt.UTC)
        appender.initialize(now)
        onboard_directly(
            engine, appender, operator_signer, AUTHORITY, authority, now, SignerRole.AUTHORITY
        )
    finally:
        engine.dispose()
    log_key = tmp_path / "log.key"
    log_key.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    authority_key = tmp_path / "authority.key"
    authority_key.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    gateways = tmp_path / "gateways.json"
    receipt_url = "https://portal.example/receipt"
    gateways.write_text(json.dumps({"knet": knet.settings(receipt_url)}), encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(authority_key))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_GATEWAYS", str(gateways))
    monkeypatch.setenv(NOTIFY_LISTEN_ENVIRONMENT, "127.0.0.1:0")
    monkeypatch.delenv(NOTIFY_URL_ENVIRONMENT, raising=False)
    server = start_server_process(database_url, log_key, tmp_path, workers=2)
    try:
        yield server
    finally:
        server.stop()
        if server.process.poll() is None:
            server.kill()


def _renewal_request() -> pb.QuoteRenewalRequest:
    """A Kuwaiti worker's renewal for 2027, one member."""
    request = pb.QuoteRenewalRequest(
        jurisdiction="KW",
        sponsor=SPONSOR,
        period_start=types_pb2.CivilDate(year=2027, month=1, day=1),
        period_end=types_pb2.CivilDate(year=2027, month=12, day=31),
    )
    request.members.add(
        person=SPONSOR,
        relationship=events_pb2.RELATIONSHIP_SELF,
        residence_category=pb.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER,
        birth_date=types_pb2.CivilDate(year=1985, month=5, day=5),
    )
    return request


def test_one_receiver_in_the_sequencer_process_confirms_a_payment_started_on_a_worker(
    server: ServerProcess, knet: KnetSandbox, log_signer: Ed25519Signer, tmp_path: Path
) -> None:
    log = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
    with server.channel("portal", "KW") as channel:
        renewals = RenewalClient(channel, log=log)
        quote = renewals.quote(_renewal_request()).quote
        started = renewals.start_payment(quote.quote_id, "workers-notify-0001", gateway="knet")
        assert started.state == pb.PAYMENT_STATE_PENDING
        with urllib.request.urlopen(started.redirect_url, timeout=WAIT_SECONDS) as page:
            assert page.status == 200  # the customer reaches the hosted page

        # (1) The URL the worker gave KNET is the one receiver's, in the sequencer process, and
        # no other process of the tree listens anywhere but on the gRPC port.
        response_url = urllib.parse.urlsplit(knet.payments[started.payment_id].response_url)
        assert (response_url.hostname, response_url.path) == ("127.0.0.1", "/notify/knet")
        processes = {"supervisor": server.process.pid, **server.pids}
        listeners = {name: listening_ports(pid) for name, pid in processes.items()}
        assert listeners == {
            "supervisor": set(),  # it holds the gRPC address, bound, but does not listen
            "sequencer": {response_url.port},
            "worker-1": {server.port},
            "worker-2": {server.port},
        }

        # (2) The customer pays; KNET's notification reaches that receiver, which stores it
        # (verified: its trandata decrypts with the terminal's key) before it answers REDIRECT=.
        watch = PortalClient(channel, log=log).watch(
            household_sponsor=SPONSOR, jurisdiction="KW", deadline_seconds=WAIT_SECONDS
        )
        try:
            tree_size = next(_heartbeats(watch))  # the log's size before the payment
            [delivery] = knet.pay(started.payment_id, "CAPTURED")
            assert delivery.acknowledged and delivery.answer.startswith("REDIRECT=")
            engine = create_ledger_engine(sqlite_url(tmp_path / "ledger.db"))
            try:
                with engine.connect() as connection:
                    stored = connection.execute(select(gateway_notifications)).all()
            finally:
                engine.dispose()
            assert [(row.payment_id, row.gateway, row.verified) for row in stored] == [
                (started.payment_id, "knet", "true")
            ]
            # (3) The receiver's confirmation asks KNET itself, then appends the FeeCollected
            # entry: the watch's next heartbeat past the commit shows the log one entry longer.
            grown = next(size for size in _heartbeats(watch) if size > tree_size)
        finally:
            watch.cancel()
        assert grown == tree_size + 1
        assert [request.get("action") for request in knet.tran_pipe_requests] == ["8"]
        payment = renewals.get(payment_id=started.payment_id).payment
    assert payment.state == pb.PAYMENT_STATE_RECORDED
    assert payment.receipt.leaf_index == tree_size
    assert payment.captured_minor == quote.total.amount_minor


def _heartbeats(watch: WatchStream) -> Iterator[int]:
    """The tree sizes of the watch's heartbeats (its entry messages left out)."""
    for message in watch:
        if message.WhichOneof("kind") == "heartbeat":
            yield message.tree_size
