"""The processes ``serve --workers N`` starts: one sequencer process and N workers.

Run as ``python -m ledger.rpc.children ROLE NAME DIRECTORY SUPERVISOR_PID [FINDING]`` by the
supervisor (:mod:`ledger.rpc.supervisor`) only: ROLE is ``sequencer`` or ``worker``; DIRECTORY
is the supervisor's private directory (mode 0700), holding the configuration it checked
(``config.pickle``) and the hand-off socket; FINDING, given to a child (a worker, or a
restarted sequencer process) started after the sequencer process confirmed the database corrupt,
is that confirmation: a worker takes it before it opens its port, so its health is NOT_SERVING
from its first answer; a restarted sequencer process before it takes a submission, so its
``policy_ledger_storage_corrupt`` shows 1 and a corruption error answers STORAGE_CORRUPT at once,
not after its own writes confirm again. A child is
started with exec, never forked from the supervisor (gRPC and fork do not mix), asks the kernel
to SIGKILL it when the supervisor dies (``PR_SET_PDEATHSIG``, so killing the supervisor with
SIGKILL leaves no orphan), and prints one line on stdout once it is ready: ``ready
METRICS_PORT`` (0: no metrics); a worker then prints ``connected 0`` or ``connected 1`` whenever
it loses or regains the sequencer, and the sequencer process prints ``corrupt FINDING`` once its
integrity watch confirmed the database corrupt (``ledger.storage.integrity``). The supervisor
writes that line on every running worker's stdin (a child started later gets FINDING as its
argument): the workers serve health, and a confirmation by the sequencer's writes must turn
every one of them NOT_SERVING, not only the one whose hand-off it refused. The supervisor stops
a child by closing its stdin (SIGTERM and SIGINT are ignored: they reach the whole process group
at once, and the drain has an order): a worker stops taking calls and finishes the ones under
way; the sequencer commits what it holds.

* The *sequencer process*: :func:`ledger.rpc.server.start_sequencer` (the log's single writer),
  the hand-off server on the Unix socket, the witness submitter, the enrolment port (which
  submits through the sequencer directly), and the server extensions installed on a gRPC server
  that is never started: what they hook into the sequencer's transactions (the payments'
  erasure hook) and their own single listeners (the payments' gateway notifications) live here.
* A *worker*: :func:`ledger.rpc.server.build_serving_side` around a
  :class:`ledger.handoff.client.SequencerClient`, on the listen port shared with the other
  workers (``SO_REUSEPORT``). Its health is NOT_SERVING while the sequencer is unreachable
  (submissions answer UNAVAILABLE then; reads go on from the database), and for good once the
  database is confirmed corrupt, by its own reads or by the sequencer process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import grpc
from grpc_health.v1 import health_pb2

from ledger import tracing
from ledger.clock import SystemClock
from ledger.config import ServerConfig, load_signer, load_tls_files
from ledger.handoff.client import SequencerClient
from ledger.handoff.server import HandoffServer
from ledger.identity.erasure import ErasureHooks
from ledger.metrics import LedgerMetrics, configure_logging
from ledger.rpc.authorization import AuthorizationTable, check_signer, ledger_rules
from ledger.rpc.enrolment_port import start_enrolment_port
from ledger.rpc.server import (
    ServerContext,
    add_port,
    build_serving_side,
    install_extensions,
    observing_interceptors,
    prepare_sequencer_side,
    report_corruption,
    run_stop_hooks,
    start_read_pools,
    start_sequencer,
    start_wal_checkpointer,
    start_witnessing,
    watch_integrity,
)
from ledger.service import KeyCache, Ledger
from ledger.storage.db import create_ledger_engine
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.storage.integrity import IntegrityWatch
from ledger.storage.key_store import KeyStore
from ledger.storage.read_routing import open_standby

__all__ = ["CONFIG_FILE", "CONNECTED_LINE", "CORRUPT_LINE", "READY_LINE", "SOCKET_FILE", "main"]

log = logging.getLogger("ledger.rpc.children")  # not __main__ (run with -m)

CONFIG_FILE = "config.pickle"
"""The checked :class:`~ledger.config.ServerConfig` the supervisor writes for its children."""
SOCKET_FILE = "sequencer.sock"
"""The hand-off socket in the supervisor's private directory."""
READY_LINE = "ready "
"""What a child prints on stdout once ready, followed by its metrics port (0: none)."""
CONNECTED_LINE = "connected "
"""What a worker prints on stdout when it gains (1) or loses (0) the sequencer."""
CORRUPT_LINE = "corrupt "
"""Followed by the finding (one line): what the sequencer process prints on stdout once it
confirmed the database corrupt, and what the supervisor writes on each worker's stdin then."""
SEQUENCER_PROCESS = "sequencer process"
"""Who confirmed a corruption a worker is told of (its log line names it)."""
EARLIER_SEQUENCER_PROCESS = "sequencer process before this one's restart"
"""Who confirmed a corruption a restarted sequencer process is told of (its log line)."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (even by SIGKILL); exit now
    if the parent is already gone (it died before the request was made)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


def _ready(metrics: LedgerMetrics | None) -> None:
    port = metrics.endpoint.port if metrics is not None and metrics.endpoint is not None else 0
    print(f"{READY_LINE}{port}", flush=True)


def _child_metrics(config: ServerConfig) -> LedgerMetrics | None:
    """A child's own metrics, on a loopback port the supervisor scrapes (None: no metrics)."""
    if config.metrics_port is None:
        return None
    metrics = LedgerMetrics()
    metrics.serve("127.0.0.1", 0)
    return metrics


async def _until_told_to_stop(told_corrupt: Callable[[str], object] | None = None) -> None:
    """Return when the supervisor closes this process's stdin (or dies); meanwhile pass what it
    writes there to ``told_corrupt`` (:func:`read_supervisor`).

    SIGINT and SIGTERM are ignored: Ctrl-C in a terminal, ``timeout`` or systemd signal the
    whole process group at once, and the children must not stop before the supervisor drains
    them in order (the workers first, then the sequencer)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _ignored, signum)
    await read_supervisor(sys.stdin.buffer, told_corrupt)


async def read_supervisor(
    stream: BinaryIO, told_corrupt: Callable[[str], object] | None = None
) -> None:
    """Read the supervisor's lines on ``stream`` until it ends: each ``corrupt FINDING`` goes
    to ``told_corrupt`` (on the loop), anything else is logged and ignored."""
    while line := await asyncio.to_thread(stream.readline):
        text = line.decode("utf-8", "replace").rstrip("\n")
        if text.startswith(CORRUPT_LINE) and told_corrupt is not None:
            told_corrupt(text[len(CORRUPT_LINE) :])
        else:
            log.warning("the supervisor wrote %r: not understood, ignored", text)


def tell_supervisor_of_corruption(integrity: IntegrityWatch) -> None:
    """Print ``corrupt FINDING`` once ``integrity`` confirms the database corrupt (now, if it
    already has), for the supervisor to tell every worker. Called once the ready line is out
    (the supervisor's first); a line printed twice in a race is harmless (the supervisor
    relays the first, a worker takes it once)."""
    loop = asyncio.get_running_loop()

    def corrupt(finding: str) -> None:  # in the thread that ran the check
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is stopping
            loop.call_soon_threadsafe(_print_corrupt, finding)

    integrity.listeners.append(corrupt)
    if integrity.finding is not None:
        _print_corrupt(integrity.finding)


def _print_corrupt(finding: str) -> None:
    print(f"{CORRUPT_LINE}{' '.join(finding.split()) or 'corrupt'}", flush=True)


def _report_connected(connected: bool) -> None:
    """Tell the supervisor whether this worker reaches the sequencer (it announces a restarted
    sequencer once every worker is connected again)."""
    print(f"{CONNECTED_LINE}{int(connected)}", flush=True)


def _ignored(signum: int) -> None:
    log.info("signal %d ignored: the supervisor stops this process", signum)


async def run_sequencer(
    config: ServerConfig, directory: Path, confirmed: str | None = None
) -> None:
    """The sequencer process: start, say ready, serve hand-offs until SIGTERM, commit, stop.
    ``confirmed``: the finding of an earlier sequencer process (this one is a restart) that
    confirmed the database corrupt; taken before anything is served."""
    clock = SystemClock()
    prepared = prepare_sequencer_side(config)  # each process exports its own spans
    origin = prepared.origin
    metrics = _child_metrics(config)
    engine = create_ledger_engine(config.database_url, auto_checkpoint=False)
    # Its submissions answer STORAGE_CORRUPT once a check confirms it; health is the workers',
    # told through the supervisor (tell_supervisor_of_corruption).
    integrity = watch_integrity(engine, metrics)
    if confirmed is not None:
        # A restart into the same file: the confirmation holds until serve restarts.
        integrity.confirmed_elsewhere(confirmed, EARLIER_SEQUENCER_PROCESS)
    erasure_hooks = ErasureHooks()
    sequencer = await start_sequencer(
        config,
        clock,
        engine,
        signer=prepared.signer,
        origin=origin,
        erasure_hooks=erasure_hooks,
        metrics=metrics,
    )
    wal_checkpointer = start_wal_checkpointer(engine, sequencer, metrics)
    ledger = Ledger(KeyCache(KeyStore(engine)), sequencer, clock, signer_check=check_signer)
    # The extensions' hooks into the sequencer's transactions, and their own listeners: on a
    # gRPC server that never starts (the workers serve their RPCs).
    extensions = ServerContext(
        server=grpc.aio.server(),
        engine=engine,
        ledger=ledger,
        clock=clock,
        loop=asyncio.get_running_loop(),
        authorization=AuthorizationTable(ledger_rules()),
        metrics=metrics.registry if metrics is not None else None,
        erasure_hooks=erasure_hooks,
    )
    install_extensions(extensions)
    witnessing = start_witnessing(prepared.witnesses, sequencer, engine, clock, metrics)
    handoff = HandoffServer(sequencer, directory / SOCKET_FILE)
    await handoff.start()
    enrolment = await start_enrolment_port(
        config,
        prepared.enrolment_material,
        ledger,
        EnrolmentStore(engine),
        clock,
        observing=observing_interceptors(metrics, config),
    )
    log.info("sequencer process of %s ready (origin %s)", config.database_url, origin)
    _ready(metrics)
    tell_supervisor_of_corruption(integrity)
    await _until_told_to_stop()
    if enrolment is not None:
        await enrolment.stop(config.grace_seconds)
    await handoff.stop()
    await run_stop_hooks(extensions.on_stop)  # before the sequencer: they may still append
    await sequencer.stop()  # commits what it holds
    if witnessing is not None:
        await witnessing.stop()
    if wal_checkpointer is not None:
        await asyncio.to_thread(wal_checkpointer.stop)  # with a final checkpoint
    if metrics is not None:
        await asyncio.to_thread(metrics.stop)
    engine.dispose()
    prepared.read_pool.shutdown(wait=False)
    prepared.reads.shutdown()
    log.info("sequencer process stopped")


async def run_worker(
    config: ServerConfig, directory: Path, name: str, confirmed: str | None = None
) -> None:
    """A worker: connect to the sequencer, serve every RPC on the shared port until SIGTERM.
    ``confirmed``: the sequencer process's finding, when it confirmed the database corrupt
    before this worker started (health is NOT_SERVING before the port opens)."""
    clock = SystemClock()
    tls = load_tls_files(config)
    tracing.setup(config.trace_otlp_endpoint)  # each process exports its own spans
    read_pool, reads = start_read_pools()
    signer = load_signer(config.log_key_path)
    standby = (
        open_standby(config.read_database_url, config.database_url)
        if config.read_database_url
        else None
    )
    metrics = _child_metrics(config)
    # No checkpoint in this worker's commits (access records, saga writes): the sequencer
    # process's checkpointer copies the one WAL they all write to (ledger.storage.wal).
    engine = create_ledger_engine(config.database_url, auto_checkpoint=False)
    integrity = watch_integrity(engine, metrics)
    if confirmed is not None:
        integrity.confirmed_elsewhere(confirmed, SEQUENCER_PROCESS)
    client = SequencerClient(directory / SOCKET_FILE)
    await client.start(timeout=config.grace_seconds + 60)
    side = await build_serving_side(
        config,
        clock,
        engine,
        standby=standby,
        signer=signer,
        sequencer=client,
        reads=reads,
        metrics=metrics,
        erasure_hooks=ErasureHooks(),  # erasures run in the sequencer process's transactions
        reuse_port=True,
    )
    client.keys_listeners.append(side.key_cache.forget)
    await report_corruption(integrity, side)  # NOT_SERVING now if told at start
    # Callers see whether this worker can take submissions: NOT_SERVING while the sequencer is
    # unreachable (they answer UNAVAILABLE then; reads still work), and for good once the
    # database is confirmed corrupt, by its reads or by the sequencer process's writes (the
    # supervisor's line on stdin): a reconnection does not undo that.
    health_updates: set[asyncio.Task[None]] = set()

    def sequencer_reachable(connected: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if connected and not integrity.corrupt
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *side.services):
            task = asyncio.ensure_future(side.health.set(service, status))
            health_updates.add(task)
            task.add_done_callback(health_updates.discard)

    client.connection_listeners.append(sequencer_reachable)
    client.connection_listeners.append(_report_connected)
    port = add_port(side.server, config.listen, tls)
    await side.server.start()
    log.info("worker %s serving on port %d", name, port)
    _ready(metrics)
    await _until_told_to_stop(
        lambda finding: integrity.confirmed_elsewhere(finding, SEQUENCER_PROCESS)
    )
    client.connection_listeners.remove(sequencer_reachable)
    for service in ("", *side.services):
        await side.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    side.watches.close()
    await side.server.stop(config.grace_seconds)
    await run_stop_hooks(side.on_stop)
    await client.stop()
    if metrics is not None:
        await asyncio.to_thread(metrics.stop)
    engine.dispose()
    if standby is not None:
        standby.dispose()
    read_pool.shutdown(wait=False)
    reads.shutdown()
    log.info("worker %s stopped", name)


def main(argv: list[str]) -> int:
    """``ROLE NAME DIRECTORY SUPERVISOR_PID [FINDING]`` (see the module doc)."""
    role, name, directory_text, parent_text, *confirmed = argv
    if len(confirmed) > 1:
        raise ValueError(f"at most 5 arguments: {len(argv)} > 5")
    # From the start: a Ctrl-C meant for the supervisor must not kill a child half started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(int(parent_text))
    directory = Path(directory_text)
    with (directory / CONFIG_FILE).open("rb") as handle:
        config = pickle.load(handle)  # noqa: S301 (the supervisor's, in its 0700 directory)
    if not isinstance(config, ServerConfig):
        raise TypeError(f"{directory / CONFIG_FILE} does not hold a ServerConfig")
    configure_logging(config.log_format)
    finding = confirmed[0] if confirmed else None
    if role == "sequencer":
        asyncio.run(run_sequencer(config, directory, finding))
    elif role == "worker":
        asyncio.run(run_worker(config, directory, name, finding))
    else:
        raise ValueError(f"unknown process role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
