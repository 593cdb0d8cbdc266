"""What bench/__main__.py lends the benchmarks in their own modules (bench/households.py,
bench/renewals.py): its printer, percentiles, credentials and ceilings, and a server launcher
that takes ``--workers`` and any database URL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from ledger import limits
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key

__all__ = ["BenchKit", "Line", "Onboard", "cpu_seconds", "serve", "start_server"]


class Line(Protocol):
    """Prints one figure in the bench's columns: its name, its value and an optional note."""

    def __call__(self, name: str, value: str, note: str = "") -> None: ...


class Onboard(Protocol):
    """Registers ``public_key`` as ``principal``'s in ``role`` (and licenses an insurer) through
    the server at ``address``, as operator events; the receipts are checked against the log key
    ``log_signer`` (default: the bench's insurer, in the insurer role)."""

    def __call__(
        self,
        address: str,
        log_signer: Ed25519Signer,
        public_key: bytes,
        principal: str = ...,
        role: SignerRole = ...,
    ) -> None: ...


@dataclass(frozen=True)
class BenchKit:
    """bench/__main__.py's helpers (that module is ``__main__`` when run, so it is passed in
    rather than imported)."""

    line: Line
    percentiles: Callable[[list[float]], tuple[float, float]]
    """p50 and p99 of the samples (seconds), in milliseconds."""
    tls_flags: Callable[[], list[str]]
    """The ``serve`` flags for mTLS with the run's certificates."""
    channel_as: Callable[[str, str], grpc.Channel]
    """An mTLS channel to an address presenting an identity's certificate (``role-name``)."""
    onboard: Onboard
    operator_verifier: str
    """The verifier key of the operator every bench server names."""
    echo_rate_at: Callable[[int], tuple[int, float]]
    """(calls, seconds) of empty unary calls over mTLS at that many callers."""


def start_server(
    folder: Path,
    signer: Ed25519Signer,
    database_url: str,
    arguments: Sequence[str],
    *,
    environment: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """``policy-ledger serve`` on ``database_url`` with more ``arguments`` (TLS, workers...),
    its output in ``folder/server.log``; (address, process) once it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.key").write_text(format_signer_key(signer) + "\n")
    port_file = folder / "port"
    port_file.unlink(missing_ok=True)
    command = [
        *(sys.executable, "-m", "policy_ledger.cli", "serve", "--database", database_url),
        *("--listen", "127.0.0.1:0", "--log-key-file", str(folder / "log.key")),
        *("--port-file", str(port_file), *arguments),
    ]
    with (folder / "server.log").open("w") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(environment or {})}
        )
    deadline = time.monotonic() + limits.process_ready_seconds_max
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"server did not start; see {folder / 'server.log'}")
        time.sleep(0.05)
    return f"127.0.0.1:{int(port_file.read_text())}", process


@contextlib.contextmanager
def serve(
    kit: BenchKit,
    folder: Path,
    signer: Ed25519Signer,
    database_url: str,
    *,
    workers: int,
    environment: dict[str, str] | None = None,
    operator: bool = True,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``policy-ledger serve --workers N`` on ``database_url``; yields (address, process) and
    stops it (SIGTERM) afterwards. Its log is ``folder/server.log``. ``operator``: name the
    bench's operator key (a fresh database; a bulk-loaded one has its own genesis)."""
    arguments = [
        *kit.tls_flags(),
        *(("--operator-verifier", kit.operator_verifier) if operator else ()),
        *("--workers", str(workers)),
    ]
    address, process = start_server(
        folder, signer, database_url, arguments, environment=environment
    )
    try:
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process and its live descendants (``serve
    --workers N``: the supervisor, the sequencer and the workers; Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(child) for child in task.read_text().split())
    return own + sum(cpu_seconds(child) for child in children)
