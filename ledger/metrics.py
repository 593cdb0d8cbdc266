"""What the server shows of itself: Prometheus metrics (``serve --metrics-port``) and structured
JSON logs (``serve --log-format json``).

Each server has its own :class:`prometheus_client.CollectorRegistry` (not the library's global
one), so several servers in one process (the tests) keep their figures apart. The registry holds:

* per-RPC figures from the one call interceptor (``ledger.rpc.observing``), named as
  go-grpc-middleware names them so existing dashboards work: ``grpc_server_started_total``,
  ``grpc_server_handled_total`` (by ``grpc_code``), ``grpc_server_handling_seconds``;
* the sequencer's: batch size, commit latency, batches by outcome, entries appended, queue
  depth, and the tree size after its last commit;
* the read standby's (``serve --read-database``): its lag in entries, the reads it answered and
  the reads routed to the primary instead, by reason (``ledger.storage.read_routing``);
* the witnesses': lag, cosigned size and failures per witness (``ledger.witnessing``);
* the database's integrity: ``policy_ledger_storage_corrupt``, 1 once a check confirmed the
  database corrupt (``ledger.storage.integrity``), for alerting, and
  ``policy_ledger_standby_corrupt`` the same for the read standby;
* SQLite's WAL, from the checkpointer of the process that writes the log
  (``ledger.storage.wal``): its pages, and checkpoints run by mode and outcome;
* whatever a server extension registers through ``ServerContext.metrics`` (the payments
  register their state counts; the ledger never imports them);
* the process's own (CPU, memory, open files) from ``prometheus_client``.

docs/operations.md ("Metrics") lists every series; a test keeps that list and the registry equal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter

from ledger import limits
from ledger.config import LOG_FORMATS
from ledger.errors import InvalidArgument
from ledger.http_listener import BoundedThreading, Listener
from ledger.sequencer import BatchReport, Sequencer, SequencerPort
from ledger.storage.integrity import IntegrityWatch
from ledger.storage.read_routing import BYPASS_REASONS
from ledger.storage.wal import CheckpointReport, WalState
from ledger.witnessing import WitnessSubmitter

__all__ = [
    "LedgerMetrics",
    "MetricsEndpoint",
    "configure_logging",
]

RPC_SECONDS_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Latency buckets of RPCs and commits, in seconds: sub-millisecond reads to slow renewals."""

BATCH_ENTRIES_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Batch size buckets, in submissions (``limits.sequencer_batch_entries_max`` at most)."""

_RPC_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")

WAL_PAGE_KINDS: Final = ("total", "pending")
WAL_CHECKPOINT_MODES: Final = ("passive", "truncate")


class LedgerMetrics:
    """The server's registry and the collectors the ledger itself feeds."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.rpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            _RPC_LABELS,
            registry=self.registry,
        )
        self.rpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*_RPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the RPC's start to its status, in seconds.",
            _RPC_LABELS,
            buckets=RPC_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_entries = Histogram(
            "policy_ledger_sequencer_batch_entries",
            "Submissions per sequencer batch (one transaction, one checkpoint).",
            buckets=BATCH_ENTRIES_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "policy_ledger_sequencer_commit_seconds",
            "Time one batch's transaction took, from the write thread taking it to its outcome.",
            buckets=RPC_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batches = Counter(
            "policy_ledger_sequencer_batches",
            "Sequencer batches, by outcome: committed, or failed (every submission UNAVAILABLE).",
            ("outcome",),
            registry=self.registry,
        )
        self.entries_appended = Counter(
            "policy_ledger_entries_appended",
            "New entries this server appended to the log (duplicates are not counted).",
            registry=self.registry,
        )
        self.queue_entries = Gauge(
            "policy_ledger_sequencer_queue_entries",
            "Submissions waiting in the sequencer's queue, not yet in a batch.",
            registry=self.registry,
        )
        self.tree_size = Gauge(
            "policy_ledger_tree_size",
            "Entries in the log after this server's last commit.",
            registry=self.registry,
        )

        self.standby_lag_entries = Gauge(
            "policy_ledger_standby_lag_entries",
            "Entries the read standby was behind the newest tree size this server knew, at the "
            "last routed read (serve --read-database).",
            registry=self.registry,
        )
        self.standby_reads = Counter(
            "policy_ledger_standby_reads",
            "Reads the read standby answered.",
            registry=self.registry,
        )
        self.standby_bypassed_total = Counter(
            "policy_ledger_standby_bypassed",
            "Reads routed to the primary instead of the standby, by reason: "
            "behind_min_tree_size, lagging, standby_failed, standby_corrupt.",
            ("reason",),
            registry=self.registry,
        )
        for reason in BYPASS_REASONS:  # every reason shows, at 0 until it happens
            self.standby_bypassed_total.labels(reason)

        self.storage_corrupt = Gauge(
            "policy_ledger_storage_corrupt",
            "1 once an integrity check confirmed this server's database corrupt (calls answer "
            "UNAVAILABLE STORAGE_CORRUPT, health NOT_SERVING, until a restart); else 0.",
            registry=self.registry,
        )
        self.standby_corrupt = Gauge(
            "policy_ledger_standby_corrupt",
            "1 once an integrity check confirmed the read standby (serve --read-database) "
            "corrupt (reads bypass it, reason standby_corrupt, until a restart); else 0.",
            registry=self.registry,
        )

        self.wal_pages = Gauge(
            "policy_ledger_wal_pages",
            "Pages in SQLite's WAL at the checkpointer's last look: written since its last reset "
            "(total), and of those not yet copied into the database file (pending).",
            ("kind",),
            registry=self.registry,
        )
        self.wal_checkpoints = Counter(
            "policy_ledger_wal_checkpoints",
            "WAL checkpoints the checkpointer ran, by mode (passive, truncate) and outcome "
            "(complete: every page copied; partial: readers held some back).",
            ("mode", "outcome"),
            registry=self.registry,
        )
        self.wal_checkpoint_seconds = Histogram(
            "policy_ledger_wal_checkpoint_seconds",
            "Time one WAL checkpoint took (off the commit path).",
            buckets=RPC_SECONDS_BUCKETS,
            registry=self.registry,
        )
        for kind in WAL_PAGE_KINDS:  # every series shows, at 0 until a checkpointer runs
            self.wal_pages.labels(kind)
        for mode in WAL_CHECKPOINT_MODES:
            for outcome in ("complete", "partial"):
                self.wal_checkpoints.labels(mode, outcome)

        self.endpoint: MetricsEndpoint | None = None
        """The HTTP endpoint serving the registry, once :meth:`serve` started it."""

    def serve(self, host: str, port: int) -> int:
        """Serve the registry at ``http://host:port/metrics`` (port 0 picks one); the port.
        A port in use is FAILED_PRECONDITION (ADDRESS_IN_USE), as ``serve``'s own."""
        self.endpoint = MetricsEndpoint(host, port, self.registry)
        return self.endpoint.port

    def stop(self) -> None:
        """Stop the endpoint (if started) and close its socket."""
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None

    def watch_sequencer(self, sequencer: SequencerPort) -> None:
        """Feed the sequencer series from ``sequencer`` (call once, on the server's loop).

        A worker of ``serve --workers N`` watches its hand-off client: its queue is the hand-offs
        awaiting an outcome, and it forms no batches (the sequencer process reports those)."""
        self.queue_entries.set_function(lambda: sequencer.queue_depth)
        self.tree_size.set_function(lambda: sequencer.tree_size)
        if isinstance(sequencer, Sequencer):
            sequencer.batch_listeners.append(self._batch_done)

    def watch_integrity(self, watch: IntegrityWatch) -> None:
        """Show whether ``watch`` confirmed the database corrupt (read at every scrape)."""
        self.storage_corrupt.set_function(lambda: 1 if watch.corrupt else 0)

    def watch_standby_integrity(self, watch: IntegrityWatch) -> None:
        """Show whether the read standby's ``watch`` confirmed it corrupt (at every scrape)."""
        self.standby_corrupt.set_function(lambda: 1 if watch.corrupt else 0)

    def standby_lag(self, entries: int) -> None:
        """The read router's :class:`~ledger.storage.read_routing.RoutingObserver`."""
        self.standby_lag_entries.set(entries)

    def standby_served(self) -> None:
        self.standby_reads.inc()

    def standby_bypassed(self, reason: str) -> None:
        self.standby_bypassed_total.labels(reason).inc()

    def watch_witnesses(self, submitter: WitnessSubmitter) -> None:
        """Report each witness's progress (read at every scrape)."""
        self.registry.register(_WitnessCollector(submitter))

    def wal_observed(self, state: WalState) -> None:
        """The checkpointer's :class:`~ledger.storage.wal.CheckpointObserver` (its thread)."""
        self.wal_pages.labels("total").set(state.pages)
        self.wal_pages.labels("pending").set(state.pending)

    def wal_checkpointed(self, report: CheckpointReport) -> None:
        outcome = "complete" if report.complete else "partial"
        self.wal_checkpoints.labels(report.mode, outcome).inc()
        self.wal_checkpoint_seconds.observe(report.seconds)

    def _batch_done(self, report: BatchReport) -> None:
        self.batch_entries.observe(report.entries)
        self.commit_seconds.observe(report.seconds)
        self.batches.labels("committed" if report.committed else "failed").inc()
        self.entries_appended.inc(report.appended)


class _WitnessCollector(Collector):
    """``policy_ledger_witness_*`` by witness (its key name), from ``WitnessProgress``."""

    def __init__(self, submitter: WitnessSubmitter) -> None:
        self._submitter = submitter

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "policy_ledger_witness_lag_entries",
            "Entries the log has that the witness has not cosigned yet.",
            labels=("witness",),
        )
        cosigned = GaugeMetricFamily(
            "policy_ledger_witness_cosigned_size",
            "The tree size of the witness's latest cosignature the log holds.",
            labels=("witness",),
        )
        failures = CounterMetricFamily(
            "policy_ledger_witness_failures",
            "Submissions to the witness that failed (refused, unreachable, bad answer).",
            labels=("witness",),
        )
        for progress in list(self._submitter.progress):
            lag.add_metric((progress.name,), progress.lag)
            cosigned.add_metric((progress.name,), progress.cosigned_size)
            failures.add_metric((progress.name,), progress.failures)
        yield from (lag, cosigned, failures)


class _MetricsHandler(WSGIRequestHandler):
    timeout = limits.metrics_request_seconds_max

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds is not news."""


class _MetricsServer(BoundedThreading, WSGIServer):
    connections_max = limits.metrics_connections_max


class MetricsEndpoint(Listener):
    """``GET /metrics`` of ``registry`` on ``host:port`` (0 picks a port), on a thread of its
    own, bounded (:mod:`ledger.http_listener`: connections at once, seconds a request)."""

    def __init__(self, host: str, port: int, registry: Collector) -> None:
        # The application is the server class's (as WSGIServer.set_app would set it), so that
        # it is there before the first connection is accepted.
        server = type(
            "MetricsServer",
            (_MetricsServer,),
            {"application": staticmethod(make_wsgi_app(registry))},
        )
        super().__init__(server, host, port, _MetricsHandler, name="metrics", flag="--metrics-port")


_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(log_format: str) -> None:
    """Send INFO and above to stderr, as text or as JSON lines (``timestamp``, ``level``,
    ``logger``, ``message`` and any ``extra`` fields, e.g. the call log's request id)."""
    if log_format not in LOG_FORMATS:
        raise InvalidArgument(
            f"log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}",
            reason="LOG_FORMAT_UNKNOWN",
        )
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    # As basicConfig does: nothing when logging is configured already (an embedding program,
    # or the tests, which run `serve` in-process and keep their own handlers).
    logging.basicConfig(level=logging.INFO, handlers=[handler])
