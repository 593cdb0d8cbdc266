"""Several ``serve`` instances writing into one PostgreSQL primary (issue 13 item 4).

Each batch's transaction takes one transaction-scoped advisory lock first
(``pg_advisory_xact_lock``, ledger/storage/append.py), so instances sharing a primary append one
at a time and the log keeps one linear history. This measures what that costs: for K = 1, 2, 3
instances (each ``serve --workers W`` on its own port, on one fresh database), one client per
instance streams signed events at it, all at once (then each gets unary calls at a fixed rate
below capacity: the latency the lock adds). Printed per K and load:

* aggregate events/s and each instance's, and the servers' CPU per event (all their processes)
  and that of the PostgreSQL backends serving them (from /proc: the bench's server is local);
* the lock: ``pg_locks`` sampled every ``_SAMPLE_SECONDS`` (or as often as a loaded machine
  lets it) by a connection of its own. Transactions waiting for the write lock times the time
  since the last sample, summed, is the time spent waiting for it (also per batch and as a share
  of the sequencers' commit time); the samples in which it was held, likewise, the time it was
  held: as a share of the run it says how near the instances are to the one-writer ceiling, as
  time per event what that ceiling is. Estimates: what happens between samples is not seen;
* batches and commit latency from each instance's own metrics (``--metrics-port``): the mean
  batch size, the mean commit time (exact: the histogram's sum over its count) and p50/p99
  (interpolated within the histogram's buckets, as Prometheus's ``histogram_quantile`` does);
* the connections each instance held at most (``pg_stat_activity`` by ``application_name``),
  next to its configured total (``--database-pool-size`` + ``--database-pool-overflow``);
* then the check: one linear history. Every acknowledged receipt names a distinct leaf whose
  stored hash it carries; the tree holds exactly the entries before the run plus those
  acknowledged; every stored leaf hash is SHA-256(0x00 || the stored entry bytes); and every
  checkpoint is signed by the log key and its root is the root of the stored entries up to its
  size (so each checkpoint is consistent with every earlier one).

Beside them, the same run's ceiling: single-row durable commits a second on one connection to
the same server. Skipped, with a line saying why, where no PostgreSQL answers at
``POLICY_LEDGER_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/
postgres``, as the tests).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, make_url, select, text

from bench.kit import Line
from clients.person_tokens import PersonTokens
from clients.samples import TokenSource
from clients.verify import TrustedLog, verify_checkpoint
from ledger import limits
from ledger.config import divide_database_pool
from ledger.merkle import CompactRange, leaf_hash
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.tables import checkpoints, log_entries
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["Harness", "bench_instances"]

ADMIN_URL = os.environ.get(
    "POLICY_LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_SAMPLE_SECONDS = 0.005
_PACED_RATE = 30.0
"""Unary submissions a second in the paced load, all instances together, divided evenly over
them (the capacity model's peak in docs/benchmarks.md is 19.4 entries/s for the whole
service): one load, written through 1, 2 or 3 instances."""
_PACED_SECONDS = 10.0
_PACED_CALLERS = 32
_APPLICATION = "bench-instance-"
_LOCK_SAMPLE = text(
    "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted)"
    " FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""The ledger's write lock (the only advisory lock the ledger takes): held (0 or 1), and the
transactions waiting for it."""
_CONNECTIONS_SAMPLE = text(
    "SELECT application_name, count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'bench-instance-%'"
    " GROUP BY application_name"
)
_BATCH_SERIES = "policy_ledger_sequencer_batch_entries"
_COMMIT_SERIES = "policy_ledger_sequencer_commit_seconds"


@dataclass(frozen=True)
class Harness:
    """What the bench's main module lends this one (its run's credentials and operator)."""

    serve_flags: list[str]
    """``serve`` flags every instance gets: mTLS files and the operator's verifier key."""
    channel_as: Callable[[str, str], grpc.Channel]
    """An mTLS channel to an address as an identity (``role-name``)."""
    onboard: Callable[[str, Ed25519Signer, bytes], None]
    """Register the bench insurer's key (and license it) through the instance at an address."""
    envelopes: Callable[[Ed25519Signer, int, int, TokenSource, bool], list[types_pb2.Envelope]]
    """Signed sample events: households numbered from a first number on (True: independent
    policies, which concurrent calls may submit in any order)."""
    insurer: str
    line: Line
    cpu_seconds: Callable[[int], float]
    """CPU seconds so far of a process and its descendants."""


@dataclass
class _Instance:
    number: int
    process: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    channel: grpc.Channel | None = None
    receipts: list[pb.Receipt] = field(default_factory=list)
    """Every receipt it gave, over all loads (checked against the log at the end)."""
    acknowledged: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    """The paced load's callers answer on several threads."""

    def begin(self) -> None:
        """Forget the previous load's figures; note the start."""
        self.acknowledged, self.refused, self.latencies = 0, 0, []
        self.started = time.perf_counter()

    def take(
        self, result: pb.SubmitEventsResult | pb.SubmitEventResponse, latency: float | None = None
    ) -> None:
        with self._lock:
            if result.HasField("receipt"):
                self.receipts.append(result.receipt)
                self.acknowledged += 1
            else:
                self.refused += 1
            if latency is not None:
                self.latencies.append(latency)


@dataclass
class _Measured:
    """What one load did on every instance at once."""

    elapsed: float
    cpu: float
    database_cpu: float
    """CPU seconds of the PostgreSQL backends serving the instances (0 if not readable)."""
    batches: dict[float, float]
    commits: dict[float, float]
    sampler: _LockSampler


def bench_instances(
    harness: Harness,
    folder: Path,
    *,
    events: int,
    instance_counts: list[int],
    workers: int,
    per_message: int = limits.submit_message_envelopes_default,
    paced_rate: float = _PACED_RATE,
    paced_seconds: float = _PACED_SECONDS,
) -> None:
    """For each K in ``instance_counts``: K instances on one fresh database; ``events`` signed
    events streamed at each at once (``per_message`` to a SubmitEvents message), then unary
    SubmitEvent calls at ``paced_rate`` a second in all, divided over the K instances, for
    ``paced_seconds`` (one load below capacity whatever K: the latency the lock adds)."""
    reason = _postgres_unreachable()
    if reason is not None:
        harness.line("several instances on one PostgreSQL primary", "skipped", reason)
        return
    loads = _Loads(events, per_message, paced_rate, paced_seconds, workers)
    with fresh_database() as url:
        harness.line(
            "ceiling: PostgreSQL durable commits (1 row each)",
            f"{postgres_commit_rate(url):,.0f}/s",
            f"load average {os.getloadavg()[0]:.1f}",
        )
    for count in instance_counts:
        with fresh_database() as url:
            _run(harness, folder / f"instances-{count}", url, count, loads)


@dataclass(frozen=True)
class _Loads:
    events: int
    per_message: int
    paced_rate: float
    paced_seconds: float
    workers: int


def _run(harness: Harness, folder: Path, url: str, count: int, loads: _Loads) -> None:
    """K instances on the database: the streaming load, the paced load, the history check."""
    events, workers = loads.events, loads.workers
    folder.mkdir(parents=True, exist_ok=True)
    log_signer = Ed25519Signer.generate("bench/log")
    insurer = Ed25519Signer.generate(harness.insurer)
    (folder / "log.key").write_text(format_signer_key(log_signer) + "\n")
    instances: list[_Instance] = []
    try:
        # One after the other: the first migrates the database and writes the genesis.
        for number in range(1, count + 1):
            instances.append(_start(harness, folder, url, number, workers))
        harness.onboard(instances[0].address, log_signer, insurer.public_key)
        for instance in instances:
            instance.channel = harness.channel_as(instance.address, f"insurer-{harness.insurer}")
        label = f"{count} instance(s) x --workers {workers}"
        streamed = _streaming(harness, instances, insurer, events, loads.per_message, url)
        _print_figures(harness, f"{label}, streaming", instances, streamed, workers)
        paced = _paced(harness, instances, insurer, loads, url)
        label = f"{label}, unary at {loads.paced_rate:g}/s in all"
        _print_figures(harness, label, instances, paced, workers)
    finally:
        for instance in instances:
            if instance.channel is not None:
                instance.channel.close()
            instance.process.terminate()
        for instance in instances:
            instance.process.wait(timeout=60)
    _check_one_history(harness, url, log_signer, instances)


def _start(harness: Harness, folder: Path, url: str, number: int, workers: int) -> _Instance:
    """``serve`` number ``number`` on the database, its connections named for pg_stat_activity."""
    named = make_url(url).update_query_dict({"application_name": f"{_APPLICATION}{number}"})
    port_file, log_path = folder / f"port-{number}", folder / f"server-{number}.log"
    command = [
        sys.executable,
        "-m",
        "policy_ledger.cli",
        "serve",
        "--database",
        named.render_as_string(hide_password=False),
        "--listen",
        "127.0.0.1:0",
        "--log-key-file",
        str(folder / "log.key"),
        "--workers",
        str(workers),
        "--metrics-port",
        "0",
        "--port-file",
        str(port_file),
        *harness.serve_flags,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limits.process_ready_seconds_max
    metrics = None
    while metrics is None:
        found = re.search(r"metrics on port (\d+)", log_path.read_text(errors="replace"))
        metrics = int(found.group(1)) if found else None
        if metrics is None and (time.monotonic() > deadline or process.poll() is not None):
            process.kill()
            raise RuntimeError(f"instance {number} did not start; see {log_path}")
        time.sleep(0.05)
    port = int(port_file.read_text())
    return _Instance(number, process, f"127.0.0.1:{port}", metrics)


def _streaming(
    harness: Harness,
    instances: list[_Instance],
    insurer: Ed25519Signer,
    events: int,
    per_message: int,
    url: str,
) -> _Measured:
    """One SubmitEvents stream per instance, all at once, as fast as they are answered."""
    requests: dict[int, list[pb.SubmitEventsRequest]] = {}
    for instance in instances:
        assert instance.channel is not None
        # Households numbered apart per instance, so no two clients submit the same event.
        first = (instance.number - 1) * events
        envelopes = harness.envelopes(
            insurer, events, first, PersonTokens(instance.channel).tokens, False
        )
        requests[instance.number] = [
            pb.SubmitEventsRequest(envelopes=envelopes[i : i + per_message])
            for i in range(0, len(envelopes), per_message)
        ]

    def stream(instance: _Instance) -> None:
        assert instance.channel is not None
        stub = pb_grpc.LedgerServiceStub(instance.channel)
        for response in stub.SubmitEvents(iter(requests[instance.number])):
            for result in response.results:
                instance.take(result)

    return _measure(harness, instances, url, stream)


def _paced(
    harness: Harness,
    instances: list[_Instance],
    insurer: Ed25519Signer,
    loads: _Loads,
    url: str,
) -> _Measured:
    """Unary SubmitEvent calls at ``loads.paced_rate`` a second in all for
    ``loads.paced_seconds``, each instance taking its share, one call every K/rate s (up to
    ``_PACED_CALLERS`` under way): receipt latency at a load below capacity. Households are
    numbered past the streaming load's."""
    rate_each = loads.paced_rate / len(instances)
    count = max(1, round(rate_each * loads.paced_seconds))
    first_number = loads.events
    envelopes: dict[int, list[types_pb2.Envelope]] = {}
    for instance in instances:
        assert instance.channel is not None
        first = first_number * len(instances) + (instance.number - 1) * count
        tokens = PersonTokens(instance.channel).tokens
        envelopes[instance.number] = harness.envelopes(insurer, count, first, tokens, True)

    def paced(instance: _Instance) -> None:
        assert instance.channel is not None
        stub = pb_grpc.LedgerServiceStub(instance.channel)

        def call(envelope: types_pb2.Envelope) -> None:
            began = time.perf_counter()
            answer = stub.SubmitEvent(pb.SubmitEventRequest(envelope=envelope))
            instance.take(answer, time.perf_counter() - began)

        with ThreadPoolExecutor(_PACED_CALLERS) as callers:
            began = time.perf_counter()
            for number, envelope in enumerate(envelopes[instance.number]):
                pause = began + number / rate_each - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)  # pacing the load generator, not waiting for a result
                callers.submit(call, envelope)

    return _measure(harness, instances, url, paced)


def _measure(
    harness: Harness,
    instances: list[_Instance],
    url: str,
    load: Callable[[_Instance], None],
) -> _Measured:
    """Run ``load`` on every instance at once; the servers' CPU, their sequencers' histograms
    and the lock sampler's figures over it."""
    before = {i.number: _histograms(i.metrics_port) for i in instances}
    cpu_before = {i.number: harness.cpu_seconds(i.process.pid) for i in instances}
    database_before = _backends_cpu(url)
    start = threading.Barrier(len(instances) + 1)
    sampler = _LockSampler(url)

    def run(instance: _Instance) -> None:
        start.wait()
        instance.begin()
        load(instance)
        instance.ended = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    sampler.start()
    start.wait()
    for thread in threads:
        thread.join()
    sampler.stop()
    elapsed = max(i.ended for i in instances) - min(i.started for i in instances)
    cpu = sum(harness.cpu_seconds(i.process.pid) - cpu_before[i.number] for i in instances)
    database_after = _backends_cpu(url)
    database_cpu = sum(
        seconds - database_before.get(pid, 0.0) for pid, seconds in database_after.items()
    )
    after = {i.number: _histograms(i.metrics_port) for i in instances}
    return _Measured(
        elapsed,
        cpu,
        database_cpu,
        _difference(before, after, _BATCH_SERIES),
        _difference(before, after, _COMMIT_SERIES),
        sampler,
    )


def _print_figures(
    harness: Harness, label: str, instances: list[_Instance], measured: _Measured, workers: int
) -> None:
    acknowledged = sum(i.acknowledged for i in instances)
    refused = sum(i.refused for i in instances)
    harness.line(
        label,
        f"{acknowledged / measured.elapsed:,.0f}/s",
        f"{acknowledged} events acknowledged, {refused} refused; server CPU "
        f"{measured.cpu / max(acknowledged, 1) * 1e6:,.0f} us/event (all processes), PostgreSQL "
        f"{measured.database_cpu / max(acknowledged, 1) * 1e6:,.0f} us/event; "
        f"load average {os.getloadavg()[0]:.1f}",
    )
    per_instance = ", ".join(
        f"#{i.number} {i.acknowledged / (i.ended - i.started):,.0f}/s" for i in instances
    )
    latencies = [latency for i in instances for latency in i.latencies]
    if latencies:
        ordered = sorted(latencies)
        p50, p99 = (
            ordered[len(ordered) // 2],
            ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)],
        )
        per_instance += f"; receipt p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    harness.line("  per instance", "", per_instance)
    batches, commits = measured.batches, measured.commits
    batch_count = batches.get(float("inf"), 0.0)
    commit_seconds = commits.get(-1.0, 0.0)
    harness.line(
        "  batches, commit latency",
        f"{batch_count:,.0f} batches",
        f"mean {batches.get(-1.0, 0.0) / max(batch_count, 1.0):,.1f} events/batch; commit mean "
        f"{commit_seconds / max(batch_count, 1.0) * 1000:.1f} ms, "
        f"p50 ~{_quantile(commits, 0.5) * 1000:.1f} ms, "
        f"p99 ~{_quantile(commits, 0.99) * 1000:.1f} ms",
    )
    sampler = measured.sampler
    waited = sampler.waiting_seconds
    harness.line(
        "  advisory-lock wait (sampled)",
        f"{waited:.2f} s",
        f"{waited / max(batch_count, 1.0) * 1000:.1f} ms/batch; "
        f"{waited / max(commit_seconds, 1e-9):.0%} of commit time; "
        f"{sampler.samples} samples, waiting transactions at most {sampler.waiting_max}",
    )
    # Held for the whole run, the instances together can go no faster: that is the ceiling
    # the lock sets, whatever the number of instances.
    locked = sampler.held_seconds
    harness.line(
        "  advisory lock held (sampled)",
        f"{locked:.2f} s",
        f"{locked / measured.elapsed:.0%} of the run; "
        f"{locked / max(acknowledged, 1) * 1e6:,.0f} us/event",
    )
    held = ", ".join(f"#{i.number} {sampler.connections_max.get(i.number, 0)}" for i in instances)
    shares = divide_database_pool(None, None, 1 if workers == 0 else workers + 1)
    allowed = sum(share.connections_max for share in shares)
    harness.line(
        "  connections held at most", "", f"{held} (each may open {allowed}: the default totals)"
    )


def _check_one_history(
    harness: Harness, url: str, log_signer: Ed25519Signer, instances: list[_Instance]
) -> None:
    """Raise unless the database holds one linear history with every acknowledged event."""
    log = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            entries = connection.execute(
                select(
                    log_entries.c.leaf_index, log_entries.c.leaf_hash, log_entries.c.entry_bytes
                ).order_by(log_entries.c.leaf_index)
            ).all()
            heads = connection.execute(
                select(
                    checkpoints.c.tree_size, checkpoints.c.root_hash, checkpoints.c.note_bytes
                ).order_by(checkpoints.c.tree_size)
            ).all()
    finally:
        engine.dispose()
    stored = {index: digest for index, digest, _ in entries}
    receipts = [r for i in instances for r in i.receipts]
    indexes = {r.leaf_index for r in receipts}
    _require(len(indexes) == len(receipts), "two receipts name one leaf")
    _require(all(stored.get(r.leaf_index) == r.leaf_hash for r in receipts), "a receipt's leaf")
    first_acknowledged = min(indexes)
    _require(
        len(entries) == first_acknowledged + len(receipts)
        and [index for index, _, _ in entries] == list(range(len(entries))),
        f"tree of {len(entries)} entries for {first_acknowledged} before the run and "
        f"{len(receipts)} acknowledged",
    )
    tree, heads_left = CompactRange.empty(), list(heads)

    def check_heads_at_this_size() -> None:
        while heads_left and heads_left[0][0] == tree.size:
            size, root, note = heads_left.pop(0)
            signed = verify_checkpoint(note, log)
            _require(
                signed.size == size and signed.root_hash == root == tree.root(), f"head {size}"
            )

    check_heads_at_this_size()  # the empty tree's, if one was signed
    for index, digest, entry_bytes in entries:
        _require(leaf_hash(entry_bytes) == digest, f"entry {index}'s stored leaf hash")
        tree.append(digest)
        check_heads_at_this_size()
    _require(not heads_left, "a checkpoint beyond the stored entries")
    harness.line(
        "  one linear history",
        "checked",
        f"{len(entries)} entries, {len(heads)} checkpoints each the root of the entries before "
        f"it, {len(receipts)} receipts each at its own leaf",
    )


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"not one linear history: {what}")


class _LockSampler:
    """Samples pg_locks and pg_stat_activity on a connection of its own until stopped: time
    the write lock was held and waited for (each sample counts for the time since the last),
    and each instance's connections."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url, pool_size=1, max_overflow=0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.held_seconds = 0.0
        self.waiting_seconds = 0.0
        self.samples = 0
        self.waiting_max = 0
        self.connections_max: dict[int, int] = defaultdict(int)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    def _run(self) -> None:
        with self._engine.connect() as connection:
            last = time.perf_counter()
            while not self._stop.wait(_SAMPLE_SECONDS):
                held, waiting = connection.execute(_LOCK_SAMPLE).one()
                rows = connection.execute(_CONNECTIONS_SAMPLE).all()
                connection.rollback()  # a fresh snapshot of the statistics each time
                now = time.perf_counter()
                self.held_seconds += min(held, 1) * (now - last)
                self.waiting_seconds += waiting * (now - last)
                last = now
                self.samples += 1
                self.waiting_max = max(self.waiting_max, waiting)
                for name, connections in rows:
                    number = int(name.removeprefix(_APPLICATION))
                    self.connections_max[number] = max(self.connections_max[number], connections)


def _backends_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving an instance, by pid (read from
    /proc: the server runs on this machine; none where it does not)."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            pids = connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name LIKE 'bench-instance-%'"
                )
            ).scalars()
            found = {}
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                found[int(pid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            return found
    finally:
        engine.dispose()


def _histograms(port: int) -> dict[str, dict[float, float]]:
    """Each sequencer histogram of an instance, summed over its processes: cumulative count by
    upper bound (``inf``: the count), and ``-1.0``: the sum."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    found: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(exposition):
        if family.name not in (_BATCH_SERIES, _COMMIT_SERIES):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                found[family.name][float(sample.labels["le"])] += sample.value
            elif sample.name.endswith("_sum"):
                found[family.name][-1.0] += sample.value
    return found


def _difference(
    before: dict[int, dict[str, dict[float, float]]],
    after: dict[int, dict[str, dict[float, float]]],
    series: str,
) -> dict[float, float]:
    """The histogram of the run, over every instance."""
    total: dict[float, float] = defaultdict(float)
    for number, histograms in after.items():
        earlier = before[number].get(series, {})
        for bound, value in histograms.get(series, {}).items():
            total[bound] += value - earlier.get(bound, 0.0)
    return total


def _quantile(histogram: dict[float, float], q: float) -> float:
    """The q-quantile, interpolated linearly within its bucket (``histogram_quantile``)."""
    bounds = sorted(b for b in histogram if b >= 0)
    count = histogram.get(float("inf"), 0.0)
    if not count:
        return 0.0
    rank, lower, below = q * count, 0.0, 0.0
    for bound in bounds:
        cumulative = histogram[bound]
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def postgres_commit_rate(url: str, seconds: float = 1.0) -> float:
    """Single-row commits a second on one connection (``synchronous_commit`` as the server is
    set up: on by default, one WAL flush each): the ceiling of one writer's commit rate."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE commit_ceiling (k serial PRIMARY KEY, v bytea)"))
            connection.commit()
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                connection.execute(
                    text("INSERT INTO commit_ceiling (v) VALUES (:v)"), {"v": b"x" * 300}
                )
                connection.commit()
                count += 1
            return count / (time.perf_counter() - started)
    finally:
        engine.dispose()


def _postgres_unreachable() -> str | None:
    engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        return f"PostgreSQL not reachable at {ADMIN_URL}: {type(error).__name__}"
    finally:
        engine.dispose()
    return None


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new database on the server of ``ADMIN_URL``, dropped afterwards."""
    name = f"policy_ledger_bench_{secrets.token_hex(6)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
