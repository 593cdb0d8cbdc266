"""Household-check figures (issue 13 item 6): the check of a 3-member household at
``--policies`` policies (default 1M), in-process from the store, then over gRPC with 1 and 16
portal callers at each ``serve --workers`` count, next to the same run's empty-unary ceiling at
16 callers (mTLS, same client style) and the server's CPU time a call (all its processes)."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.kit import BenchKit, cpu_seconds, serve
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.storage.db import sqlite_url

__all__ = ["bench_households"]

CALLERS = (1, 16)


def bench_households(
    kit: BenchKit,
    folder: Path,
    policies_count: int,
    worker_counts: list[int],
    samples: int = 4000,
    *,
    store_figure: Callable[[str, int, Callable[[], object]], object],
) -> Path:
    """Load the policies, print the figures; returns the database (bench/employer.py reads it)."""
    from bench.bulk import bulk_load, bulk_load_policies, household_members
    from clients.portal import PortalClient
    from clients.verify import TrustedLog
    from ledger.coverage.model import PersonRef, Relationship
    from ledger.coverage.reader import CoverageReader, person_from_key
    from ledger.storage.db import create_ledger_engine
    from ledger.v1 import types_pb2
    from ledger.v1.events_pb2 import RELATIONSHIP_UNSPECIFIED

    signer = Ed25519Signer.generate("bench/log")
    database = folder / "households.db"
    bulk_load(database, signer, 1)
    started = time.perf_counter()
    bulk_load_policies(database, policies_count)
    kit.line(
        f"loaded {policies_count:,} household policies",
        f"{time.perf_counter() - started:.1f} s",
        f"({3 * policies_count:,} coverages, straight into the projections)",
    )
    reader = CoverageReader(create_ledger_engine(sqlite_url(database)))
    generator = random.Random(5)
    as_of, through = dt.date(2026, 3, 1), dt.date(2026, 12, 31)
    relationships = (Relationship.SELF, Relationship.SPOUSE, Relationship.CHILD)

    def household(number: int) -> tuple[PersonRef, list[tuple[PersonRef, Relationship | None]]]:
        people = [person_from_key(key) for key in household_members(number)]
        return people[0], list(zip(people, relationships, strict=True))

    def check_in_process() -> None:
        sponsor, members = household(generator.randrange(policies_count))
        assert reader.check_household(sponsor, members, as_of, through).renewable

    store_figure("household check, 3 members (store)", samples, check_in_process)
    reader.engine.dispose()

    def to_proto(person: PersonRef) -> types_pb2.PersonId:
        return types_pb2.PersonId(
            type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID,
            value=person.value,
            country_code=person.country,
        )

    for workers in worker_counts:
        ceiling_calls, ceiling_seconds = kit.echo_rate_at(16)
        ceiling = ceiling_calls / ceiling_seconds
        kit.line(
            "ceiling: empty unary gRPC calls, mTLS, 16 callers",
            f"{ceiling:,.0f}/s",
            f"(measured before --workers {workers}; load average {os.getloadavg()[0]:.1f})",
        )
        with (
            serve(
                kit,
                folder / f"household-server-{workers}",
                signer,
                sqlite_url(database),
                workers=workers,
                operator=False,
            ) as (address, process),
            kit.channel_as(address, "portal-SA") as channel,
        ):
            portal = PortalClient(
                channel, log=TrustedLog.from_verifier_key(format_verifier_key(signer))
            )

            def call(_: int, portal: PortalClient = portal) -> float:
                sponsor, members = household(generator.randrange(policies_count))
                began = time.perf_counter()
                answer = portal.check_household(
                    to_proto(sponsor),
                    # Relationship unset: "as on record" (the portal may leave it so).
                    [(to_proto(person), RELATIONSHIP_UNSPECIFIED) for person, _ in members],
                    as_of=as_of,
                    through=through,
                    jurisdiction="SA",
                )
                assert answer.response.renewable
                return time.perf_counter() - began

            call(0)  # the first call opens the connection (and each worker's caches)
            for callers in CALLERS:
                cpu_before = cpu_seconds(process.pid)
                began = time.perf_counter()
                with ThreadPoolExecutor(max_workers=callers) as pool:
                    latencies = list(pool.map(call, range(samples // 2)))
                elapsed = time.perf_counter() - began
                cpu = (cpu_seconds(process.pid) - cpu_before) / len(latencies)
                p50, p99 = kit.percentiles(latencies)
                achieved = len(latencies) / elapsed
                share = f"{achieved / ceiling:.0%} of the ceiling; " if callers == 16 else ""
                kit.line(
                    f"household check over gRPC, --workers {workers}, {callers} caller(s)",
                    f"{achieved:,.0f}/s",
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms; {share}server CPU "
                    f"{cpu * 1000:.2f} ms a call; load average {os.getloadavg()[0]:.1f}",
                )
    return database
