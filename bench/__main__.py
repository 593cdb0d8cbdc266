"""``make bench``: throughput and latency of the ledger, each next to the same run's ceiling.

Not a test: it prints figures and never fails on speed. What it measures, in one run:

* ceilings: empty gRPC unary and stream message rates (same client style, same machine), the
  Ed25519 verify rate, the raw SQLite commit rate (WAL, synchronous=FULL);
* signed events/s end to end over gRPC, streaming and unary (signatures verified by the server,
  every batch durably committed), and receipt latency p50/p99 of unary calls under concurrency;
* inclusion and consistency proof latency at a tree of ``--entries`` leaves (default 1,000,000),
  both from the store directly and over gRPC;
* task D: a funder's cohort of ``--cohort-members`` (default 25,000) streamed in one
  ``SubmitEvents`` call, in members/s next to SQLite's rate for the member rows alone.

The server under test runs as a separate process (``policy-ledger serve``) so the client's work
does not share its interpreter lock. Every call runs over mutual TLS with certificates from
``pki init`` (as in production); the echo ceilings are measured in plaintext and over mTLS, which
is what TLS costs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import fairness
from bench.bulk import bulk_load
from bench.cohort import FUNDER, bench_cohort, member_insert_ceiling
from bench.echo import start_echo_server
from bench.handoff import bench_handoff_codec, cpu_seconds_by_process, process_split
from bench.kit import BenchKit, cpu_seconds, start_server
from bench.multi_instance import Harness, bench_instances
from clients.channel import ClientCredentials, Connection
from clients.insurer import sign_event
from clients.operator import OPERATOR_ID, OperatorClient
from clients.person_tokens import PersonTokens
from clients.samples import TokenSource, policy_issued, sample_events
from clients.verify import TrustedLog
from ledger import limits
from ledger.pki import init_directory, issue_into_directory
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url
from ledger.v1 import events_pb2, types_pb2
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

INSURER = "bench-insurer"
_PKI: list[Path] = []
"""The credentials directory of this run (``pki init``), made once in ``main``."""


def pki() -> Path:
    """The run's credentials directory."""
    return _PKI[0]


def tls_flags() -> list[str]:
    """The ``serve`` flags for mTLS with the run's certificates."""
    directory = pki()
    return [
        "--tls-cert",
        str(directory / "server.pem"),
        "--tls-key",
        str(directory / "server.key"),
        "--client-ca",
        str(directory / "ca.pem"),
    ]


def channel_as(address: str, identity: str) -> grpc.Channel:
    """An mTLS channel presenting ``identity``'s certificate (``role-name``)."""
    return Connection(address, ClientCredentials.from_directory(pki(), identity)).open()


def line(name: str, value: str, note: str = "") -> None:
    """One figure."""
    print(f"  {name:<46} {value:>16}  {note}", flush=True)


def rate(count: int, seconds: float) -> str:
    """Count per second, readable."""
    return f"{count / seconds:,.0f}/s"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return (
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    )


def ed25519_verify_rate(seconds: float = 1.0) -> float:
    """Verifications per second of one core."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = b"x" * 300
    signature = key.sign(message)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            public.verify(signature, message)
        count += 200
    return count / (time.perf_counter() - started)


def sqlite_commit_rate(folder: Path, seconds: float = 1.0) -> float:
    """Durable single-row commits per second (WAL, synchronous=FULL): the fsync ceiling."""
    connection = sqlite3.connect(folder / "commit.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 300,))
        connection.execute("COMMIT")
        count += 1
    connection.close()
    return count / (time.perf_counter() - started)


class ServerProcess:
    """``policy-ledger serve`` on a fresh SQLite file, as a child process."""

    def __init__(
        self,
        folder: Path,
        signer: Ed25519Signer,
        environment: dict[str, str] | None = None,
        workers: int | None = None,
    ) -> None:
        """``workers``: ``serve --workers`` (None: serve's default, one worker per core)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "log.key").write_text(format_signer_key(signer) + "\n")
        port_file = folder / "port"
        command = [
            sys.executable,
            "-m",
            "policy_ledger.cli",
            "serve",
            "--database",
            sqlite_url(folder / "ledger.db"),
            "--listen",
            "127.0.0.1:0",
            "--log-key-file",
            str(folder / "log.key"),
            *tls_flags(),
            "--operator-verifier",
            format_verifier_key(_OPERATOR),
            "--port-file",
            str(port_file),
            *(() if workers is None else ("--workers", str(workers))),
            # More serve options for an experiment (`--batch-age-ms 5`), as a shell would split.
            *shlex.split(os.environ.get("POLICY_LEDGER_BENCH_SERVE_ARGS", "")),
        ]
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {})},
        )
        # A bound against a server that never starts, not a speed check: `serve --workers N`
        # starts N + 1 processes, which took 10 s at a load average of 7 (a smoke test of the
        # bench failed on 30 s under -n 2 at a load average of 12).
        deadline = time.monotonic() + limits.process_ready_seconds_max
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"server did not start; see {folder / 'server.log'}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


_OPERATOR = Ed25519Signer.generate(OPERATOR_ID)
"""The operator of every bench server (named by its genesis entry)."""


def _onboard(
    address: str,
    log_signer: Ed25519Signer,
    public_key: bytes,
    principal: str = INSURER,
    role: SignerRole = SignerRole.INSURER,
) -> None:
    """Register the principal's key in ``role`` (and license an insurer), as operator events
    over an operator's mTLS channel."""
    with channel_as(address, "operator-operator") as channel:
        _onboard_over(channel, log_signer, public_key, principal, role)


def _onboard_over(
    channel: grpc.Channel,
    log_signer: Ed25519Signer,
    public_key: bytes,
    principal: str,
    role: SignerRole,
) -> None:
    operator = OperatorClient(
        channel,
        signer=_OPERATOR,
        log=TrustedLog.from_verifier_key(format_verifier_key(log_signer)),
    )
    operator.onboard(
        principal,
        public_key,
        name="Bench principal",
        licence_number="BENCH-1",
        valid_from=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        role=role,
    )


def _envelopes(
    signer: Ed25519Signer,
    count: int,
    first_number: int,
    *,
    tokens: TokenSource,
    independent: bool = False,
) -> list[types_pb2.Envelope]:
    """Signed sample events: households' policies, premiums and cancellations in order, or
    (``independent``) only policies, which concurrent callers may submit in any order. Built
    (their tokens asked) before any timing starts."""
    now = dt.datetime.now(dt.UTC)
    events = (
        [
            policy_issued(number, INSURER, now, tokens=tokens)
            for number in range(first_number, first_number + count)
        ]
        if independent
        else sample_events(count, INSURER, now, first_number=first_number, tokens=tokens)
    )
    return [sign_event(event, signer) for event in events]


def bench_submit(folder: Path, events: int, workers: int | None = None) -> None:
    """Signed events end to end over gRPC against a server process (``serve --workers``)."""
    log_signer, insurer = Ed25519Signer.generate("bench/log"), Ed25519Signer.generate(INSURER)
    name = "server" if workers is None else f"server-{workers}-workers"
    server = ServerProcess(folder / name, log_signer, workers=workers)
    try:
        _onboard(server.address, log_signer, insurer.public_key)
        with channel_as(server.address, f"insurer-{INSURER}") as channel:
            stub = pb_grpc.LedgerServiceStub(channel)
            # Household numbers: [0, events) streamed one per message, the next `unary`
            # numbers unary, then one range of `events` per grouped stream: no duplicates.
            tokens = PersonTokens(channel).tokens
            _bench_stream(server, stub, _envelopes(insurer, events, 0, tokens=tokens), 1)
            unary = max(200, events // 4)
            _bench_unary(stub, insurer, unary, first_number=events, tokens=tokens)
            several = (limits.submit_message_envelopes_default, limits.submit_message_envelopes_max)
            for position, per in enumerate(several):
                first = events + unary + position * events
                _bench_stream(server, stub, _envelopes(insurer, events, first, tokens=tokens), per)
            first = events + unary + len(several) * events
            paced = _envelopes(insurer, events, first, tokens=tokens)
            _bench_paced_stream(stub, paced, limits.submit_message_envelopes_default, PACED_RATE)
    finally:
        server.stop()


PACED_RATE = 1000
"""Events a second the paced stream offers (issue 13 item 5: receipts p99 <= 100 ms at 1,000/s)."""


def _bench_paced_stream(
    stub: pb_grpc.LedgerServiceStub, envelopes: list[types_pb2.Envelope], per: int, offered: int
) -> None:
    """One SubmitEvents stream offering ``offered`` events a second, ``per`` to a message (each
    message sent at its time, whatever came back); each event's receipt latency is the time from
    its message's sending to the answer holding its receipt (answers come in request order)."""
    sent: list[float] = []

    def requests() -> Iterator[pb.SubmitEventsRequest]:
        started = time.perf_counter()
        for number, start in enumerate(range(0, len(envelopes), per)):
            delay = started + number * per / offered - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.perf_counter())
            yield pb.SubmitEventsRequest(envelopes=envelopes[start : start + per])

    latencies: list[float] = []
    refused = 0
    started = time.perf_counter()
    for number, response in enumerate(stub.SubmitEvents(requests())):
        answered = time.perf_counter()
        results: list[pb.SubmitEventsResult | pb.SubmitEventsResponse] = [*response.results]
        results = results or [response]
        refused += sum(1 for result in results if result.WhichOneof("result") == "error")
        latencies.extend([answered - sent[number]] * len(results))
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    line(
        f"paced stream, {offered:,} events/s offered, {per} per message",
        rate(len(latencies), elapsed),
        f"receipt latency p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal: p99 <= 100 ms); "
        f"{refused} refused; load average {os.getloadavg()[0]:.1f}",
    )


def _bench_stream(
    server: ServerProcess,
    stub: pb_grpc.LedgerServiceStub,
    envelopes: list[types_pb2.Envelope],
    per: int,
) -> None:
    """One SubmitEvents stream of ``envelopes``, ``per`` to a request message; the rate and
    the server's CPU time per event (what grouping saves, whatever else the machine runs)."""
    if per == 1:
        requests = [pb.SubmitEventsRequest(envelope=e) for e in envelopes]
    else:
        requests = [
            pb.SubmitEventsRequest(envelopes=envelopes[i : i + per])
            for i in range(0, len(envelopes), per)
        ]
    split_before = cpu_seconds_by_process(server.process.pid)
    cpu_before, started = cpu_seconds(server.process.pid), time.perf_counter()
    responses = list(stub.SubmitEvents(iter(requests)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server.process.pid) - cpu_before
    split = process_split(split_before, cpu_seconds_by_process(server.process.pid), len(envelopes))
    results = [r for response in responses for r in (response.results or [response])]
    refused = sum(1 for result in results if result.WhichOneof("result") == "error")
    line(
        f"streaming submit (1 stream, {per} per message)",
        rate(len(envelopes), elapsed),
        f"{len(envelopes)} events, {refused} refused, "
        f"server CPU {cpu / len(envelopes) * 1e6:,.0f} us/event{split}; "
        f"load average {os.getloadavg()[0]:.1f}",
    )


def _bench_unary(
    stub: pb_grpc.LedgerServiceStub,
    insurer: Ed25519Signer,
    count: int,
    first_number: int,
    *,
    tokens: TokenSource,
) -> None:
    envelopes = _envelopes(insurer, count, first_number, tokens=tokens, independent=True)
    latencies: list[float] = []

    def call(envelope: types_pb2.Envelope) -> None:
        started = time.perf_counter()
        stub.SubmitEvent(pb.SubmitEventRequest(envelope=envelope))
        latencies.append(time.perf_counter() - started)

    for concurrency in (1, 32):
        latencies.clear()
        chunk = envelopes[: count // 2] if concurrency == 1 else envelopes[count // 2 :]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(call, chunk))
        elapsed = time.perf_counter() - started
        p50, p99 = percentiles(latencies)
        line(
            f"unary submit, {concurrency} concurrent caller(s)",
            rate(len(chunk), elapsed),
            f"receipt latency p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        )


def bench_funds(folder: Path, members: int) -> None:
    """Task D: one cohort of ``members`` streamed by a funder (bench/cohort.py)."""
    log_signer = Ed25519Signer.generate("bench/log")
    ceiling = member_insert_ceiling(folder, members)
    server = ServerProcess(folder / "funds-server", log_signer)
    try:

        def onboard(public_key: bytes, principal: str, role: SignerRole) -> None:
            _onboard(server.address, log_signer, public_key, principal, role)

        bench_cohort(
            lambda identity: channel_as(server.address, identity), onboard, members, line, ceiling
        )
    finally:
        server.stop()


def bench_echo(seconds: float = 2.0) -> None:
    """The empty-call ceilings, plaintext and over mTLS (what TLS costs): same client style,
    trivial aio server."""
    for transport in ("plaintext", "mTLS"):
        tls = transport == "mTLS"
        server_process, address = start_echo_server(pki() if tls else None)
        try:
            _echo_figures(address, transport, seconds, tls=tls)
        finally:
            server_process.terminate()
            server_process.wait(timeout=10)


def _open_echo_channel(address: str, *, tls: bool) -> grpc.Channel:
    return channel_as(address, "auditor-auditor") if tls else grpc.insecure_channel(address)


def _echo_unary(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """The echo server's unary method: raw bytes both ways (no serializers)."""
    return channel.unary_unary(
        "/bench.Echo/Unary", request_serializer=None, response_deserializer=None
    )


def _echo_stream(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable[bytes, bytes]:
    """The echo server's streaming method: raw bytes both ways (no serializers)."""
    return channel.stream_stream(
        "/bench.Echo/Stream", request_serializer=None, response_deserializer=None
    )


def _echo_figures(address: str, transport: str, seconds: float, *, tls: bool) -> None:
    with _open_echo_channel(address, tls=tls) as channel:
        unary, stream = _echo_unary(channel), _echo_stream(channel)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            unary(b"x" * 300)
            count += 1
        line(
            f"ceiling: empty unary gRPC calls, {transport}",
            rate(count, time.perf_counter() - started),
        )
        messages = 50_000
        started = time.perf_counter()
        received = sum(1 for _ in stream(b"x" * 300 for _ in range(messages)))
        line(
            f"ceiling: empty stream messages, {transport}",
            rate(received, time.perf_counter() - started),
        )
    # A new connection's first call: TCP + (for mTLS) the TLS 1.3 handshake with both certificates.
    latencies = []
    for _ in range(50):
        began = time.perf_counter()
        with _open_echo_channel(address, tls=tls) as fresh:
            _echo_unary(fresh)(b"x")
        latencies.append(time.perf_counter() - began)
    p50, p99 = percentiles(latencies)
    line(f"new connection + first call, {transport}", f"p50 {p50:.2f} ms", f"p99 {p99:.2f} ms")


PROOF_REFERENCE_ENTRIES = 10_000
"""The small tree every proof figure is printed next to (issue 13 item 9: at 10M entries a
proof from the store takes p99 <= 2 ms and not more than twice this tree's)."""


def bench_proofs(
    folder: Path,
    entries: int,
    samples: int = 2000,
    *,
    grpc: bool = True,
    tree: Path | None = None,
) -> None:
    """Proof latency at a large tree, from the store (next to the same run's figure at a tree
    of 10,000 entries) and over gRPC. ``tree``: a file to keep the large tree in, reused when
    it is already there (the 10M tree takes some 15 minutes to build)."""
    signer = Ed25519Signer.generate("bench/log")
    reference = min(PROOF_REFERENCE_ENTRIES, entries)
    small = _store_proofs(folder / "small.db", signer, reference, samples)
    database = folder / "big.db" if tree is None else tree
    if tree is not None and tree.exists():
        line(f"tree of {entries:,} entries", "reused", f"({tree}, bulk-loaded earlier)")
    else:
        started = time.perf_counter()
        bulk_load(database, signer, entries)
        size_mb = sum(f.stat().st_size for f in database.parent.glob(f"{database.name}*")) / 1e6
        line(
            f"bulk-loaded tree of {entries:,} entries",
            f"{time.perf_counter() - started:.1f} s",
            f"(direct inserts, for the proof figures; file {size_mb:,.0f} MB, "
            f"{size_mb * 1e6 / entries:,.0f} bytes an entry)",
        )
    large = _store_proofs(database, signer, entries, samples, loaded=True)
    for kind, (p99, cpu_p99) in large.items():
        small_p99, small_cpu_p99 = small[kind]
        line(
            f"{kind} proof (store) at {entries:,}",
            f"p99 x{p99 / small_p99:.2f}",
            f"of the {reference:,}-entry p99, CPU p99 x{cpu_p99 / small_cpu_p99:.2f} "
            "(goal: p99 <= 2 ms and <= x2)",
        )
    if grpc:
        _proofs_over_grpc(folder, database, signer, entries, samples)


def _store_proofs(
    database: Path, signer: Ed25519Signer, entries: int, samples: int, *, loaded: bool = False
) -> dict[str, tuple[float, float]]:
    """Wall and CPU p99 (ms) of inclusion and consistency proofs read from the store of a tree
    of ``entries`` (bulk-loaded first unless ``loaded``), printed with the p50s."""
    from ledger.storage.db import create_ledger_engine
    from ledger.storage.log_store import LogStore

    if not loaded:
        bulk_load(database, signer, entries)
    engine = create_ledger_engine(sqlite_url(database))
    store = LogStore(engine)
    generator = random.Random(7)
    try:
        return {
            "inclusion": _time_proofs(
                f"inclusion proof (store), {entries:,} entries",
                samples,
                lambda: store.inclusion_proof(generator.randrange(entries), entries),
                cpu=True,
            ),
            "consistency": _time_proofs(
                f"consistency proof (store), {entries:,} entries",
                samples,
                lambda: store.consistency_proof(generator.randrange(1, entries), entries),
                cpu=True,
            ),
        }
    finally:
        engine.dispose()


def _time_proofs(
    name: str, samples: int, call: Callable[[], object], *, cpu: bool = False
) -> tuple[float, float]:
    """Wall and CPU p99 (ms) of ``call``; p50 and p99 printed, with ``cpu`` also the calling
    thread's CPU time per call, which other processes on a busy machine do not inflate as they
    do the wall time (the ratio of two trees' figures is then the tree's doing, not the
    neighbours')."""
    latencies, cpu_times = [], []
    for _ in range(samples):
        started, cpu_started = time.perf_counter(), time.thread_time()
        call()
        latencies.append(time.perf_counter() - started)
        cpu_times.append(time.thread_time() - cpu_started)
    p50, p99 = percentiles(latencies)
    cpu_p50, cpu_p99 = percentiles(cpu_times)
    if not cpu:
        line(name, f"p50 {p50:.3f} ms", f"p99 {p99:.3f} ms")
        return p99, cpu_p99
    line(
        name,
        f"p50 {p50:.3f} ms",
        f"p99 {p99:.3f} ms; CPU p50 {cpu_p50:.3f} ms, p99 {cpu_p99:.3f} ms; "
        f"load average {os.getloadavg()[0]:.1f}",
    )
    return p99, cpu_p99


def _proofs_over_grpc(
    folder: Path, database: Path, signer: Ed25519Signer, entries: int, samples: int
) -> None:
    address, process = _serve(folder / "proof-server", database, signer)
    try:
        with channel_as(address, "auditor-auditor") as channel:
            stub = pb_grpc.LedgerServiceStub(channel)
            generator = random.Random(11)
            _time_proofs(
                "inclusion proof over gRPC",
                samples,
                lambda: stub.GetInclusionProof(
                    pb.GetInclusionProofRequest(
                        leaf_index=generator.randrange(entries), tree_size=entries
                    )
                ),
            )
            _time_proofs(
                "consistency proof over gRPC",
                samples,
                lambda: stub.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(
                        from_tree_size=generator.randrange(1, entries), to_tree_size=entries
                    )
                ),
            )
    finally:
        process.terminate()
        process.wait(timeout=30)


def _kit() -> BenchKit:
    """What bench/renewals.py and bench/households.py use of this module."""
    return BenchKit(
        line=line,
        percentiles=percentiles,
        tls_flags=tls_flags,
        channel_as=channel_as,
        onboard=_onboard,
        operator_verifier=format_verifier_key(_OPERATOR),
        echo_rate_at=_echo_rate_at,
    )


def bench_renewals(folder: Path, renewals_count: int, worker_counts: list[int]) -> None:
    """Renewals (bench/renewals.py), SQLite and PostgreSQL, at each --workers count."""
    from bench.renewals import bench_renewals as measure

    measure(_kit(), folder, renewals_count, worker_counts)


def bench_audit(folder: Path, entries: int) -> None:
    """The full audit (clients.offline, no server code) of ``entries`` signed entries read from
    the database file, next to the same run's Ed25519 verify rate times the cores."""
    from bench.bulk import bulk_load_signed
    from clients.offline.audit import audit
    from clients.offline.note import VerifierKey, verify_checkpoint
    from clients.offline.sources import SqliteLedger

    signer = Ed25519Signer.generate("bench/audit-log")
    database = folder / "audit.db"
    started = time.perf_counter()
    bulk_load_signed(database, signer, entries)
    line(
        f"loaded {entries:,} signed entries",
        f"{time.perf_counter() - started:.1f} s",
        "(signed in a process pool, direct inserts)",
    )
    cores = os.cpu_count() or 1
    ceiling = ed25519_verify_rate() * cores
    line(f"ceiling: Ed25519 verify x {cores} cores", f"{ceiling:,.0f}/s")
    verify_cpu = _verify_cpu_seconds()
    line("ceiling: one Ed25519 verify, CPU time", f"{verify_cpu * 1e6:.0f} µs")
    ledger_file = SqliteLedger(database)
    key = VerifierKey.parse(format_verifier_key(signer))
    note = ledger_file.checkpoint_rows()[-1][2]
    checkpoint = verify_checkpoint(note, key)
    cpu_before = _this_and_children_cpu_seconds()
    started = time.perf_counter()
    report = audit(
        ledger_file.entries(checkpoint.size),
        checkpoint,
        key.public_key,
        workers=cores,
    )
    elapsed = time.perf_counter() - started
    cpu_per_entry = (_this_and_children_cpu_seconds() - cpu_before) / report.entries_checked
    # A busy machine slows every instruction: the verify's CPU time again, after the audit, and
    # the mean of the two beside the audit's (what an idle machine's rates would show).
    verify_cpu_after = _verify_cpu_seconds()
    verify_cpu = (verify_cpu + verify_cpu_after) / 2
    audited = report.entries_checked / elapsed
    line(
        f"full audit, {cores} worker processes",
        rate(report.entries_checked, elapsed),
        f"{audited / ceiling:.0%} of the verify ceiling; {report.entries_checked:,} entries; "
        f"load average {os.getloadavg()[0]:.1f}",
    )
    line(
        "full audit, CPU time an entry (all processes)",
        f"{cpu_per_entry * 1e6:.0f} µs",
        f"one verify ({verify_cpu * 1e6:.0f} µs, the mean of before and after: "
        f"{verify_cpu_after * 1e6:.0f} µs after) is {verify_cpu / cpu_per_entry:.0%} of it "
        "(the ceiling on an idle machine)",
    )


def _verify_cpu_seconds(count: int = 3000) -> float:
    """CPU time of one Ed25519 verification (what a busy machine does not distort)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = b"x" * 300
    signature = key.sign(message)
    started = time.process_time()
    for _ in range(count):
        public.verify(signature, message)
    return (time.process_time() - started) / count


def _this_and_children_cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the audit's worker processes)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_households(folder: Path, policies_count: int, worker_counts: list[int]) -> None:
    """Household checks (bench/households.py) at each --workers count, next to the ceiling."""
    from bench.households import bench_households as measure

    measure(_kit(), folder, policies_count, worker_counts, store_figure=_time_proofs)


def _serve(
    folder: Path,
    database: Path,
    signer: Ed25519Signer,
    *,
    database_url: str = "",
    extra_arguments: tuple[str, ...] = (),
) -> tuple[str, subprocess.Popen[bytes]]:
    """``policy-ledger serve`` on an existing database (the SQLite file, or ``database_url``);
    returns its address and process."""
    return start_server(
        folder, signer, database_url or sqlite_url(database), [*tls_flags(), *extra_arguments]
    )


def bench_standby(folder: Path, policies_count: int, samples: int = 4000) -> None:
    """Household checks at 16 callers on PostgreSQL: answered by the primary, then by a
    streaming-replication hot standby (``serve --read-database``), next to the same run's
    empty-unary ceiling at 16 callers (mTLS)."""
    from bench.bulk import bulk_load_policies, copy_into, household_members
    from clients.portal import PortalClient
    from tests.durability.standby import standby_pair, standby_unavailable

    reason = standby_unavailable()
    if reason is not None:
        line("household check from a read standby", "skipped", reason)
        return
    callers = 16
    ceiling = _echo_rate_at(callers)
    line(f"ceiling: empty unary gRPC calls, mTLS, {callers} callers", rate(*ceiling))
    ceiling_rate = ceiling[0] / ceiling[1]
    signer = Ed25519Signer.generate("bench/log")
    staging = folder / "standby-staging.db"
    bulk_load(staging, signer, 1)
    bulk_load_policies(staging, policies_count)
    with standby_pair() as pair:
        primary_url, standby_url = pair.database()
        started = time.perf_counter()
        copied = copy_into(staging, primary_url)
        pair.caught_up()
        line(
            f"loaded {policies_count:,} policies into a PostgreSQL primary",
            f"{time.perf_counter() - started:.1f} s",
            f"({copied:,} rows, replayed by its hot standby)",
        )
        log = TrustedLog.from_verifier_key(format_verifier_key(signer))
        generator = random.Random(7)

        def person(key: str) -> types_pb2.PersonId:
            country, _, value = key.split(":", 2)
            return types_pb2.PersonId(
                type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID, value=value, country_code=country
            )

        for where, extra in (
            ("the primary", ()),
            ("the standby", ("--read-database", standby_url, "--metrics-port", "0")),
        ):
            address, process = _serve(
                folder / f"standby-bench-{len(extra)}",
                staging,
                signer,
                database_url=primary_url,
                extra_arguments=extra,
            )
            try:
                with channel_as(address, "portal-SA") as channel:
                    portal = PortalClient(channel, log=log)

                    def call(portal: PortalClient = portal) -> float:
                        members = [
                            person(key)
                            for key in household_members(generator.randrange(policies_count))
                        ]
                        began = time.perf_counter()
                        answer = portal.check_household(
                            members[0],
                            # Relationship unset: "as on record" (the portal may leave it so).
                            [(member, events_pb2.RELATIONSHIP_UNSPECIFIED) for member in members],
                            as_of=dt.date(2026, 3, 1),
                            through=dt.date(2026, 12, 31),
                            jurisdiction="SA",
                        )
                        assert answer.response.renewable
                        return time.perf_counter() - began

                    began = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=callers) as pool:
                        latencies = list(pool.map(lambda _: call(), range(samples // 2)))
                    elapsed = time.perf_counter() - began
                p50, p99 = percentiles(latencies)
                share = len(latencies) / elapsed / ceiling_rate
                line(
                    f"household check from {where}, {callers} callers",
                    rate(len(latencies), elapsed),
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms; {share:.0%} of the ceiling "
                    f"(PostgreSQL, {policies_count:,} policies)",
                )
            finally:
                process.terminate()
                process.wait(timeout=30)


def _bench_instances(folder: Path, args: argparse.Namespace) -> None:
    """bench/multi_instance.py with this run's credentials and operator."""
    harness = Harness(
        serve_flags=[*tls_flags(), "--operator-verifier", format_verifier_key(_OPERATOR)],
        channel_as=channel_as,
        onboard=_onboard,
        envelopes=lambda signer, count, first, tokens, independent: _envelopes(
            signer, count, first, tokens=tokens, independent=independent
        ),
        insurer=INSURER,
        line=line,
        cpu_seconds=cpu_seconds,
    )
    bench_instances(
        harness,
        folder,
        events=args.instance_events,
        instance_counts=[int(count) for count in args.instance_counts.split(",")],
        workers=args.instance_workers,
        paced_seconds=args.instance_paced_seconds,
    )


def _echo_rate_at(callers: int, seconds: float = 2.0) -> tuple[int, float]:
    """(calls, seconds) of empty unary calls over mTLS with ``callers`` concurrent callers."""
    server_process, address = start_echo_server(pki())
    try:
        with _open_echo_channel(address, tls=True) as channel:
            unary = _echo_unary(channel)
            started = time.perf_counter()

            def caller(_: int) -> int:
                count = 0
                while time.perf_counter() - started < seconds:
                    unary(b"x" * 300)
                    count += 1
                return count

            with ThreadPoolExecutor(max_workers=callers) as pool:
                total = sum(pool.map(caller, range(callers)))
            return total, time.perf_counter() - started
    finally:
        server_process.terminate()
        server_process.wait(timeout=10)


PROBE_INSURER = "bench-probe"
"""The probe's insurer: another caller than the loads' (its own certificate, its own share)."""


def bench_fairness(folder: Path, scale: float, probe_calls: int = 200) -> None:
    """The probe's unary SubmitEvent p99, idle and under each of issue 15's four loads."""
    log_signer, insurer = Ed25519Signer.generate("bench/log"), Ed25519Signer.generate(INSURER)
    prober = Ed25519Signer.generate(PROBE_INSURER)
    issue_into_directory(pki(), "insurer", PROBE_INSURER)
    server = ServerProcess(folder / "fairness-server", log_signer)
    now = dt.datetime.now(dt.UTC)
    sizes = fairness.LoadSizes()
    sizes = fairness.LoadSizes(
        streams=max(1, int(sizes.streams * scale)),
        silent_writers=sizes.silent_writers,
        silent_writer_events=max(1, int(sizes.silent_writer_events * scale)),
        readers=max(1, int(sizes.readers * scale)),
        silent_connections=max(1, int(sizes.silent_connections * scale)),
    )
    load_credentials = ClientCredentials.from_directory(pki(), f"insurer-{INSURER}")
    try:
        _onboard(server.address, log_signer, insurer.public_key)
        _onboard(server.address, log_signer, prober.public_key, principal=PROBE_INSURER)
        with channel_as(server.address, f"insurer-{PROBE_INSURER}") as channel:
            probes = fairness.signed_events(
                prober, PROBE_INSURER, 0, 10**7, now, tokens=PersonTokens(channel).tokens
            )
            probe = fairness.Probe(channel, probes)
            probe.run(probe_calls)
            idle_p99 = percentiles(probe.latencies_seconds)[1]
            line("probe SubmitEvent p99, idle", f"{idle_p99:.1f} ms", "ceiling under load: 5x")
            for load in fairness.LOADS:
                probe = fairness.Probe(channel, probes)
                started, stop = multiprocessing.Event(), multiprocessing.Event()
                loader = multiprocessing.Process(
                    target=fairness.load_in_process,
                    args=(
                        load,
                        sizes,
                        server.address,
                        (
                            load_credentials.root_certificates,
                            load_credentials.certificate_chain,
                            load_credentials.private_key,
                        ),
                        format_signer_key(insurer),
                        INSURER,
                    ),
                    kwargs={"started": started, "stop": stop},
                )
                loader.start()
                started.wait(timeout=300)
                probe.run(probe_calls)
                stop.set()
                loader.join(timeout=300)
                p99 = percentiles(probe.latencies_seconds)[1]
                verdict = "within" if p99 <= 5 * idle_p99 else "OVER"
                line(
                    f"probe p99 under {load}",
                    f"{p99:.1f} ms",
                    f"ceiling 5x idle = {5 * idle_p99:.1f} ms: {verdict}; "
                    f"probe failures {len(probe.failures)}",
                )
    finally:
        server.stop()


def bench_employer(database: Path) -> None:
    """CheckEmployer's figures (bench/employer.py), on the household benchmark's database."""
    from bench.employer import bench_employer as measure

    measure(database, line, percentiles)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="tree size for proof figures"
    )
    parser.add_argument("--events", type=int, default=20_000, help="signed events to submit")
    parser.add_argument(
        "--policies", type=int, default=1_000_000, help="policies for the household check"
    )
    parser.add_argument("--renewals", type=int, default=400, help="renewals at 16 callers")
    parser.add_argument(
        "--standby-policies",
        type=int,
        default=100_000,
        help="policies for the household check from a PostgreSQL primary and its read standby",
    )
    parser.add_argument(
        "--audit-entries", type=int, default=1_000_000, help="signed entries for the audit"
    )
    parser.add_argument(
        "--load-scale", type=float, default=1.0, help="fraction of issue 15's loads (fairness)"
    )
    parser.add_argument(
        "--cohort-members", type=int, default=25_000, help="beneficiaries of one funded cohort"
    )
    parser.add_argument(
        "--only",
        choices=(
            "fairness",
            "standby",
            "proofs",
            "audit",
            "submit",
            "households",
            "renewals",
            "instances",
        ),
        help="run one benchmark only (fairness: issue 15's four loads against a probe; "
        "standby: household checks from a PostgreSQL primary and from its read standby; "
        "proofs: proofs from the store at --entries next to 10,000 entries; "
        "audit: the full audit of --audit-entries; "
        "submit: streaming and unary submission at each --workers count; "
        "households, renewals: those figures at each --workers count; "
        "instances: 1, 2, 3 serve instances writing into one PostgreSQL primary)",
    )
    parser.add_argument(
        "--proof-tree",
        type=Path,
        help="with --only proofs: keep the --entries tree in this file, reused if it is there",
    )
    parser.add_argument(
        "--instance-events", type=int, default=2000, help="events each instance is sent"
    )
    parser.add_argument(
        "--instance-workers", type=int, default=1, help="serve --workers of each instance"
    )
    parser.add_argument(
        "--instance-counts", default="1,2,3", help="numbers of instances, comma-separated"
    )
    parser.add_argument(
        "--instance-paced-seconds", type=float, default=10.0, help="length of the paced load"
    )
    parser.add_argument(
        "--workers",
        default=f"0,{os.cpu_count() or 1}",
        help="serve --workers counts the submission, household and renewal figures are taken "
        "at, comma-separated "
        "(default: 0, one process, and one worker per core)",
    )
    args = parser.parse_args(argv)
    print(f"policy-ledger bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="policy-ledger-bench-") as scratch:
        folder = Path(scratch)
        init_directory(folder / "pki")
        issue_into_directory(folder / "pki", "insurer", INSURER)
        issue_into_directory(folder / "pki", "funder", FUNDER)
        _PKI.append(folder / "pki")
        if args.only == "fairness":
            print("fairness (issue 15: one caller's load against another's calls)")
            bench_fairness(folder, args.load_scale)
            return 0
        if args.only == "proofs":
            print("proofs (issue 13 item 9: from the store, at --entries and at 10,000)")
            bench_proofs(folder, args.entries, grpc=False, tree=args.proof_tree)
            return 0
        if args.only == "audit":
            print("audit (issue 13 item 8: each worker reads its own range of the file)")
            bench_audit(folder, args.audit_entries)
            return 0
        worker_counts = [int(count) for count in args.workers.split(",")]
        if args.only == "submit":
            print("ledger (issue 13 items 1 and 5: submission at each --workers count)")
            bench_handoff_codec(line)
            for count in worker_counts:
                print(f"  serve --workers {count}")
                bench_submit(folder, args.events, count)
            return 0
        if args.only == "households":
            print("coverage (issue 13 item 6: household checks at each --workers count)")
            bench_households(folder, args.policies, worker_counts)
            return 0
        if args.only == "renewals":
            print("renewals (issue 13 item 7: SQLite and PostgreSQL, each --workers count)")
            bench_renewals(folder, args.renewals, worker_counts)
            return 0
        if args.only == "instances":
            print("several instances on one PostgreSQL primary (issue 13 item 4)")
            _bench_instances(folder, args)
            return 0
        if args.only == "standby":
            print("read standby (issue 13: household checks from a hot standby)")
            bench_standby(folder, args.standby_policies)
            return 0
        print("ceilings")
        line("ceiling: Ed25519 verify (1 core)", f"{ed25519_verify_rate():,.0f}/s")
        line("ceiling: SQLite durable commits (1 row each)", f"{sqlite_commit_rate(folder):,.0f}/s")
        bench_echo()
        print("ledger")
        bench_handoff_codec(line)
        for count in worker_counts:
            print(f"  serve --workers {count}")
            bench_submit(folder, args.events, count)
        bench_proofs(folder, args.entries)
        print("funds (task D: a funder's cohort in one stream)")
        bench_funds(folder, args.cohort_members)
        print("coverage")
        bench_households(folder, args.policies, worker_counts)
        bench_employer(folder / "households.db")  # Task A (issue 10)
        print("read standby (issue 13: household checks from a hot standby)")
        bench_standby(folder, args.standby_policies)
        print("renewals (issue 13 item 7: SQLite and PostgreSQL, each --workers count)")
        bench_renewals(folder, args.renewals, worker_counts)
        print("audit")
        bench_audit(folder, args.audit_entries)
        print("fairness (issue 15: one caller's load against another's calls)")
        bench_fairness(folder, args.load_scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
