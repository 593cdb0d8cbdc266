"""Real processes for the durability tests: `policy-ledger serve` and a test-owned PostgreSQL.

:func:`start_server_process` is the one place a test starts a server subprocess (the flags that
make a caller's identity, such as mTLS certificates, are added here and in
:meth:`ServerProcess.channel`). Readiness is waited for on events, never on sleeps: the server's
"serving on port" line, then a health check with ``wait_for_ready``; PostgreSQL's "ready to
accept connections" log line.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.ports import free_port

__all__ = [
    "PostgresInstance",
    "ServerProcess",
    "exited_within",
    "postgres_binaries",
    "postgres_program",
    "start_server_process",
]

READY_SECONDS_MAX = 120.0
"""How long a started process may take to answer (a bound against a hang, not a speed check)."""
_SERVING_LINE = "policy-ledger serving on port "
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
"""Where util-linux's setpriv exists, a server is SIGKILLed when the test process dies (a
timeout, an interrupted run), so no server outlives its test."""


@dataclass
class ServerProcess:
    """A `policy-ledger serve` subprocess and the port it listens on."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path
    pids: dict[str, int] = field(default_factory=dict)
    """``serve --workers N``: the pid of each child (``sequencer``, ``worker-1``, ...), kept
    up to date by :meth:`wait_for_restart`."""
    announced: list[str] = field(default_factory=list)
    """``serve --workers N``: the lines printed between the serving line and the processes line
    (metrics port, verification page port)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, role: str = "operator", name: str = "test") -> grpc.Channel:
        """A channel to this server as the caller ``<role>/<name>`` (close it after use), over
        mTLS with the test session's certificates."""
        from tests.conftest import session_pki

        credentials = session_pki().credentials(role, name)
        return grpc.secure_channel(self.address, credentials.channel_credentials())

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait: the server commits what is queued and stops cleanly."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=READY_SECONDS_MAX)

    def wait_for_restarts(self, *names: str) -> None:
        """``serve --workers N``: read stdout until the supervisor said it restarted each of
        ``names`` (the sequencer: once every worker reaches it again); note their new pids."""
        assert self.process.stdout is not None
        waiting = set(names)
        for line in self.process.stdout:
            name, marker, pid = line.removeprefix("process ").partition(" restarted, pid ")
            if line.startswith("process ") and marker and name in waiting:
                self.pids[name] = int(pid)
                waiting.discard(name)
                if not waiting:
                    return
        raise RuntimeError(f"the server ended before restarting {waiting}:\n{self.log_tail()}")

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]


def start_server_process(
    database_url: str,
    log_key_file: Path,
    workdir: Path,
    *,
    wrapper: Sequence[str] = (),
    extra_arguments: Sequence[str] = (),
    workers: int = 0,
    listen: str = "127.0.0.1:0",
) -> ServerProcess:
    """Start `policy-ledger serve` on 127.0.0.1 (a port it picks); return once it is healthy.

    ``wrapper`` runs the server under another program (``fiu-run -x``). The server's log goes
    to a file in ``workdir``. ``workers``: ``serve --workers`` (0, the default here, is the one
    process the tests were written for; tests/e2e/test_workers.py and the crash test's workers
    variant pass more).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=workdir)
    os.close(descriptor)  # reopened below for the server; kept open, one leaked per server
    log_path = Path(name)
    command = [
        *_DIE_WITH_PARENT,
        *wrapper,
        sys.executable,
        "-m",
        "policy_ledger.cli",
        "serve",
        "--database",
        database_url,
        "--listen",
        listen,
        "--log-key-file",
        str(log_key_file),
        "--workers",
        str(workers),
        *_tls_arguments(),
        *_operator_arguments(extra_arguments),
        *extra_arguments,
    ]
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=workdir,
        )
    handle = ServerProcess(process, 0, log_path)
    handle.port = _serving_port(process, handle)
    if workers:
        _read_processes(process, handle)
    with handle.channel("auditor", "readiness") as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=READY_SECONDS_MAX
        )
    return handle


def _tls_arguments() -> list[str]:
    """The server's side of the test session's mTLS (every server process serves mTLS)."""
    from tests.conftest import session_pki

    pki = session_pki()
    directory = pki.directory
    return [
        "--tls-cert",
        str(directory / "server.pem"),
        "--tls-key",
        str(directory / "server.key"),
        "--client-ca",
        str(pki.ca_path),
    ]


def _operator_arguments(extra_arguments: Sequence[str]) -> list[str]:
    """The operator key an empty log's genesis entry names (the test session's operator)."""
    if "--operator-verifier" in extra_arguments:
        return []
    from ledger.signing import format_verifier_key
    from tests.conftest import OPERATOR_SIGNER

    return ["--operator-verifier", format_verifier_key(OPERATOR_SIGNER)]


def _serving_port(process: subprocess.Popen[str], handle: ServerProcess) -> int:
    """Read the server's stdout until it says which port it serves on (or it exits)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(_SERVING_LINE):
            return int(line[len(_SERVING_LINE) :].split(",")[0])
    process.wait()
    raise RuntimeError(
        f"the server exited with {process.returncode} before serving:\n{handle.log_tail()}"
    )


def _read_processes(process: subprocess.Popen[str], handle: ServerProcess) -> None:
    """Read the supervisor's stdout up to its ``processes:`` line (the children's pids)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("processes: "):
            for part in line[len("processes: ") :].strip().split(", "):
                name, _, pid = part.split(" ")
                handle.pids[name] = int(pid)
            return
        handle.announced.append(line.rstrip("\n"))
    process.wait()
    raise RuntimeError(f"the server exited with {process.returncode}:\n{handle.log_tail()}")


def postgres_binaries() -> Path | None:
    """The folder of initdb and postgres: on the PATH, else the newest /usr/lib/postgresql."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3])
    )
    return candidates[-1].parent if candidates else None


def postgres_program(binaries: Path, program: str) -> Path | None:
    """``program`` of the PostgreSQL installation of ``binaries``: in that folder, else in the
    folder the ``initdb`` found there links to (a PATH of symlinks to some of the programs)."""
    for folder in (binaries, (binaries / "initdb").resolve().parent):
        if (folder / program).is_file():
            return folder / program
    return None


class PostgresInstance:
    """A PostgreSQL cluster of the test's own: initdb into a temp dir, its own port and socket.

    Never the machine's shared server: this one is killed with SIGKILL (its whole process
    group, as in a power cut) and restarted. PostgreSQL refuses to run as root, so as root the
    cluster belongs to the ``postgres`` user.
    """

    def __init__(
        self,
        binaries: Path,
        *,
        settings: Sequence[str] = (),
        standby_of: PostgresInstance | None = None,
    ) -> None:
        """``settings``: ``name=value`` server settings (``-c``). ``standby_of``: instead of
        initdb, a ``pg_basebackup -R`` of that (started) instance: this one then starts as its
        streaming-replication hot standby."""
        self._binaries = binaries
        self._user = "postgres" if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="policy-ledger-pg-"))
        if self._user:
            shutil.chown(self.directory, self._user)
        self.port = free_port()
        self._settings = tuple(settings)
        self._ready_marker = "ready to accept connections"
        self._process: subprocess.Popen[str] | None = None
        if standby_of is None:
            self._run(
                "initdb", "-D", str(self.directory / "data"), "-U", "postgres", "--auth=trust"
            )
        else:
            self._run(
                "pg_basebackup",
                *("-D", str(self.directory / "data")),
                *("-h", "127.0.0.1", "-p", str(standby_of.port), "-U", "postgres"),
                *("-X", "stream", "-R", "--checkpoint=fast"),
            )
            self._ready_marker = "ready to accept read-only connections"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server; return once it logs that it accepts connections."""
        self._process = subprocess.Popen(
            [
                str(self._binaries / "postgres"),
                "-D",
                str(self.directory / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "logging_collector=off",
                *(argument for setting in self._settings for argument in ("-c", setting)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            user=self._user,
            start_new_session=True,
        )
        assert self._process.stderr is not None
        seen: list[str] = []
        if not _wait_for_line(self._process.stderr, self._ready_marker, seen):
            raise RuntimeError(
                f"PostgreSQL did not start (exit {self._process.wait()}): {''.join(seen[-5:])}"
            )
        # Keep draining its log so a full pipe never blocks the server.
        _drain_in_background(self._process.stderr)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once; return once all of them are gone
        (a backend still attached to the old shared memory makes the next start refuse)."""
        if self._process is not None:
            group = self._process.pid
            segment = _shared_memory_id(self.directory / "data")
            with contextlib.suppress(ProcessLookupError):  # it already ended (a failed start)
                os.killpg(group, signal.SIGKILL)
            self._process.wait()
            # Read the group after the kill, not before: under load the postmaster forks
            # backends all the time, and one forked after a reading made before the kill (killed
            # with the rest, still exiting) kept the old shared memory attached: the next start
            # refused ("pre-existing shared memory block is still in use"). Nothing can fork
            # into the group once the kill is delivered; read it until no one is left.
            while members := _process_group(group):
                _wait_until_exited(members)
            if segment is not None:
                _wait_until_detached(segment)
            self._process = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *arguments: str) -> None:
        path = postgres_program(self._binaries, program)
        if path is None:
            raise RuntimeError(f"no {program} beside {self._binaries / 'initdb'}")
        subprocess.run(
            [str(path), *arguments],
            check=True,
            capture_output=True,
            user=self._user,
            cwd=self.directory,
        )


def _process_group(group: int) -> list[int]:
    """The pids of process group ``group`` that have not exited (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Field 5 of /proc/<pid>/stat is the process group; the name (2) may hold spaces.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                # Field 3 is the state: a zombie (Z) has exited and holds no memory.
                if int(fields[2]) == group and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def _shared_memory_id(data: Path) -> int | None:
    """The System V shared memory segment of the cluster in ``data``, from ``postmaster.pid``
    (its 7th line: key and id), or None when there is none."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        _key, segment = lines[6].split()
        return int(segment)
    except (OSError, IndexError, ValueError):
        return None


_DETACH_SECONDS_MAX = 60


def _wait_until_detached(segment: int) -> None:
    """Block until no process is attached to shared memory segment ``segment`` (the next start
    refuses one still in use). Its processes have exited; the kernel detaches a process as it
    exits, so this is a short wait on that event (read from /proc/sysvipc/shm: ``nattch``)."""
    deadline = time.monotonic() + _DETACH_SECONDS_MAX
    while (attached := _attachments(segment)) is not None and attached[0] > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"shared memory segment {segment} still has {attached[0]} attachment(s) "
                f"{_DETACH_SECONDS_MAX} s after its cluster was killed (last by pid {attached[1]})"
            )
        time.sleep(0.01)


def _attachments(segment: int) -> tuple[int, int] | None:
    """(nattch, lpid) of shared memory segment ``segment``; None once it is gone."""
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1]) == segment:
            return int(fields[6]), int(fields[5])
    return None


def _wait_until_exited(pids: list[int]) -> None:
    """Block until every process of ``pids`` has exited (a pidfd becomes readable on exit)."""
    for pid in pids:
        exited_within(pid, 60)


def exited_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has exited, or does within ``seconds`` (a bound against a hang):
    its pidfd becomes readable on exit. ``poll``, not ``select``: a long test run holds more
    than ``FD_SETSIZE`` (1,024) descriptors, and select() refuses a descriptor above it."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        waiting = select.poll()
        waiting.register(descriptor, select.POLLIN)
        return bool(waiting.poll(seconds * 1000))
    finally:
        os.close(descriptor)


def _wait_for_line(stream: IO[str], marker: str, seen: list[str]) -> bool:
    for line in stream:
        seen.append(line)
        if marker in line:
            return True
    return False


def _drain_in_background(stream: IO[str]) -> None:
    import threading

    threading.Thread(target=stream.read, daemon=True, name="postgres-log").start()


@contextlib.contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A started test-owned PostgreSQL, removed afterwards."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("no initdb on the PATH or under /usr/lib/postgresql/*/bin")
    instance = PostgresInstance(binaries)
    try:
        instance.start()
        yield instance
    finally:
        instance.remove()
