"""``serve --workers N``: the supervisor, which runs one sequencer process and N workers.

The ``serve`` process becomes the supervisor (docs/design.md, "Several processes"). It checks
the configuration as the single process does, refuses an address or SQLite file in use, and
holds for its lifetime:

* the SQLite file's serving lock (:func:`ledger.storage.db.lock_sqlite_for_serving`);
* a lock per listen address (an exclusive ``flock`` on a file named after it, in the system's
  temporary directory): the workers bind the port with ``SO_REUSEPORT``, which any process of
  the same user could join; a second supervisor takes the lock first and is refused;
* a socket bound to the port with ``SO_REUSEPORT`` but not listening: with port 0 it is how the
  port is picked (the workers are given the concrete one), and it keeps the port while every
  worker restarts. The kernel gives connections only to listening sockets, so it takes none.

It migrates the database once, then starts the sequencer process and the workers
(:mod:`ledger.rpc.children`, exec'd, never forked) with a private directory (mode 0700) holding
the checked configuration and the hand-off socket. It answers ``start`` once every child said it
is ready. A child that dies is restarted, after a pause that doubles with each restart within a
minute (``limits.process_restart_delay_seconds_max``), and counted
(``policy_ledger_worker_restarts_total{process="worker"|"sequencer"}``); past
``limits.process_restarts_per_minute_max`` restarts of one process within a minute it gives up:
:attr:`Supervisor.gave_up` is set with why, and ``serve`` stops everything and exits 1.

Metrics (``--metrics-port``) are served by the supervisor: each child serves its own registry on
a loopback port it reports when ready; a scrape of the supervisor scrapes them and re-exposes
every series with a ``process`` label (``sequencer``, ``worker-1``, ...), beside the restart
counter and ``policy_ledger_process_up`` (0 for a child that is down: its series are
missing). The verification page is served by the supervisor; the enrolment port by the
sequencer process.

A database the sequencer process confirms corrupt (its ``corrupt FINDING`` line,
:mod:`ledger.rpc.children`) is relayed to every worker's stdin, and passed to each child started
after it as its argument (a worker takes it before it opens its port; a restarted sequencer
process before it takes a submission), until ``serve`` stops: every worker's health turns
NOT_SERVING and every process's ``policy_ledger_storage_corrupt`` shows 1, as the single process
does, restarted ones included.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import pickle
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ledger import limits, tracing
from ledger.config import (
    ServerConfig,
    check_origin,
    check_workers,
    host_of,
    load_signer,
    load_tls_files,
)
from ledger.errors import FailedPrecondition, Unavailable
from ledger.metrics import MetricsEndpoint
from ledger.rpc.children import CONFIG_FILE, CONNECTED_LINE, CORRUPT_LINE, READY_LINE
from ledger.rpc.enrolment_port import load_enrolment_material
from ledger.rpc.ports import refuse_address_in_use
from ledger.rpc.server import operator_key_to_anchor, parse_witnesses, start_verify_page
from ledger.storage.db import (
    POOL_SHARE_ENVIRONMENT,
    PoolShare,
    create_ledger_engine,
    lock_sqlite_for_serving,
)
from ledger.storage.migrate import upgrade
from ledger.storage.read_routing import open_standby
from ledger.verify_page.http import VerifyPageEndpoint

__all__ = [
    "CHILD_ENVIRONMENTS_GROUP",
    "ChildEnvironments",
    "Supervisor",
    "hold_listen_address",
    "start_supervisor",
]

log = logging.getLogger(__name__)

RESTARTS_SERIES = "policy_ledger_worker_restarts"
"""The restart counter (``_total`` in the exposition), by ``process``: worker or sequencer."""
PROCESS_UP_SERIES = "policy_ledger_process_up"
"""Whether each child answered the supervisor's scrape (:class:`_ChildrenCollector`)."""
_SCRAPE_SECONDS_MAX = 10.0

CHILD_ENVIRONMENTS_GROUP = "policy_ledger.child_environments"
"""Entry-point group of functions that adjust the environments the children start with
(:data:`ChildEnvironments`). An extension that runs something in one process and tells the
others where it is (the payments' gateway-notification receiver: one port, in the sequencer
process) plugs in this way, so the supervisor never names the extension's variables."""

ChildEnvironments = Callable[[dict[str, str], dict[str, str]], None]
"""``(sequencer, worker)``: the sequencer process's environment and every worker's, copies of the
supervisor's own, changed in place. Called once per ``start`` (a restarted child gets the same
environment again), in the supervisor process, before any child starts."""


@dataclass
class HeldAddress:
    """The listen address's lock and placeholder socket, and the concrete port."""

    port: int
    lock: IO[bytes]
    placeholder: socket.socket

    def close(self) -> None:
        self.placeholder.close()
        self.lock.close()


def _lock_address(host: str, port: int) -> IO[bytes]:
    """The exclusive lock of ``host:port`` (FAILED_PRECONDITION ADDRESS_IN_USE if held)."""
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    path = Path(tempfile.gettempdir()) / f"policy-ledger-listen-{safe_host}-{port}.lock"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        raise FailedPrecondition(
            f"cannot listen on {host}:{port}: another user's server holds {path}",
            reason="ADDRESS_IN_USE",
        ) from None
    handle = os.fdopen(descriptor, "r+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FailedPrecondition(
            f"cannot listen on {host}:{port}: another policy-ledger supervisor serves it (it "
            f"holds {path}); stop it or choose another --listen",
            reason="ADDRESS_IN_USE",
        ) from None
    return handle


def hold_listen_address(listen: str) -> HeldAddress:
    """Lock ``listen`` and bind a non-listening ``SO_REUSEPORT`` socket to it (port 0: the
    port the kernel picks). Raises FAILED_PRECONDITION ADDRESS_IN_USE when another supervisor
    holds the address or another process listens on it."""
    host = host_of(listen)
    requested = int(listen.rpartition(":")[2])
    lock = _lock_address(host, requested) if requested else None
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, requested, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        placeholder = socket.socket(family, kind, protocol)
        try:
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            placeholder.bind(address)
        except OSError as error:
            placeholder.close()
            if error.errno != errno.EADDRINUSE:
                raise
            raise FailedPrecondition(
                f"cannot listen on {listen}: it is in use by another process; stop it or "
                "choose another --listen",
                reason="ADDRESS_IN_USE",
            ) from None
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    port = int(placeholder.getsockname()[1])
    if lock is None:
        try:
            lock = _lock_address(host, port)
        except BaseException:
            placeholder.close()
            raise
    return HeldAddress(port, lock, placeholder)


class _ChildrenCollector(Collector):
    """Every child's series, scraped at each scrape of the supervisor, with a ``process``
    label; a child that does not answer (down, restarting: port 0) is left out of that scrape,
    and :data:`PROCESS_UP_SERIES` says which answered (1) and which did not (0), so a missing
    process shows as a 0 rather than as series that are silently not there."""

    def __init__(self, endpoints: Callable[[], list[tuple[str, int]]]) -> None:
        self._endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            PROCESS_UP_SERIES,
            "1 when the process of serve --workers N answered this scrape with its series; 0 "
            "while it is down or restarting (its series are missing from that scrape).",
            labels=("process",),
        )
        for name, port in self._endpoints():
            if not port:
                up.add_metric((name,), 0)
                continue
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=_SCRAPE_SECONDS_MAX) as answer:
                    text = answer.read().decode("utf-8")
            except OSError as error:
                log.warning("metrics of %s not scraped (%s)", name, error)
                up.add_metric((name,), 0)
                continue
            up.add_metric((name,), 1)
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    merged.add_sample(
                        sample.name,
                        {**sample.labels, "process": name},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
        yield from families.values()
        yield up


@dataclass
class _Child:
    role: str
    """``sequencer`` or ``worker``."""
    name: str
    """``sequencer``, ``worker-1``, ...: its ``process`` label."""
    process: asyncio.subprocess.Process | None = None
    metrics_port: int = 0
    restarts: list[float] = field(default_factory=list)
    """When it was restarted within the last minute (monotonic seconds)."""
    connected: bool = True
    """A worker: whether it last said it reaches the sequencer."""


class ChildFailed(RuntimeError):
    """A child exited (or hung) before it said it was ready."""


@dataclass
class Supervisor:
    """A started supervisor: the port its workers serve, and how to stop them."""

    config: ServerConfig
    port: int = 0
    origin: str = ""
    metrics_port: int | None = None
    verify_page: VerifyPageEndpoint | None = None
    gave_up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a process died too often: :attr:`why` says which."""
    why: str = ""
    _children: list[_Child] = field(default_factory=list)
    _stopping: bool = False
    _directory: Path | None = None
    _held: HeldAddress | None = None
    _database_lock: IO[str] | None = None
    _metrics: MetricsEndpoint | None = None
    _restarts: Counter | None = None
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    _environments: dict[str, dict[str, str]] = field(default_factory=dict)
    _reports: asyncio.Condition = field(default_factory=asyncio.Condition)
    _readers: set[asyncio.Task[None]] = field(default_factory=set)
    corruption: str | None = None
    """What the sequencer process's integrity check found, once it confirmed the database
    corrupt (None until then): every worker is told, and every child started later (a
    restarted sequencer process too)."""

    @property
    def pids(self) -> dict[str, int]:
        """Each live child's pid, by its name."""
        return {
            child.name: child.process.pid
            for child in self._children
            if child.process is not None and child.process.returncode is None
        }

    async def _start(self) -> None:
        config = self.config
        check_workers(config.workers)
        pools = config.database_pool_shares()  # refuses totals too small for the processes
        if config.trace_otlp_endpoint:
            tracing.check_endpoint(config.trace_otlp_endpoint)  # the children set it up
        # Refuse a bad configuration before anything is opened or started, as `serve` does.
        tls = load_tls_files(config)
        load_enrolment_material(config, tls)
        signer = load_signer(config.log_key_path)
        self.origin = config.origin or signer.name
        check_origin(self.origin)
        parse_witnesses(config.witnesses)
        if config.read_database_url:
            open_standby(config.read_database_url, config.database_url).dispose()
        refuse_address_in_use(config.listen)
        if config.enrol_listen:
            refuse_address_in_use(config.enrol_listen, "--enrol-listen")
        self._held = hold_listen_address(config.listen)
        self.port = self._held.port
        self._database_lock = lock_sqlite_for_serving(config.database_url)
        if config.metrics_port is not None:
            self._start_metrics(config.metrics_port)
        self.verify_page = start_verify_page(config)
        await asyncio.to_thread(self._prepare_database)
        self._directory = Path(tempfile.mkdtemp(prefix="policy-ledger-"))
        self._directory.chmod(0o700)
        host = config.listen.rpartition(":")[0]
        child_config = replace(
            config,
            listen=f"{host}:{self.port}",
            migrate=False,
            metrics_port=None if config.metrics_port is None else 0,
        )
        descriptor = os.open(self._directory / CONFIG_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            pickle.dump(child_config, handle)
        self._environments = _environments(sequencer_pool=pools[0], worker_pool=pools[-1])
        sequencer = _Child("sequencer", "sequencer")
        self._children.append(sequencer)
        await self._spawn(sequencer)
        workers = [_Child("worker", f"worker-{n}") for n in range(1, config.workers + 1)]
        self._children.extend(workers)
        await asyncio.gather(*(self._spawn(worker) for worker in workers))
        self._watchers = [
            asyncio.create_task(self._watch(child), name=f"watch-{child.name}")
            for child in self._children
        ]
        log.info(
            "supervisor serving on port %d: sequencer and %d workers (%s)",
            self.port,
            config.workers,
            ", ".join(f"{name} pid {pid}" for name, pid in self.pids.items()),
        )

    def _prepare_database(self) -> None:
        """Migrate once; refuse an empty log without an operator key (as `serve` does)."""
        engine = create_ledger_engine(self.config.database_url)
        try:
            if self.config.migrate:
                upgrade(engine)
            operator_key_to_anchor(engine, self.config)
        finally:
            engine.dispose()

    def _start_metrics(self, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        self._restarts = Counter(
            RESTARTS_SERIES,
            "Processes of serve --workers N the supervisor restarted after they died, by role.",
            ("process",),
            registry=registry,
        )
        for role in ("worker", "sequencer"):
            self._restarts.labels(role)
        registry.register(_ChildrenCollector(self._metrics_endpoints))
        host = host_of(self.config.listen)
        self._metrics = MetricsEndpoint(host, port, registry)
        self.metrics_port = self._metrics.port
        log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    def _metrics_endpoints(self) -> list[tuple[str, int]]:
        """Every child's (name, metrics port), the port 0 while it is down."""
        return [
            (
                child.name,
                child.metrics_port
                if child.process is not None and child.process.returncode is None
                else 0,
            )
            for child in list(self._children)
        ]

    async def _spawn(self, child: _Child) -> None:
        """Start ``child``; return once it says it is ready (ChildFailed if it does not)."""
        assert self._directory is not None
        child.metrics_port = 0
        arguments = self._child_arguments(child)
        told_at_start = self.corruption
        process = await asyncio.create_subprocess_exec(
            *arguments,
            stdin=asyncio.subprocess.PIPE,  # closed: stop (ledger.rpc.children)
            stdout=asyncio.subprocess.PIPE,
            env=self._environments[child.role],
        )
        child.process = process
        if self.corruption != told_at_start:
            # Confirmed while the process was being created (its relay skipped this child):
            # on its stdin, read once it is ready.
            self._tell_corruption(child)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(limits.process_ready_seconds_max):
                line = (await process.stdout.readline()).decode("utf-8", "replace")
        except TimeoutError:
            process.kill()
            line = ""
        if not line.startswith(READY_LINE):
            code = await process.wait()
            raise ChildFailed(f"the {child.name} process exited with {code} before it was ready")
        child.metrics_port = int(line[len(READY_LINE) :])
        child.connected = True
        reading = asyncio.create_task(self._read_reports(process.stdout, child))
        self._readers.add(reading)  # a reference until it ends (at the child's exit)
        reading.add_done_callback(self._readers.discard)

    def _child_arguments(self, child: _Child) -> list[str]:
        """The command that starts ``child`` (:mod:`ledger.rpc.children`): a child started
        after the sequencer process confirmed the database corrupt gets the finding as its last
        argument. A worker takes it before it opens its port (its health is NOT_SERVING from
        its first answer; a line on its stdin would be read only once it is ready); a restarted
        sequencer process before it takes a submission (its gauge shows 1, and a corruption
        error answers STORAGE_CORRUPT without waiting for its own checks to confirm again)."""
        assert self._directory is not None
        arguments = [
            sys.executable,
            "-m",
            "ledger.rpc.children",
            child.role,
            child.name,
            str(self._directory),
            str(os.getpid()),
        ]
        if self.corruption is not None:
            arguments.append(self.corruption)
        return arguments

    async def _read_reports(self, stream: asyncio.StreamReader, child: _Child) -> None:
        """Read what a child reports after its ready line, until it exits."""
        while line := (await stream.readline()).decode("utf-8", "replace"):
            if line.startswith(CONNECTED_LINE):
                child.connected = line[len(CONNECTED_LINE) :].strip() == "1"
                async with self._reports:
                    self._reports.notify_all()
            elif line.startswith(CORRUPT_LINE) and child.role == "sequencer":
                self._relay_corruption(line[len(CORRUPT_LINE) :].strip())
            else:
                log.info("%s: %s", child.name, line.rstrip())

    def _relay_corruption(self, finding: str) -> None:
        """The sequencer process confirmed the database corrupt: tell every worker (the first
        finding; a restarted sequencer process, told it at its start, reports it again: nothing
        changes)."""
        if self.corruption is not None:
            return
        self.corruption = finding
        log.error(
            "the sequencer process confirmed the database corrupt (%s): every worker's health "
            "is NOT_SERVING until serve restarts",
            finding,
        )
        for child in self._children:
            self._tell_corruption(child)

    def _tell_corruption(self, child: _Child) -> None:
        """Write the corruption, if any, on a live worker's stdin (a small line: the pipe's
        buffer takes it without a wait; a worker that just died is told when restarted)."""
        process = child.process
        if (
            self.corruption is None
            or child.role != "worker"
            or process is None
            or process.returncode is not None
            or process.stdin is None
            or process.stdin.is_closing()
        ):
            return
        process.stdin.write(f"{CORRUPT_LINE}{self.corruption}\n".encode())

    async def _workers_connected(self) -> None:
        """Return once every live worker says it reaches the sequencer (bounded)."""

        def connected() -> bool:
            return all(
                c.connected
                for c in self._children
                if c.role == "worker" and c.process is not None and c.process.returncode is None
            )

        try:
            async with asyncio.timeout(limits.process_ready_seconds_max), self._reports:
                await self._reports.wait_for(connected)
        except TimeoutError:
            log.warning("not every worker reconnected to the restarted sequencer")

    async def _watch(self, child: _Child) -> None:
        """Restart ``child`` whenever it dies, until stopping or giving up."""
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 60]
            if len(child.restarts) >= limits.process_restarts_per_minute_max:
                self.why = (
                    f"the {child.name} process died {len(child.restarts) + 1} times within a "
                    f"minute (limits.process_restarts_per_minute_max is "
                    f"{limits.process_restarts_per_minute_max}); giving up"
                )
                log.error("%s", self.why)
                self.gave_up.set()
                return
            child.restarts.append(now)
            if child.role == "sequencer":
                for worker in self._children:
                    worker.connected = worker.role != "worker"  # they lost it with it
            if self._restarts is not None:
                self._restarts.labels(child.role).inc()
            delay = min(
                0.1 * 2 ** (len(child.restarts) - 1), limits.process_restart_delay_seconds_max
            )
            log.error(
                "the %s process (pid %d) exited with %s; restarting it in %.1f s",
                child.name,
                child.process.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(child)
            except ChildFailed as error:
                log.error("%s", error)
                continue
            if child.role == "sequencer":
                await self._workers_connected()
            log.info("the %s process restarted (pid %d)", child.name, child.process.pid)
            print(f"process {child.name} restarted, pid {child.process.pid}", flush=True)

    async def stop(self) -> None:
        """Drain: the workers first (health NOT_SERVING, grace period, stop), then the
        sequencer (it commits what it holds); then close what the supervisor holds."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        workers = [child for child in self._children if child.role == "worker"]
        await asyncio.gather(*(self._terminate(worker) for worker in workers))
        await asyncio.gather(
            *(self._terminate(child) for child in self._children if child.role == "sequencer")
        )
        self._close()

    async def _terminate(self, child: _Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child's signal to stop cleanly
        try:
            async with asyncio.timeout(
                self.config.grace_seconds + limits.process_ready_seconds_max
            ):
                code = await process.wait()
        except TimeoutError:
            log.error("the %s process did not stop; killing it", child.name)
            process.kill()
            code = await process.wait()
        if code != 0:
            log.warning("the %s process stopped with %s", child.name, code)

    def _close(self) -> None:
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if self.verify_page is not None:
            self.verify_page.stop()
        if self._held is not None:
            self._held.close()
            self._held = None
        if self._database_lock is not None:
            self._database_lock.close()
            self._database_lock = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _environments(
    *, sequencer_pool: PoolShare | None = None, worker_pool: PoolShare | None = None
) -> dict[str, dict[str, str]]:
    """Each role's environment: the supervisor's, with each process's share of the database
    connections (:meth:`ledger.config.ServerConfig.database_pool_shares`; its engines read it;
    None: none is set), then as every :data:`CHILD_ENVIRONMENTS_GROUP` function leaves it."""
    base = dict(os.environ)
    sequencer, worker = dict(base), dict(base)
    for environment, pool in ((sequencer, sequencer_pool), (worker, worker_pool)):
        if pool is not None:
            environment[POOL_SHARE_ENVIRONMENT] = str(pool)
    for point in entry_points(group=CHILD_ENVIRONMENTS_GROUP):
        adjust: ChildEnvironments = point.load()
        adjust(sequencer, worker)
    return {"sequencer": sequencer, "worker": worker}


async def start_supervisor(config: ServerConfig) -> Supervisor:
    """Start the sequencer process and ``config.workers`` workers; return once all are ready.
    Whatever was started is stopped again if the start fails."""
    supervisor = Supervisor(config)
    try:
        await supervisor._start()
    except ChildFailed as error:
        await supervisor.stop()
        raise Unavailable(f"{error} (its log is above)", reason="PROCESS_FAILED_TO_START") from None
    except BaseException:
        await supervisor.stop()
        raise
    return supervisor
