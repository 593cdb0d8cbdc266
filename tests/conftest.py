"""Shared fixtures: databases (SQLite always, PostgreSQL where reachable), keys, a running server.

PostgreSQL: each test that asks for ``database_url`` runs once per engine. The PostgreSQL run
creates a fresh database on the server at POLICY_LEDGER_TEST_POSTGRES_URL (default: the local
server, user postgres, trust auth) and drops it afterwards. Where no server answers, those runs
are skipped with the reason, unless POLICY_LEDGER_REQUIRE_POSTGRES=1 (CI here), which fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from clients.channel import ClientCredentials
from clients.operator import OPERATOR_ID, OperatorClient, insurer_licensed, key_registered
from clients.verify import TrustedLog
from ledger.clock import Clock
from ledger.config import ServerConfig
from ledger.dsse import sign_envelope
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id
from ledger.pki import DEFAULT_TRUST_DOMAIN, CertificateAuthority, IssuedCertificate
from ledger.rpc.server import RunningServer, start_server
from ledger.sequencer import SequencerOptions
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, Signer, format_signer_key, format_verifier_key
from ledger.storage.append import Appender, PendingEntry
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.v1 import events_pb2
from tests.builders import use_unvaulted_tokens, use_vault
from tests.clock import CLOCK

# No test depends on the machine's speed: Hypothesis's per-example deadline and its "too slow"
# health check are timing checks (a property test failed on its 200 ms deadline under a load
# average of 10), so every property test runs without them; the figures live in the bench.
settings.register_profile(
    "policy-ledger", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("policy-ledger")

POSTGRES_URL = os.environ.get(
    "POLICY_LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("POLICY_LEDGER_REQUIRE_POSTGRES") == "1"
LOG_NAME = "test.policy-ledger/log"
KEYS_VALID_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
"""Test keys are valid from here, so events dated in the past are signable (a key signs only
what happened while it was valid)."""
LICENSED_FROM = dt.date(2020, 1, 1)
_T = TypeVar("_T")
OPERATOR_SIGNER = Ed25519Signer.generate(OPERATOR_ID)
"""The operator's key of every test log (the genesis entry, leaf 0, names it)."""


def _postgres_unreachable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(error).__name__}: {error}"
    return None


_POSTGRES_REASON: list[str | None] = []


def postgres_reason() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can); checked once per session."""
    if not _POSTGRES_REASON:
        _POSTGRES_REASON.append(_postgres_unreachable_reason())
    return _POSTGRES_REASON[0]


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The maintenance URL of a reachable PostgreSQL server (or skip / fail as documented)."""
    reason = postgres_reason()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (POLICY_LEDGER_REQUIRE_POSTGRES=1)")
        pytest.skip(f"{reason}; set POLICY_LEDGER_TEST_POSTGRES_URL to run these tests")
    return POSTGRES_URL


_SPARE_DATABASES: list[str] = []
"""This process's PostgreSQL test databases that are empty again and may be handed out anew."""
_MADE_DATABASES: list[str] = []
"""Every PostgreSQL test database this process made (dropped when the session ends)."""
_LEFT_OVER_OBJECTS = text(
    "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
    " AND nspname NOT IN ('public', 'information_schema'))"
    " + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'public')"
    " + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = 'public')"
    " + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE n.nspname = 'public')"
)


def _database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _emptied(admin: Engine, admin_url: str, name: str) -> bool:
    """Make database ``name`` as empty as a new one (its public schema dropped and made anew,
    every connection to it closed); True when nothing is left in it.

    A ``DROP DATABASE`` forces a checkpoint of the whole server (a second or more here), and
    about a third of the suite's tests each used to make and drop one: emptying one instead
    takes a tenth of that. Anything that would survive (another schema, say) fails the check,
    and then the database is dropped rather than handed out again."""
    try:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        database = create_engine(_database_url(admin_url, name), isolation_level="AUTOCOMMIT")
        try:
            with database.connect() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public AUTHORIZATION pg_database_owner"))
                connection.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
                return connection.execute(_LEFT_OVER_OBJECTS).scalar_one() == 0
        finally:
            database.dispose()
    except Exception:
        return False


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, this caller's alone while the block runs.

    Afterwards its connections are closed and it is emptied (see :func:`_emptied`) for a later
    caller in this process, or dropped when that fails; the session drops the rest at its end.
    Names carry the xdist worker, so parallel workers never share one."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        if _SPARE_DATABASES:
            name = _SPARE_DATABASES.pop()
        else:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            name = f"policy_ledger_test_{worker}_{secrets.token_hex(6)}"
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            _MADE_DATABASES.append(name)
        yield _database_url(admin_url, name)
        if _emptied(admin, admin_url, name):
            _SPARE_DATABASES.append(name)
        else:
            _MADE_DATABASES.remove(name)
            _drop_database(admin, name)
    finally:
        admin.dispose()


@pytest.fixture
def fresh_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database of this test's alone (see
    :func:`postgres_database`)."""
    with postgres_database(postgres_admin_url) as url:
        yield url


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL test databases this process made."""
    if not _MADE_DATABASES:
        return
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        while _MADE_DATABASES:
            _drop_database(admin, _MADE_DATABASES.pop())
    finally:
        admin.dispose()
    _SPARE_DATABASES.clear()


DESCRIPTORS_AT_END_MAX = 512
"""A test process holding more open descriptors than this when its tests end fails the run.

Half of select()'s limit (1,024), far above what a run leaves once each server, engine, loop
and process is closed (tests/leaks.py measures it per test: POLICY_LEDGER_LEAKS=1). A worker
of a full run used to pass 1,024: each in-process server left its event loop's 3 descriptors,
each server process its log file's."""


@pytest.fixture(scope="session", autouse=True)
def _descriptors_released() -> Iterator[None]:
    """Fail the run of a process that ends holding over DESCRIPTORS_AT_END_MAX descriptors,
    saying what they are (run again with POLICY_LEDGER_LEAKS=1 to see which tests left them)."""
    yield
    from tests.leaks import descriptor_kinds, open_descriptors

    held = open_descriptors()
    if held > DESCRIPTORS_AT_END_MAX:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in descriptor_kinds().most_common(8))
        pytest.fail(
            f"this test process ends holding {held} open descriptors (more than "
            f"{DESCRIPTORS_AT_END_MAX}): a test leaks them ({kinds}); POLICY_LEDGER_LEAKS=1 "
            "with -p tests.leaks lists the tests that left them"
        )


@pytest.fixture(autouse=True)
def _token_source_per_test() -> Iterator[None]:
    """Each test starts with the builders' unvaulted tokens; its server or engine repoints them."""
    use_unvaulted_tokens()
    yield
    use_unvaulted_tokens()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ledger.db")
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """As ``database_url``, one database per module and engine: for a module whose tests each
    leave the database as they found it (refusal matrices that check nothing was written), so
    they can share one server instead of starting one per case."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path_factory.mktemp("module-db") / "ledger.db")
        return
    with postgres_database(str(request.getfixturevalue("postgres_admin_url"))) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database."""
    engine = create_ledger_engine(database_url)
    upgrade(engine)
    use_vault(engine)
    yield engine
    use_unvaulted_tokens()
    engine.dispose()


@pytest.fixture(scope="session")
def log_signer() -> Ed25519Signer:
    """The test log's checkpoint signer."""
    return Ed25519Signer.generate(LOG_NAME)


@pytest.fixture(scope="session")
def insurer_signer() -> Ed25519Signer:
    """An insurer's event signer."""
    return Ed25519Signer.generate("gulf-health")


_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""Each test channel opens its own connection, as separate callers do (grpc would otherwise
share one between channels of the same process, and the server could not tell them apart)."""


class SessionPki:
    """A CA made once per test session, its server certificate, and client certificates issued
    on first use (one per ``role/name``), so tests run over real mTLS."""

    def __init__(self, directory: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        self.now = now
        self.authority = CertificateAuthority.create("policy-ledger test CA", now)
        self.server = self.authority.issue_server(["127.0.0.1", "localhost"], now)
        self.directory = directory
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.authority.certificate_pem)
        self.server.write(directory, "server")
        self.authority_key_path = directory / "ca.key"
        self._clients: dict[tuple[str, str], IssuedCertificate] = {}

    def client(self, role: str, name: str) -> IssuedCertificate:
        """The certificate of ``spiffe://policy-ledger.local/<role>/<name>`` (issued once)."""
        if (role, name) not in self._clients:
            issued = self.authority.issue_client(DEFAULT_TRUST_DOMAIN, role, name, self.now)
            issued.write(self.directory, f"{role}-{name}")
            self._clients[role, name] = issued
        return self._clients[role, name]

    def credentials(self, role: str, name: str) -> ClientCredentials:
        """What a client presents as ``role/name``."""
        issued = self.client(role, name)
        return ClientCredentials(
            self.authority.certificate_pem, issued.certificate_pem, issued.key_pem
        )

    def cli_arguments(self, role: str, name: str) -> list[str]:
        """``--credentials DIR --as ROLE-NAME`` for a command-line client."""
        self.client(role, name)
        return ["--credentials", str(self.directory), "--as", f"{role}-{name}"]


_TEST_PKI: list[SessionPki] = []


def session_pki() -> SessionPki:
    """The session's PKI (made on first use, in a temporary directory)."""
    if not _TEST_PKI:
        import tempfile

        _TEST_PKI.append(SessionPki(Path(tempfile.mkdtemp(prefix="policy-ledger-pki-"))))
    return _TEST_PKI[0]


@pytest.fixture(scope="session")
def pki() -> SessionPki:
    """The session's PKI: CA, server certificate, client certificates on demand."""
    return session_pki()


@dataclass
class ServerHandle:
    """A server running on its own event loop thread, for end-to-end tests."""

    running: RunningServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    log_verifier_key: str
    pki: SessionPki

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.running.port}"

    def channel(self, role: str = "operator", name: str = "test") -> grpc.Channel:
        """A channel to this server as the caller ``<role>/<name>`` (close it after use).

        Every test opens its channels here: the caller proves who it is with a client
        certificate naming ``spiffe://policy-ledger.local/<role>/<name>``, issued by the
        session's test CA.
        """
        return grpc.secure_channel(
            self.address,
            self.pki.credentials(role, name).channel_credentials(),
            options=_OWN_CONNECTION,
        )

    def enrolment_channel(self) -> grpc.Channel:
        """A channel to this server's enrolment port, checking the server certificate and
        presenting none (as a party that has not enrolled yet); close it after use."""
        if self.running.enrolment is None:
            raise ValueError("this server has no enrolment port (config enrol_listen)")
        return grpc.secure_channel(
            f"127.0.0.1:{self.running.enrolment.port}",
            grpc.ssl_channel_credentials(root_certificates=self.pki.authority.certificate_pem),
            options=_OWN_CONNECTION,
        )

    def aio_channel(self, role: str = "operator", name: str = "test") -> grpc.aio.Channel:
        """As :meth:`channel`, an asyncio channel (for loads of thousands of concurrent calls)."""
        return grpc.aio.secure_channel(
            self.address,
            self.pki.credentials(role, name).channel_credentials(),
            options=_OWN_CONNECTION,
        )

    def cli_arguments(self, role: str = "operator", name: str = "test") -> list[str]:
        """``--server ADDRESS --credentials DIR --as ROLE-NAME`` for a command-line client."""
        return ["--server", self.address, *self.pki.cli_arguments(role, name)]

    def in_one_batch(self, count: int, submit: Callable[[], _T]) -> _T:
        """Run ``submit`` (which queues ``count`` submissions) so that they share one batch.

        The sequencer is held while ``submit`` runs in another thread; once ``count`` submissions
        wait in its queue it is released, and they are committed together. No timing is assumed:
        the batch boundary is the test's decision, not the machine's speed.
        """
        sequencer = self.running.sequencer

        async def hold() -> None:
            sequencer.hold()

        asyncio.run_coroutine_threadsafe(hold(), self.loop).result(timeout=30)
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                submitted = pool.submit(submit)
                waiting = asyncio.run_coroutine_threadsafe(sequencer.wait_waiting(count), self.loop)
                wait([submitted, waiting], timeout=120, return_when=FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    submitted.result(timeout=0)  # raises why the submissions never queued
                    raise AssertionError(f"{count} submissions never waited in the queue")
                self.loop.call_soon_threadsafe(sequencer.release)
                return submitted.result(timeout=120)
        finally:
            self.loop.call_soon_threadsafe(sequencer.release)

    def stop(self) -> None:
        """Stop the server and its loop. The bounds are hang guards, not expectations: under
        the stress loops (two busy processes beside two test workers on two cores) a stop took
        over 30 s once."""
        stopping = asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop)
        try:
            stopping.result(timeout=120)
        except TimeoutError:
            raise AssertionError(f"the server did not stop in 120 s:\n{self._stacks()}") from None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=120)
        if self.thread.is_alive():
            raise AssertionError(f"the server's loop did not stop in 120 s:\n{self._stacks()}")
        # The loop holds three descriptors (its epoll and its self-pipe's two sockets) until it
        # is closed: never closed, every server of a test process left them behind.
        self.loop.close()

    def _stacks(self) -> str:
        """Where every thread and every task of the server's loop is (a hang's diagnosis)."""
        import sys
        import traceback

        frames = sys._current_frames()
        threads = [
            f"thread {thread.name}:\n{''.join(traceback.format_stack(frames[thread.ident]))}"
            for thread in threading.enumerate()
            if thread.ident in frames
        ]

        async def tasks() -> list[str]:
            return [
                f"task {task.get_name()}: {task.get_stack(limit=8)}" for task in asyncio.all_tasks()
            ]

        try:
            listed = asyncio.run_coroutine_threadsafe(tasks(), self.loop).result(timeout=10)
        except TimeoutError:
            listed = ["(the loop did not answer in 10 s: it is blocked)"]
        return "\n".join([*threads, *listed])


def start_server_thread(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    *,
    witnesses: tuple[str, ...] = (),
    insecure_plaintext: bool = False,
    operator_signer: Signer = OPERATOR_SIGNER,
    config_changes: dict[str, object] | None = None,
    clock: Clock = CLOCK,
    **options: float,
) -> ServerHandle:
    """Start a real server on 127.0.0.1:0 in a background thread (mTLS unless
    ``insecure_plaintext``, which only the test of that mode asks for); on an empty database
    its genesis entry (leaf 0) names ``operator_signer``'s key."""
    key_path = tmp_path / "log.key"
    key_path.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    pki = session_pki()
    config = replace(
        ServerConfig(),
        database_url=database_url,
        listen="127.0.0.1:0",
        log_key_path=key_path,
        tls_cert_path=None if insecure_plaintext else pki.directory / "server.pem",
        tls_key_path=None if insecure_plaintext else pki.directory / "server.key",
        client_ca_path=None if insecure_plaintext else pki.ca_path,
        insecure_plaintext=insecure_plaintext,
        operator_verifier=format_verifier_key(operator_signer),
        grace_seconds=1.0,
        sequencer=SequencerOptions(**options),  # type: ignore[arg-type]
        witnesses=witnesses,
    )
    config = replace(config, **(config_changes or {}))  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(start_server(config, clock), loop).result(
            timeout=60
        )
    except BaseException:
        # A refused start (the tests of refusals expect one) leaves no loop or thread behind.
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=120)
        if not thread.is_alive():
            loop.close()
        raise
    use_vault(running.engine)  # the builders' events name people by this server's tokens
    return ServerHandle(running, loop, thread, format_verifier_key(log_signer), pki)


@pytest.fixture
def server(database_url: str, log_signer: Ed25519Signer, tmp_path: Path) -> Iterator[ServerHandle]:
    """A running server on a fresh database (each engine)."""
    handle = start_server_thread(database_url, log_signer, tmp_path)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def operator_signer() -> Ed25519Signer:
    """The ledger operator's event signer (key history, insurer licensing)."""
    return OPERATOR_SIGNER


def licence_event(insurer_id: str) -> events_pb2.Event:
    """The same licensing event every time (resubmitting it is idempotent)."""
    return insurer_licensed(
        insurer_id,
        name=f"{insurer_id} (test insurer)",
        licence_number=f"TEST-{insurer_id}",
        effective=LICENSED_FROM,
        occurred_at=KEYS_VALID_FROM + dt.timedelta(hours=1),
    )


def onboard(
    server: ServerHandle,
    operator_signer: Signer,
    insurer_id: str,
    insurer_signer: Signer,
    role: SignerRole = SignerRole.INSURER,
) -> None:
    """Register the principal's key (and license an insurer) by operator events, over gRPC.

    Appends two entries for an insurer (KeyRegistered, InsurerLicensed), one for another role;
    again with the same arguments, none (the same events are duplicates)."""
    with server.channel("operator", "operator") as channel:
        operator = OperatorClient(
            channel,
            signer=operator_signer,
            log=TrustedLog.from_verifier_key(server.log_verifier_key),
        )
        operator.onboard(
            insurer_id,
            insurer_signer.public_key,
            name=f"{insurer_id} (test insurer)",
            licence_number=f"TEST-{insurer_id}",
            valid_from=KEYS_VALID_FROM,
            occurred_at=KEYS_VALID_FROM + dt.timedelta(hours=1),  # the same event every time
            role=role,
        )


def pending(signer: Signer, event: events_pb2.Event) -> PendingEntry:
    """A verified submission of ``event`` signed by ``signer``, for the appender directly."""
    payload = event.SerializeToString(deterministic=True)
    key_id = insurer_key_id(signer.public_key)
    return PendingEntry(
        envelope=sign_envelope(EVENT_PAYLOAD_TYPE, payload, signer, key_id),
        insurer_id=event.insurer_id,
        event_id=event.event_id,
        key_id=key_id,
    )


def key_event(principal_id: str, signer: Signer, role: SignerRole) -> events_pb2.Event:
    """The same KeyRegistered event every time (resubmitting it is idempotent)."""
    return key_registered(
        principal_id,
        signer.public_key,
        role=role,
        valid_from=KEYS_VALID_FROM,
        occurred_at=KEYS_VALID_FROM + dt.timedelta(hours=1),
    )


def licensed_appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Signer,
    insurer_id: str,
    insurer_signer: Signer,
    now: dt.datetime,
) -> Appender:
    """An appender on a new log whose entries after the genesis one license ``insurer_id``
    and register ``insurer_signer``'s key (written directly, no server)."""
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(now)
    onboard_directly(engine, appender, operator_signer, insurer_id, insurer_signer, now)
    return appender


def onboard_directly(
    engine: Engine,
    appender: Appender,
    operator_signer: Signer,
    insurer_id: str,
    insurer_signer: Signer,
    now: dt.datetime,
    role: SignerRole = SignerRole.INSURER,
) -> None:
    """As :func:`onboard`, on the database through the appender, without a server; on an empty
    log it first appends the genesis entry naming ``operator_signer``'s key (leaf 0)."""
    appender.anchor_operator(operator_signer.public_key, now)
    events = [key_event(insurer_id, insurer_signer, role)]
    if role == SignerRole.INSURER:
        events.append(licence_event(insurer_id))
    outcomes = appender.append_batch([pending(operator_signer, event) for event in events], now)
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
