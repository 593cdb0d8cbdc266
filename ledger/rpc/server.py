"""The composition root: wires storage, sequencer, services, health and reflection together.

Start-up is one short function (as the gRPC examples do): open and migrate the database, load
the log key, start the sequencer, build ``grpc.aio.server()``, add the servicers, standard health
checking and reflection, start. Stopping reports NOT_SERVING, lets calls finish within a grace
period, commits what the sequencer still holds, and closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import IO, Any

import grpc
from grpc_health.v1 import _async as health_aio  # public as health.aio, which the stubs lack
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from ledger import limits, tracing
from ledger.clock import Clock, SystemClock
from ledger.compliance.employer import EmployerReader
from ledger.config import (
    ServerConfig,
    TlsFiles,
    check_origin,
    host_of,
    load_signer,
    load_tls_files,
)
from ledger.cosignature import WitnessEndpoint, parse_witness_option
from ledger.coverage.person_record import PersonRecordReader
from ledger.coverage.reader import CoverageReader
from ledger.coverage.watching import WatchHub, WatchStore
from ledger.errors import InvalidArgument
from ledger.fair import ReadPool
from ledger.fund_enrolment import FundEnrolment
from ledger.funds.reader import FundTotalsReader
from ledger.identity.erasure import ErasureHooks
from ledger.identity.resolution_grants import ResolutionGrants
from ledger.identity.vault import IdentityVault
from ledger.metrics import LedgerMetrics
from ledger.rpc.access import AccessRecordingInterceptor
from ledger.rpc.admin_servicer import AdminServicer
from ledger.rpc.authorization import (
    AuthorizationTable,
    beneficiary_rules,
    check_signer,
    ledger_rules,
)
from ledger.rpc.beneficiary_servicer import BeneficiaryServicer
from ledger.rpc.compliance_servicer import ComplianceServicer
from ledger.rpc.coverage_servicer import CoverageServicer
from ledger.rpc.decisions_servicer import PenaltyDecisionsServicer
from ledger.rpc.enrolment_port import (
    EnrolmentMaterial,
    EnrolmentPort,
    load_enrolment_material,
    start_enrolment_port,
)
from ledger.rpc.fairness import CallerLimitInterceptor
from ledger.rpc.fund_servicer import FundServicer
from ledger.rpc.identity_servicer import IdentityServicer
from ledger.rpc.interceptor import AuthorizationInterceptor
from ledger.rpc.ledger_servicer import LedgerServicer
from ledger.rpc.observing import CallObservingInterceptor
from ledger.rpc.ports import refuse_address_in_use
from ledger.rpc.request_layer import RequestValidationInterceptor
from ledger.sequencer import Sequencer, SequencerPort
from ledger.service import KeyCache, Ledger
from ledger.signing import Ed25519Signer, format_verifier_key, parse_verifier_key
from ledger.storage.access_log import AccessLog
from ledger.storage.append import Appender
from ledger.storage.cosignature_store import CosignatureStore
from ledger.storage.db import create_ledger_engine, lock_sqlite_for_serving
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.storage.integrity import IntegrityWatch
from ledger.storage.key_store import KeyStore
from ledger.storage.log_store import LogStore, entry_count
from ledger.storage.migrate import upgrade
from ledger.storage.read_routing import ReadRouter, check_same_log, open_standby
from ledger.storage.vault_store import VaultStore
from ledger.storage.wal import WalCheckpointer, served_sqlite_file
from ledger.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    beneficiary_service_pb2,
    beneficiary_service_pb2_grpc,
    compliance_service_pb2,
    compliance_service_pb2_grpc,
    coverage_service_pb2,
    coverage_service_pb2_grpc,
    fund_service_pb2,
    fund_service_pb2_grpc,
    identity_service_pb2,
    identity_service_pb2_grpc,
    ledger_service_pb2,
    ledger_service_pb2_grpc,
)
from ledger.verify_page.http import PAGE_PATH, VerifyPageEndpoint
from ledger.witnessing import WitnessSubmitter

__all__ = ["RunningServer", "start_server"]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    coverage_service_pb2.DESCRIPTOR.services_by_name["CoverageService"].full_name,
    identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    # Task A (issue 10).
    compliance_service_pb2.DESCRIPTOR.services_by_name["ComplianceService"].full_name,
    fund_service_pb2.DESCRIPTOR.services_by_name["FundService"].full_name,
    beneficiary_service_pb2.DESCRIPTOR.services_by_name["BeneficiaryService"].full_name,
)


EXTENSION_GROUP = "policy_ledger.server_extensions"
"""Entry-point group of server extensions: ``install(context: ServerContext) -> tuple[str, ...]``
adds servicers and returns the full names of the services it added (none when unconfigured).
The renewal payments plug in this way, so the ledger never imports them."""


@dataclass(frozen=True)
class ServerContext:
    """What an extension gets to build on."""

    server: grpc.aio.Server
    engine: Engine
    ledger: Ledger
    """Admission (verify, parse, validate) and sequencing of signed events."""
    clock: Clock
    loop: asyncio.AbstractEventLoop
    """The server's event loop (extensions that run work in threads submit back to it)."""
    authorization: AuthorizationTable
    """The authorization table: an extension adds a row for every method it serves (a method
    without one is refused)."""
    metrics: CollectorRegistry | None = None
    """The server's Prometheus registry, where an extension registers its own collectors; None
    when ``serve`` has no metrics endpoint."""
    erasure_hooks: ErasureHooks = field(default_factory=ErasureHooks)
    """Where an extension that keeps rows naming people registers how to redact them: run in
    the transaction that appends a ``PersonErased`` entry (:mod:`ledger.identity.erasure`)."""
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    """What an extension releases when the server stops (its threads, its listeners): each is
    called on a thread, newest first, once no call is under way and before the sequencer stops
    (work they finish may still append). One that raises is logged; the others still run."""


async def run_stop_hooks(hooks: list[Callable[[], None]]) -> None:
    """Call ``hooks`` (:attr:`ServerContext.on_stop`) newest first, each on a thread."""
    for hook in reversed(hooks):
        try:
            await asyncio.to_thread(hook)
        except Exception:  # the rest must still be released
            log.exception("a stop hook failed: %r", hook)


def connection_options(idle_ms: int) -> list[tuple[str, int]]:
    """The transport limits that keep one connection from hurting the others (ledger.limits)."""
    return [
        ("grpc.max_concurrent_streams", limits.connection_streams_max),
        # grpc cancels calls that wait for the server to take them beyond this (default 1000):
        # a burst of 2,000 streams was answered CANCELLED, or INTERNAL by clients still writing.
        ("grpc.server.max_pending_requests", limits.server_pending_calls_max),
        ("grpc.server.max_pending_requests_hard_limit", 2 * limits.server_pending_calls_max),
        # ... and those that wait longer than this (default 30 s, reached under load by such a
        # burst: most of it was answered CANCELLED).
        ("grpc.server_max_unrequested_time_in_server", limits.server_pending_call_seconds_max),
        ("grpc.max_connection_idle_ms", idle_ms),
        ("grpc.server_handshake_timeout_ms", min(limits.handshake_ms_max, idle_ms)),
        ("grpc.keepalive_time_ms", limits.keepalive_interval_ms),
        ("grpc.keepalive_timeout_ms", limits.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", limits.client_ping_interval_ms_min),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _add_compliance_and_fund_servicers(
    server: grpc.aio.Server,
    engine: Engine,
    clock: Clock,
    reads: ReadPool,
    person_records: PersonRecordReader,
) -> None:
    """The services of employers' compliance (issue 10) and of funds and beneficiaries
    (issue 11)."""
    # Issue 10: arrears and fines of employers, and penalty decisions.
    compliance_service_pb2_grpc.add_ComplianceServiceServicer_to_server(
        ComplianceServicer(
            EmployerReader(engine, clock),
            PenaltyDecisionsServicer(engine, clock, LogStore(engine), reads),
            reads,
        ),
        server,
    )
    # Task D (issue 11): funded cohorts' totals.
    fund_service_pb2_grpc.add_FundServiceServicer_to_server(
        FundServicer(FundTotalsReader(engine, clock), reads), server
    )
    beneficiary_service_pb2_grpc.add_BeneficiaryServiceServicer_to_server(
        BeneficiaryServicer(
            person_records,
            LogStore(engine),
            reads,
            FundEnrolment(person_records, EnrolmentStore(engine), clock),
        ),
        server,
    )


async def _add_health_and_reflection(
    server: grpc.aio.Server, extra_services: tuple[str, ...]
) -> health_aio.HealthServicer:
    """grpc.health.v1 (every service SERVING) and server reflection."""
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES, *extra_services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            *extra_services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return health_servicer


def install_extensions(context: ServerContext) -> tuple[str, ...]:
    names: list[str] = []
    for point in entry_points(group=EXTENSION_GROUP):
        installed = point.load()(context)
        log.info("extension %s installed: %s", point.name, ", ".join(installed) or "nothing")
        names.extend(installed)
    return tuple(names)


def add_port(server: grpc.aio.Server, listen: str, tls: TlsFiles | None) -> int:
    """Listen with mutual TLS (TLS 1.3 where the client offers it; a client certificate from
    the client CA required), or in plaintext when explicitly asked to, with a warning."""
    if tls is None:
        log.warning(
            "INSECURE: serving %s in plaintext (--insecure-plaintext). No caller can prove who it "
            "is: every method but health and reflection is refused UNAUTHENTICATED. "
            "Development only.",
            listen,
        )
        return server.add_insecure_port(listen)
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=True,
    )
    return server.add_secure_port(listen, credentials)


@dataclass
class RunningServer:
    """A started server: its port, and how to stop it."""

    server: grpc.aio.Server
    port: int
    origin: str
    sequencer: Sequencer
    engine: Engine
    health: health_aio.HealthServicer
    grace_seconds: float
    authorization: AuthorizationTable
    """The table the interceptor enforces (every method served must have a row)."""
    witnessing: WitnessSubmitter | None = None
    """Submits checkpoints to the configured witnesses (None: no witnesses)."""
    enrolment: EnrolmentPort | None = None
    """The enrolment port (``serve --enrol-listen``), or None."""
    read_pool: ThreadPoolExecutor | None = None
    """The loop's default executor (small lookups of submissions, access records)."""
    reads: ReadPool | None = None
    """The servicers' read pool (fair between callers, bounded)."""
    metrics: LedgerMetrics | None = None
    """The server's metrics and their endpoint (``serve --metrics-port``), or None."""
    database_lock: IO[str] | None = None
    """The SQLite file's serving lock (``ledger.storage.db.lock_sqlite_for_serving``), held
    until the server stops; None on PostgreSQL."""
    watches: WatchHub | None = None
    """The change feed's watches (CoverageService.WatchCoverage), ended first at stop."""
    verify_page: VerifyPageEndpoint | None = None
    """The verification page's listener (``serve --verify-page-port``), or None."""
    router: ReadRouter | None = None
    """Routes reads to the read standby (``serve --read-database``) or the primary."""
    wal_checkpointer: WalCheckpointer | None = None
    """Checkpoints a SQLite file's WAL off the commit path (None on PostgreSQL)."""
    integrity: IntegrityWatch | None = None
    """Tells a corrupt database from a read that failed (``ledger.storage.integrity``)."""
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    """What the serving side releases once its calls are done (:func:`run_stop_hooks`)."""

    async def stop(self) -> None:
        """Stop taking calls, finish the ones under way, commit what is queued, close."""
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.watches is not None:
            # Watches never end by themselves: end them (UNAVAILABLE, with the tree size to
            # resume from) so the grace period is left to the calls that do.
            self.watches.close()
        if self.enrolment is not None:
            await self.enrolment.stop(self.grace_seconds)
        await self.server.stop(self.grace_seconds)
        await run_stop_hooks(self.on_stop)
        await self.sequencer.stop()
        if self.witnessing is not None:
            await self.witnessing.stop()
        if self.wal_checkpointer is not None:
            await asyncio.to_thread(self.wal_checkpointer.stop)  # with a final checkpoint
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        if self.verify_page is not None:
            await asyncio.to_thread(self.verify_page.stop)
        self.engine.dispose()
        if self.router is not None and self.router.standby is not None:
            self.router.standby.dispose()
        if self.database_lock is not None:
            self.database_lock.close()
        if self.read_pool is not None:
            self.read_pool.shutdown(wait=False)
        if self.reads is not None:
            self.reads.shutdown()


def operator_key_to_anchor(engine: Engine, config: ServerConfig) -> bytes | None:
    """The operator's public key from the configuration; an empty log cannot start without
    one, since nothing could ever be signed in it (see :mod:`ledger.genesis`)."""
    if config.operator_verifier:
        return parse_verifier_key(config.operator_verifier).public_key
    with engine.connect() as connection:
        if entry_count(connection) == 0:
            raise InvalidArgument(
                "this log is empty: pass the operator's first key with `serve --operator-verifier "
                "KEY` (or POLICY_LEDGER_OPERATOR_VERIFIER), the verifier key printed by "
                "`policy-ledger keygen --name operator`; its genesis entry will name it",
                reason="OPERATOR_KEY_REQUIRED",
            )
    return None


async def start_server(config: ServerConfig, clock: Clock | None = None) -> RunningServer:
    """Start a server as ``config`` says, in this one process (``config.workers`` is the CLI's:
    ``serve --workers N`` runs :mod:`ledger.rpc.supervisor` instead); returns once it listens."""
    # One server per port and per SQLite file: refused before anything is opened.
    refuse_address_in_use(config.listen)
    if config.enrol_listen:
        refuse_address_in_use(config.enrol_listen, "--enrol-listen")
    with contextlib.ExitStack() as on_failure:
        database_lock = lock_sqlite_for_serving(config.database_url)
        if database_lock is not None:
            on_failure.callback(database_lock.close)
        metrics = _start_metrics(config)
        if metrics is not None:
            on_failure.callback(metrics.stop)
        verify_page = start_verify_page(config)
        if verify_page is not None:
            on_failure.callback(verify_page.stop)
        running = await _start(config, clock or SystemClock(), metrics, database_lock)
        running.verify_page = verify_page
        on_failure.pop_all()  # started: stopping is RunningServer.stop's
        return running


async def _start(
    config: ServerConfig,
    clock: Clock,
    metrics: LedgerMetrics | None,
    database_lock: IO[str] | None,
) -> RunningServer:
    prepared = prepare_sequencer_side(config)  # first: refuse to start before opening anything
    tls, signer, origin, reads = prepared.tls, prepared.signer, prepared.origin, prepared.reads
    # A start refused part-way (an empty log without --operator-verifier, a standby of another
    # log, a migration that fails) closes what it had opened, in reverse order: the engines'
    # pooled connections, the sequencer's thread, the read pools. The CLI exits then anyway,
    # but a process that starts servers in turn (the tests) kept every one's descriptors.
    async with contextlib.AsyncExitStack() as on_failure:
        on_failure.callback(prepared.read_pool.shutdown, wait=False)
        on_failure.callback(reads.shutdown)
        standby = (
            open_standby(config.read_database_url, config.database_url)
            if config.read_database_url
            else None
        )  # a bad URL is refused before the primary is opened
        if standby is not None:
            on_failure.callback(standby.dispose)
        engine = create_ledger_engine(config.database_url, auto_checkpoint=False)
        on_failure.callback(engine.dispose)
        integrity = watch_integrity(engine, metrics)
        if config.migrate:
            await asyncio.to_thread(upgrade, engine)
        if standby is not None:
            await asyncio.to_thread(check_same_log, engine, standby)
        erasure_hooks = ErasureHooks()
        sequencer = await start_sequencer(
            config,
            clock,
            engine,
            signer=signer,
            origin=origin,
            erasure_hooks=erasure_hooks,
            metrics=metrics,
        )
        on_failure.push_async_callback(sequencer.stop)
        wal_checkpointer = start_wal_checkpointer(engine, sequencer, metrics)
        if wal_checkpointer is not None:
            on_failure.push_async_callback(asyncio.to_thread, wal_checkpointer.stop)
        side = await build_serving_side(
            config,
            clock,
            engine,
            standby=standby,
            signer=signer,
            sequencer=sequencer,
            reads=reads,
            metrics=metrics,
            erasure_hooks=erasure_hooks,
        )
        on_failure.push_async_callback(side.server.stop, None)
        await report_corruption(integrity, side)
        witnessing = start_witnessing(prepared.witnesses, sequencer, engine, clock, metrics)
        if witnessing is not None:
            on_failure.push_async_callback(witnessing.stop)
        port = add_port(side.server, config.listen, tls)
        await side.server.start()
        enrolment = await start_enrolment_port(
            config,
            prepared.enrolment_material,
            side.ledger,
            EnrolmentStore(engine),
            clock,
            observing=observing_interceptors(metrics, config),
        )
        on_failure.pop_all()  # started: stopping is RunningServer.stop's
    log.info("serving %s on port %d (origin %s)", config.database_url, port, origin)
    if standby is not None:
        log.info("reads may be answered by the standby %s", standby.url.render_as_string())
    return RunningServer(
        server=side.server,
        port=port,
        origin=origin,
        sequencer=sequencer,
        engine=engine,
        health=side.health,
        grace_seconds=config.grace_seconds,
        witnessing=witnessing,
        authorization=side.authorization,
        read_pool=prepared.read_pool,
        reads=reads,
        enrolment=enrolment,
        metrics=metrics,
        database_lock=database_lock,
        watches=side.watches,
        router=side.router,
        wal_checkpointer=wal_checkpointer,
        integrity=integrity,
        on_stop=side.on_stop,
    )


def watch_integrity(engine: Engine, metrics: LedgerMetrics | None) -> IntegrityWatch:
    """Watch ``engine``'s errors for a corrupt database (shown in the metrics, if any)."""
    integrity = IntegrityWatch(engine)
    if metrics is not None:
        metrics.watch_integrity(integrity)
    return integrity


def watch_standby_integrity(standby: Engine, metrics: LedgerMetrics | None) -> IntegrityWatch:
    """Watch the read standby's errors for corruption, as the primary's (shown in the metrics
    as ``policy_ledger_standby_corrupt``); the read router bypasses it once confirmed. Health is
    not the standby's: the primary answers every read."""
    integrity = IntegrityWatch(standby, standby=True)
    if metrics is not None:
        metrics.watch_standby_integrity(integrity)
    return integrity


async def report_corruption(integrity: IntegrityWatch, side: ServingSide) -> None:
    """Once ``integrity`` confirms the database corrupt, health turns NOT_SERVING for every
    service, and stays so until the process restarts: orchestrators and load balancers route
    to another instance. The process does not exit: ``serve --workers N``'s supervisor would
    restart it into the same file, and only an operator can restore it.

    A watch that confirmed it already (a worker started after the sequencer process's
    confirmation: :mod:`ledger.rpc.children`) turns health NOT_SERVING before this returns,
    so a server started after it never answers SERVING."""
    loop = asyncio.get_running_loop()

    async def not_serving() -> None:
        for name in ("", *side.services):
            await side.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def corrupt(_finding: str) -> None:  # in the thread that ran the check
        asyncio.run_coroutine_threadsafe(not_serving(), loop)

    integrity.listeners.append(corrupt)
    if integrity.corrupt:
        await not_serving()


@dataclass(frozen=True)
class SequencerSide:
    """What the process holding the sequencer (the single process, or ``--workers N``'s
    sequencer process) reads from its configuration before it opens the database: each part
    refused with a clear error here, before anything starts."""

    tls: TlsFiles | None
    enrolment_material: EnrolmentMaterial | None
    read_pool: ThreadPoolExecutor
    reads: ReadPool
    signer: Ed25519Signer
    origin: str
    witnesses: list[WitnessEndpoint]


def prepare_sequencer_side(config: ServerConfig) -> SequencerSide:
    """Check and load the sequencer side's material (TLS first, tracing, the enrolment port's
    keys, the log's signer and origin, the witnesses) and start the read pools."""
    tls = load_tls_files(config)
    tracing.setup(config.trace_otlp_endpoint)  # a bad URL is refused here too (ledger.tracing)
    enrolment_material = load_enrolment_material(config, tls)
    read_pool, reads = start_read_pools()
    signer = load_signer(config.log_key_path)
    origin = config.origin or signer.name
    check_origin(origin)
    return SequencerSide(
        tls=tls,
        enrolment_material=enrolment_material,
        read_pool=read_pool,
        reads=reads,
        signer=signer,
        origin=origin,
        witnesses=parse_witnesses(config.witnesses),
    )


def start_read_pools() -> tuple[ThreadPoolExecutor, ReadPool]:
    """The loop's default executor and the servicers' read pool.

    Servicer reads run on a read pool of their own, taking callers in turns (ledger.fair); the
    small lookups of submissions (asyncio.to_thread) on the loop's default executor, bounded:
    neither can starve the other, nor the sequencer's own writer thread.
    """
    read_pool = ThreadPoolExecutor(limits.service_threads_max, thread_name_prefix="service")
    asyncio.get_running_loop().set_default_executor(read_pool)
    return read_pool, ReadPool()


async def start_sequencer(
    config: ServerConfig,
    clock: Clock,
    engine: Engine,
    *,
    signer: Ed25519Signer,
    origin: str,
    erasure_hooks: ErasureHooks,
    metrics: LedgerMetrics | None,
) -> Sequencer:
    """The sequencer side: the log's single writer, started (the log initialized if empty,
    its genesis entry naming the configured operator key). In the single process it sits
    beside the gRPC side; with ``--workers N`` it is the sequencer process's
    (``ledger.rpc.children``)."""
    operator_key = await asyncio.to_thread(operator_key_to_anchor, engine, config)
    sequencer = Sequencer(
        Appender(engine, signer, origin, operator_key, erasure_hooks), clock, config.sequencer
    )
    await sequencer.start()
    if metrics is not None:
        metrics.watch_sequencer(sequencer)
    return sequencer


def start_wal_checkpointer(
    engine: Engine, sequencer: Sequencer, metrics: LedgerMetrics | None
) -> WalCheckpointer | None:
    """Start the checkpointer of a SQLite file's WAL (None for PostgreSQL), told of each of the
    sequencer's commits. Only the process that writes the log runs one: the single process, or
    ``--workers N``'s sequencer process (the workers' engines, like this one's, never checkpoint
    in a commit: ``create_ledger_engine(..., auto_checkpoint=False)``)."""
    if served_sqlite_file(engine) is None:
        return None
    checkpointer = WalCheckpointer(engine, observer=metrics)
    checkpointer.start()
    sequencer.commit_listeners.append(checkpointer.notify)
    return checkpointer


@dataclass
class ServingSide:
    """The gRPC side, built around a :class:`~ledger.sequencer.SequencerPort` (not started)."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    authorization: AuthorizationTable
    ledger: Ledger
    watches: WatchHub
    router: ReadRouter
    key_cache: KeyCache
    """The registered keys admission checks against (a worker forgets them on key events)."""
    services: tuple[str, ...]
    """Every service name health reports on ("" aside), the extensions' included."""
    on_stop: list[Callable[[], None]]
    """What to release once the server has stopped taking calls (:func:`run_stop_hooks`): the
    access records' writer and what the extensions registered."""


async def build_serving_side(
    config: ServerConfig,
    clock: Clock,
    engine: Engine,
    *,
    standby: Engine | None,
    signer: Ed25519Signer,
    sequencer: SequencerPort,
    reads: ReadPool,
    metrics: LedgerMetrics | None,
    erasure_hooks: ErasureHooks,
    reuse_port: bool = False,
) -> ServingSide:
    """Every servicer, the interceptors, health and reflection, around ``sequencer``: the
    :class:`Sequencer` itself (one process) or a worker's hand-off client (``--workers N``,
    whose workers share the port: ``reuse_port``)."""
    if metrics is not None and not isinstance(sequencer, Sequencer):
        metrics.watch_sequencer(sequencer)
    router = ReadRouter(
        standby,
        known_size=lambda: sequencer.tree_size,
        lag_entries_max=config.read_lag_entries_max,
        observer=metrics,
        integrity=None if standby is None else watch_standby_integrity(standby, metrics),
    )
    key_store = KeyStore(engine)
    key_cache = KeyCache(key_store)
    person_records = PersonRecordReader(engine)
    authorization = AuthorizationTable(ledger_rules())
    authorization.add(beneficiary_rules(person_records.readable_by))  # Task F (issue 11)
    access = AccessRecordingInterceptor(AccessLog(engine), VaultStore(engine), clock)
    server = grpc.aio.server(
        # The call's metrics and log line outermost (they see every refusal); authorization
        # next (it sets the caller); then the caller's share of the server and the request's
        # validity; last, the access record of an answer about people.
        interceptors=[
            *observing_interceptors(metrics, config),
            AuthorizationInterceptor(authorization, config.trust_domain),
            CallerLimitInterceptor(config.caller_calls_in_flight_max),
            RequestValidationInterceptor(),
            access,
        ],
        options=[
            ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
            ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
            # gRPC turns SO_REUSEPORT on by default: a second server on the same port would
            # start silently and share the connections. Refuse the port instead -- except
            # between the workers of one supervisor, which hold the port's lock
            # (ledger.rpc.supervisor) and share it on purpose.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *connection_options(config.connection_idle_ms),
        ],
    )
    ledger = Ledger(key_cache, sequencer, clock, signer_check=check_signer)
    ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(
        LedgerServicer(
            ledger,
            LogStore(engine),
            reads,
            standby_log=None if standby is None else LogStore(standby),
            router=router,
        ),
        server,
    )
    watches = WatchHub(WatchStore(engine))
    sequencer.commit_listeners.append(watches.signal.notify)
    coverage_service_pb2_grpc.add_CoverageServiceServicer_to_server(
        CoverageServicer(
            CoverageReader(engine, clock),
            clock,
            LogStore(engine),
            signer,
            reads,
            employers=EmployerReader(engine, clock),
            watches=watches,
            standby=(
                None if standby is None else (CoverageReader(standby, clock), LogStore(standby))
            ),
            router=router,
        ),
        server,
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(key_store, key_cache, clock, ResolutionGrants(VaultStore(engine), clock)),
        server,
    )
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
        IdentityServicer(IdentityVault(VaultStore(engine)), clock), server
    )
    _add_compliance_and_fund_servicers(server, engine, clock, reads, person_records)
    extension_context = ServerContext(
        server=server,
        engine=engine,
        ledger=ledger,
        clock=clock,
        loop=asyncio.get_running_loop(),
        authorization=authorization,
        metrics=metrics.registry if metrics is not None else None,
        erasure_hooks=erasure_hooks,
    )
    extra_services = install_extensions(extension_context)
    health_servicer = await _add_health_and_reflection(server, extra_services)
    return ServingSide(
        server=server,
        health=health_servicer,
        authorization=authorization,
        ledger=ledger,
        watches=watches,
        router=router,
        key_cache=key_cache,
        services=(*SERVICE_NAMES, *extra_services),
        on_stop=[access.close, *extension_context.on_stop],
    )


def _start_metrics(config: ServerConfig) -> LedgerMetrics | None:
    """The server's metrics, served on ``--metrics-port`` at the host of ``--listen``."""
    if config.metrics_port is None:
        return None
    metrics = LedgerMetrics()
    host = host_of(config.listen)
    port = metrics.serve(host, config.metrics_port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return metrics


def start_verify_page(config: ServerConfig) -> VerifyPageEndpoint | None:
    """The verification page, with the log's verifier key in it, on ``--verify-page-port`` at
    the host of ``--listen`` (docs/verify-page.md)."""
    if config.verify_page_port is None:
        return None
    log_key = format_verifier_key(load_signer(config.log_key_path))
    host = host_of(config.listen)
    page = VerifyPageEndpoint(host, config.verify_page_port, log_key)
    log.info("verification page on http://%s:%d%s", host, page.port, PAGE_PATH)
    return page


def observing_interceptors(metrics: LedgerMetrics | None, config: ServerConfig) -> list[Any]:
    """The call-observing interceptor, when metrics, the call log or tracing are on (else
    none: a server that shows nothing pays nothing per call); first on each gRPC server
    (the service port and the enrolment port)."""
    log_calls = config.log_format == "json"
    trace = tracing.enabled()
    if metrics is None and not log_calls and not trace:
        return []
    return [CallObservingInterceptor(metrics, log_calls=log_calls, trace=trace)]


def parse_witnesses(options: Sequence[str]) -> list[WitnessEndpoint]:
    """The ``--witness URL=VERIFIERKEY`` options; InvalidArgument naming the bad one."""
    if len(options) > limits.witnesses_max:
        raise InvalidArgument(
            f"{len(options)} witnesses, over {limits.witnesses_max}",
            reason="WITNESSES_TOO_MANY",
        )
    return [parse_witness_option(option) for option in options]


def start_witnessing(
    witnesses: Sequence[WitnessEndpoint],
    sequencer: Sequencer,
    engine: Engine,
    clock: Clock,
    metrics: LedgerMetrics | None,
) -> WitnessSubmitter | None:
    """Submit every new checkpoint to the configured witnesses, in the background."""
    if not witnesses:
        return None
    submitter = WitnessSubmitter(witnesses, LogStore(engine), CosignatureStore(engine), clock)
    sequencer.commit_listeners.append(submitter.notify)
    submitter.start()
    if metrics is not None:
        metrics.watch_witnesses(submitter)
    return submitter
