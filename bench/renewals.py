"""Renewal figures (issue 13 item 7): Kuwaiti renewals end to end over gRPC (quote, then pay
through the simulated gateway with 50 ms of latency per gateway call, recorded in the ledger),
at 1 and 16 portal callers, on SQLite and on PostgreSQL, at each ``serve --workers`` count.
At 16 callers: new households on one connection; the same households renewing for the next year
(their people known to the vault); new households with a connection per caller (one connection
is served by one worker: ``SO_REUSEPORT`` spreads connections, not calls).

The PostgreSQL figures need a server at ``POLICY_LEDGER_BENCH_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, trust); the bench creates its own
database there and drops it afterwards. Without one, those lines say "skipped" and why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.kit import BenchKit, cpu_seconds, serve
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url

__all__ = ["POSTGRES_ADMIN_URL", "bench_renewals", "postgres_database"]

POSTGRES_ADMIN_URL = os.environ.get(
    "POLICY_LEDGER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
"""The maintenance database of the PostgreSQL server the bench makes its databases on."""

GATEWAY_LATENCY_SECONDS = 0.05


@contextlib.contextmanager
def postgres_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database's URL (dropped afterwards), or None when no server
    answers at ``admin_url``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(
            admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # any failure to reach the server means "skipped", said why
        print(f"  (PostgreSQL unavailable at {admin_url}: {type(error).__name__})", flush=True)
        yield None
        return
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench_renewals(
    kit: BenchKit, folder: Path, renewals_count: int, worker_counts: list[int]
) -> None:
    """Renewals at 1 and 16 callers on SQLite and PostgreSQL, at each ``--workers`` count."""
    for engine in ("SQLite", "PostgreSQL"):
        for workers in worker_counts:
            with contextlib.ExitStack() as stack:
                if engine == "SQLite":
                    url: str | None = sqlite_url(folder / f"renewals-{workers}" / "ledger.db")
                else:
                    url = stack.enter_context(postgres_database())
                if url is None:
                    kit.line(f"renewals on {engine}, --workers {workers}", "skipped")
                    continue
                _renewals_on(
                    kit,
                    folder / f"renewal-server-{engine}-{workers}",
                    url,
                    engine,
                    workers,
                    renewals_count,
                )


def _analyze(database_url: str) -> None:
    """PostgreSQL: gather the planner's statistics now, as autovacuum does on a running
    database (within a minute, and again as tables grow). The bench's database is minutes old:
    without statistics the server's prepared statements keep generic plans made for empty
    tables (measured: the FeeCollected rules' coverage look-up scanned every row of the
    authority's through the primary key, 316 blocks and 0.37 ms a call, instead of one index
    probe). SQLite's planner chooses the same indexes without statistics: nothing to do."""
    if not database_url.startswith("postgresql"):
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def _renewals_on(
    kit: BenchKit,
    folder: Path,
    database_url: str,
    engine: str,
    workers: int,
    renewals_count: int,
) -> None:
    from clients.renewal import RenewalClient
    from clients.verify import TrustedLog
    from ledger.identifiers import example_kuwait_civil_id
    from ledger.signers import SignerRole
    from ledger.v1 import events_pb2, types_pb2
    from payments.v1 import renewal_service_pb2 as rpb

    log_signer = Ed25519Signer.generate("bench/log")
    authority = Ed25519Signer.generate("kw-gov-health")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "authority.key").write_text(format_signer_key(authority) + "\n")
    (folder / "gateways.json").write_text(
        f'{{"simulated": {{"latency_seconds": "{GATEWAY_LATENCY_SECONDS}"}}}}'
    )
    environment = {
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY": str(folder / "authority.key"),
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_ID": "kw-gov-health",
        "POLICY_LEDGER_PAYMENTS_GATEWAYS": str(folder / "gateways.json"),
    }
    with serve(kit, folder, log_signer, database_url, workers=workers, environment=environment) as (
        address,
        process,
    ):
        kit.onboard(
            address,
            log_signer,
            authority.public_key,
            principal="kw-gov-health",
            role=SignerRole.AUTHORITY,
        )
        trusted = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
        with contextlib.ExitStack() as channels:
            clients = [
                RenewalClient(
                    channels.enter_context(kit.channel_as(address, "portal-KW")),
                    log=trusted,
                )
                for _ in range(16)
            ]
            mine = threading.local()
            taken = itertools.count()

            def civil_id(number: int, position: int) -> types_pb2.PersonId:
                birth = dt.date(1960, 1, 1) + dt.timedelta(days=number % 20_000)
                return types_pb2.PersonId(
                    type=types_pb2.PERSON_ID_TYPE_CIVIL_ID,
                    value=example_kuwait_civil_id(birth, 3 * position),
                    country_code="KW",
                )

            def renew(number: int, year: int, connections: int) -> float:
                request = rpb.QuoteRenewalRequest(
                    jurisdiction="KW",
                    sponsor=civil_id(number, 0),
                    period_start=types_pb2.CivilDate(year=year, month=1, day=1),
                    period_end=types_pb2.CivilDate(year=year, month=12, day=31),
                )
                for position, relationship in enumerate(
                    (events_pb2.RELATIONSHIP_SELF, events_pb2.RELATIONSHIP_SPOUSE)
                ):
                    request.members.add(
                        person=civil_id(number, position),
                        relationship=relationship,
                        residence_category=(
                            rpb.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER
                            if position == 0
                            else rpb.RESIDENCE_CATEGORY_DEPENDENT
                        ),
                    )
                client = clients[mine.index if connections > 1 else 0]
                began = time.perf_counter()
                quote = client.quote(request).quote
                payment = client.start_payment(
                    quote.quote_id, f"bench-{year}-{number:08d}", gateway="simulated"
                )
                assert payment.state == rpb.PAYMENT_STATE_RECORDED, payment
                return time.perf_counter() - began

            def one_connection_each() -> None:
                mine.index = next(taken) % len(clients)

            first = 0
            numbers = range(0)
            # New households: 1 caller, then 16 callers on one connection (one worker serves
            # them all: SO_REUSEPORT spreads connections, not calls); the same 16 callers'
            # households renewing for the next year (the vault knows their people: the steady
            # state of yearly renewals); new households again, 16 callers on a connection each
            # (spread over the workers).
            for callers, connections, again in (
                (1, 1, False),
                (16, 1, False),
                (16, 1, True),
                (16, 16, False),
            ):
                if not again:
                    count = max(20, renewals_count // (4 if callers == 1 else 1))
                    numbers = range(first, first + count)
                    first += count
                year = 2028 if again else 2027
                if callers > 1 and not again and connections == 1:
                    _analyze(database_url)
                cpu_before = cpu_seconds(process.pid)
                client_before = time.process_time()
                began = time.perf_counter()
                with ThreadPoolExecutor(
                    max_workers=callers, initializer=one_connection_each
                ) as pool:
                    latencies = list(
                        pool.map(lambda number: renew(number, year, connections), numbers)  # noqa: B023 (used before the loop moves on)
                    )
                elapsed = time.perf_counter() - began
                cpu = (cpu_seconds(process.pid) - cpu_before) / count
                client_cpu = (time.process_time() - client_before) / count
                p50, p99 = kit.percentiles(latencies)
                kit.line(
                    f"renewals, {engine}, --workers {workers}, {callers} caller(s)",
                    f"{count / elapsed:,.0f}/s",
                    ("renewing again; " if again else "")
                    + (f"{connections} connections; " if connections > 1 else "")
                    + f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; server CPU {cpu * 1000:.1f} ms a "
                    f"renewal, client CPU {client_cpu * 1000:.1f} ms; load average "
                    f"{os.getloadavg()[0]:.1f}",
                )
