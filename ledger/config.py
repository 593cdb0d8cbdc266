"""Server configuration: embedded defaults (SQLite under ./var), overridable by environment/flags.

Environment variables (flags of ``policy-ledger serve`` take precedence):
  POLICY_LEDGER_DATABASE_URL   SQLAlchemy URL; default sqlite file var/ledger.db
  POLICY_LEDGER_LISTEN         host:port to listen on; default 127.0.0.1:50051
  POLICY_LEDGER_LOG_KEY        file holding the log's signer key (see ``policy-ledger keygen``)
  POLICY_LEDGER_ORIGIN         checkpoint origin; default: the log key's name
  POLICY_LEDGER_TLS_CERT       the server's certificate chain (PEM)
  POLICY_LEDGER_TLS_KEY        the server's private key (PEM)
  POLICY_LEDGER_CLIENT_CA      the CA whose client certificates are accepted (PEM)
  POLICY_LEDGER_TRUST_DOMAIN   the SPIFFE trust domain of callers; default policy-ledger.local
  POLICY_LEDGER_INSECURE_PLAINTEXT  "1": no TLS (development only; see docs/security.md)
  POLICY_LEDGER_OPERATOR_VERIFIER  the operator's verifier key: on an empty log, the genesis
                               entry registers it; on a non-empty one it must be an operator key
  POLICY_LEDGER_METRICS_PORT   serve Prometheus metrics on this port (the --listen host); unset:
                               no metrics endpoint
  POLICY_LEDGER_READ_DATABASE_URL  a PostgreSQL hot standby of the database: reads may be
                               answered from it (docs/operations.md, "Read standby")
  POLICY_LEDGER_LOG_FORMAT     text (default) or json (one JSON object per line, and one line
                               per call with its request id and caller)
  OTEL_EXPORTER_OTLP_ENDPOINT  send traces to this OTLP/HTTP collector (OpenTelemetry's own
                               variable; OTEL_SERVICE_NAME names the service, default
                               policy-ledger); unset: no tracing (docs/operations.md, "Tracing")
  POLICY_LEDGER_WORKERS        worker processes of ``serve`` (default: the number of cores; 0:
                               one process does everything, docs/operations.md "Workers")
  POLICY_LEDGER_DATABASE_POOL_SIZE      PostgreSQL connections one ``serve`` keeps open, all its
                               processes together (default 16; divided over them)
  POLICY_LEDGER_DATABASE_POOL_OVERFLOW  connections it may open beyond those under load (default
                               16; divided the same way; docs/operations.md "Database connections")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, check
from ledger.pki import DEFAULT_TRUST_DOMAIN
from ledger.sequencer import SequencerOptions
from ledger.signing import Ed25519Signer, parse_signer_key, parse_verifier_key
from ledger.storage.db import PoolShare, sqlite_url

__all__ = [
    "DEFAULT_DATA_DIR",
    "LOG_FORMATS",
    "ServerConfig",
    "TlsFiles",
    "check_workers",
    "default_workers",
    "divide_database_pool",
    "load_signer",
    "load_tls_files",
]

DEFAULT_DATA_DIR = Path("var")

LOG_FORMATS = ("text", "json")
"""``serve --log-format``: text lines for a terminal, or one JSON object per line."""


def default_workers() -> int:
    """The number of cores (issue 13: one worker per core), within ``limits.workers_max``."""
    return min(os.cpu_count() or 1, limits.workers_max)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start."""

    database_url: str = sqlite_url(DEFAULT_DATA_DIR / "ledger.db")
    listen: str = "127.0.0.1:50051"
    log_key_path: Path = DEFAULT_DATA_DIR / "log.key"
    origin: str = ""
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    client_ca_path: Path | None = None
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    insecure_plaintext: bool = False
    operator_verifier: str = ""
    migrate: bool = True
    grace_seconds: float = 5.0
    sequencer: SequencerOptions = field(default_factory=SequencerOptions)
    witnesses: tuple[str, ...] = ()
    """``URL=VERIFIERKEY`` of each witness to submit checkpoints to (``serve --witness``)."""
    connection_idle_ms: int = limits.connection_idle_ms_max
    """A connection with no call for this long is closed (tests shorten it)."""
    caller_calls_in_flight_max: int = limits.caller_calls_in_flight_max
    """Calls one caller may have under way (tests lower it)."""
    enrol_listen: str = ""
    """host:port of the enrolment port (``serve --enrol-listen``); empty: none is opened."""
    client_ca_key_path: Path | None = None
    """The client CA's private key, which signs enrolled parties' certificates."""
    operator_key_path: Path | None = None
    """The operator's signer key, which signs enrolled parties' KeyRegistered events."""
    metrics_port: int | None = None
    """Port of the Prometheus metrics endpoint, on the host of ``listen`` (0 picks one); None:
    no endpoint (``serve --metrics-port``)."""
    log_format: str = "text"
    """``text`` or ``json``; json also logs one line per call (``serve --log-format``)."""
    verify_page_port: int | None = None
    """Port of the verification page's read-only HTTP listener, on the host of ``listen`` (0
    picks one); None: no page (``serve --verify-page-port``, docs/verify-page.md)."""
    read_database_url: str = ""
    """A streaming-replication hot standby of ``database_url`` that reads may be routed to
    (``serve --read-database``); empty: every read goes to the primary."""
    read_lag_entries_max: int = limits.standby_lag_entries_max
    """Entries the standby may lag before reads bypass it (``serve --read-lag-max``)."""
    trace_otlp_endpoint: str = ""
    """The OTLP/HTTP collector spans are sent to (``serve --trace-otlp-endpoint``,
    :mod:`ledger.tracing`); empty: no tracing."""
    workers: int = field(default_factory=default_workers)
    """Admission/read worker processes beside one sequencer process (``serve --workers``);
    0: one process does everything (what :func:`ledger.rpc.server.start_server` always runs)."""
    database_pool_size: int | None = None
    """PostgreSQL connections this ``serve`` keeps open, all its processes together
    (``--database-pool-size``); None: ``limits.database_pool_size_default``, raised to
    ``limits.database_pool_process_size_min`` per process when there are many workers."""
    database_pool_overflow: int | None = None
    """Connections it may open beyond those under load, all processes together
    (``--database-pool-overflow``); None: ``limits.database_pool_overflow_default``, raised
    the same way (``limits.database_pool_process_overflow_min`` per process)."""

    @property
    def processes(self) -> int:
        """The processes of this ``serve`` that open the database: the one process
        (``--workers 0``), or the sequencer process and every worker."""
        return 1 if self.workers == 0 else self.workers + 1

    def database_pool_shares(self) -> tuple[PoolShare, ...]:
        """Each process's PostgreSQL pool: the sequencer process's first, then each worker's
        (``--workers 0``: the one process's). They sum to the configured totals (see
        :func:`divide_database_pool`); INVALID_ARGUMENT when a total is too small to give each
        process its minimum."""
        return divide_database_pool(
            self.database_pool_size, self.database_pool_overflow, self.processes
        )

    @classmethod
    def from_environment(cls, environment: dict[str, str] | None = None) -> ServerConfig:
        """Defaults overridden by POLICY_LEDGER_* variables."""
        env = dict(os.environ if environment is None else environment)
        defaults = cls()
        return cls(
            database_url=env.get("POLICY_LEDGER_DATABASE_URL", defaults.database_url),
            listen=env.get("POLICY_LEDGER_LISTEN", defaults.listen),
            log_key_path=Path(env.get("POLICY_LEDGER_LOG_KEY", str(defaults.log_key_path))),
            origin=env.get("POLICY_LEDGER_ORIGIN", defaults.origin),
            tls_cert_path=_optional_path(env.get("POLICY_LEDGER_TLS_CERT")),
            tls_key_path=_optional_path(env.get("POLICY_LEDGER_TLS_KEY")),
            client_ca_path=_optional_path(env.get("POLICY_LEDGER_CLIENT_CA")),
            trust_domain=env.get("POLICY_LEDGER_TRUST_DOMAIN", defaults.trust_domain),
            insecure_plaintext=env.get("POLICY_LEDGER_INSECURE_PLAINTEXT", "") == "1",
            operator_verifier=env.get(
                "POLICY_LEDGER_OPERATOR_VERIFIER", defaults.operator_verifier
            ),
            metrics_port=_optional_port(env.get("POLICY_LEDGER_METRICS_PORT")),
            log_format=env.get("POLICY_LEDGER_LOG_FORMAT", defaults.log_format),
            read_database_url=env.get(
                "POLICY_LEDGER_READ_DATABASE_URL", defaults.read_database_url
            ),
            trace_otlp_endpoint=env.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT", defaults.trace_otlp_endpoint
            ),
            workers=_workers(env.get("POLICY_LEDGER_WORKERS"), defaults.workers),
            database_pool_size=_pool_total(env, "POLICY_LEDGER_DATABASE_POOL_SIZE"),
            database_pool_overflow=_pool_total(env, "POLICY_LEDGER_DATABASE_POOL_OVERFLOW"),
        )


def check_workers(count: int, source: str = "--workers") -> int:
    """``count`` if it is a number of workers ``serve`` runs (0..limits.workers_max)."""
    if not 0 <= count <= limits.workers_max:
        raise InvalidArgument(
            f"{source}={count}: workers must be 0 (one process) to {limits.workers_max}",
            reason="WORKERS_INVALID",
        )
    return count


def divide_database_pool(
    size_total: int | None, overflow_total: int | None, processes: int
) -> tuple[PoolShare, ...]:
    """Divide one ``serve``'s PostgreSQL connections over its ``processes``.

    The rule (docs/operations.md, "Database connections"): every process gets the total
    divided by the number of processes, rounded down; the first process (the sequencer
    process, which holds the write transaction while reads go on) also gets what the division
    leaves, so the shares sum to the totals exactly, and ``serve`` never opens more than
    ``size_total + overflow_total`` connections however many workers it runs. Each process
    needs ``limits.database_pool_process_size_min`` kept connections and
    ``limits.database_pool_process_overflow_min`` overflow ones: a configured total below
    that times ``processes`` is refused (INVALID_ARGUMENT naming the least that would do); an
    unset total (None) is its default, raised to that minimum times ``processes``.
    """
    check(processes >= 1, f"processes must be at least 1: {processes} < 1")
    size_each = _divide(
        size_total,
        limits.database_pool_size_default,
        limits.database_pool_process_size_min,
        processes,
        "--database-pool-size",
    )
    overflow_each = _divide(
        overflow_total,
        limits.database_pool_overflow_default,
        limits.database_pool_process_overflow_min,
        processes,
        "--database-pool-overflow",
    )
    return tuple(
        PoolShare(size, overflow) for size, overflow in zip(size_each, overflow_each, strict=True)
    )


def _divide(
    total: int | None, default: int, minimum: int, processes: int, option: str
) -> list[int]:
    if total is None:
        total = max(default, minimum * processes)
    elif total < minimum * processes:
        raise InvalidArgument(
            f"{option}={total} is too small for {processes} processes: each needs at least "
            f"{minimum}; set it to {minimum * processes} or more, or run fewer --workers",
            reason="DATABASE_POOL_TOO_SMALL",
            field_violations=[FieldViolation(option.removeprefix("--"), "too small")],
        )
    each, left = divmod(total, processes)
    return [each + left, *([each] * (processes - 1))]


def _pool_total(env: dict[str, str], name: str) -> int | None:
    text = env.get(name, "")
    if not text:
        return None
    if not text.isdigit():
        raise InvalidArgument(
            f"{name}={text!r}: a number of connections", reason="DATABASE_POOL_INVALID"
        )
    return int(text)


def _workers(text: str | None, default: int) -> int:
    if not text:
        return default
    if not text.isdigit():
        raise InvalidArgument(
            f"POLICY_LEDGER_WORKERS={text!r}: a number of workers (0: one process)",
            reason="WORKERS_INVALID",
        )
    return check_workers(int(text), "POLICY_LEDGER_WORKERS")


def load_signer(path: Path) -> Ed25519Signer:
    """Read the log's signer key (``PRIVATE+KEY+...``) from ``path``, with a clear error."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InvalidArgument(
            f"no log key at {path}: create one with `policy-ledger keygen --name <origin> "
            f"--out {path}`",
            reason="LOG_KEY_MISSING",
        ) from None
    if not text.startswith("PRIVATE+KEY+") and _is_verifier_key(text):
        raise InvalidArgument(
            f"{path} holds the log's public verifier key; the server signs, so it needs the "
            "private signer key (PRIVATE+KEY+...): the file keygen --out wrote, not its .pub",
            reason="LOG_KEY_IS_VERIFIER",
        )
    return parse_signer_key(text)


def _is_verifier_key(text: str) -> bool:
    try:
        parse_verifier_key(text)
    except InvalidArgument:
        return False
    return True


def check_origin(origin: str) -> None:
    """Raise InvalidArgument unless ``origin`` is a valid checkpoint origin line."""
    if not origin or len(origin) > limits.origin_chars_max or not origin.isprintable():
        raise InvalidArgument(
            "origin must be 1..256 printable characters",
            reason="ORIGIN_INVALID",
            field_violations=[FieldViolation("origin", "invalid")],
        )


def _optional_port(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise InvalidArgument(
            f"POLICY_LEDGER_METRICS_PORT={text!r}: a port number 0..65535",
            reason="METRICS_PORT_INVALID",
        )
    return int(text)


def host_of(listen: str) -> str:
    """The host part of a ``host:port`` listen address (``[::1]:50051`` gives ``::1``)."""
    host = listen.rpartition(":")[0]
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0"  # noqa: S104 (as listen says)


def _optional_path(text: str | None) -> Path | None:
    return Path(text) if text else None


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and key, and the client CA, as PEM bytes."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes


def load_tls_files(config: ServerConfig) -> TlsFiles | None:
    """The TLS material ``config`` names; None only with ``insecure_plaintext``.

    Without TLS settings and without the explicit plaintext flag the server refuses to start,
    and says what to pass: a server that silently fell back to plaintext would answer anyone.
    """
    paths = (config.tls_cert_path, config.tls_key_path, config.client_ca_path)
    if config.insecure_plaintext:
        if any(path is not None for path in paths):
            raise InvalidArgument(
                "--insecure-plaintext and TLS files are exclusive: pass one or the other",
                reason="TLS_AND_PLAINTEXT",
            )
        return None
    if config.tls_cert_path is None or config.tls_key_path is None or config.client_ca_path is None:
        raise InvalidArgument(
            "the server needs TLS: pass --tls-cert FILE --tls-key FILE --client-ca FILE "
            "(`policy-ledger pki init --out var/pki` makes development ones), or "
            "--insecure-plaintext for a development server no caller can authenticate to",
            reason="TLS_SETTINGS_MISSING",
        )
    try:
        return TlsFiles(
            config.tls_cert_path.read_bytes(),
            config.tls_key_path.read_bytes(),
            config.client_ca_path.read_bytes(),
        )
    except FileNotFoundError as error:
        raise InvalidArgument(
            f"TLS file {error.filename} not found", reason="TLS_FILE_MISSING"
        ) from None
