"""CheckEmployer latency (issue 10, task A): an establishment responsible for 500 workers and
their dependents, in the household benchmark's database (its bulk policies: 1M by default).

The first 500 bulk households become the establishment's: each sponsor a worker whose permit
names his spouse and child, as the obligations projection would hold them after 500
PermitIssued entries (written straight into the projection: the figure measured is the read
path). Every worker and dependent is insured, so each answer is all "covered".
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from bench.kit import Line

__all__ = ["ESTABLISHMENT", "WORKERS", "bench_employer"]

ESTABLISHMENT = "org:SA:7000000500"
WORKERS = 500


def _load_obligations(database: Path) -> None:
    connection = sqlite3.connect(database, isolation_level=None)
    rows = connection.execute(
        "SELECT policy_id, person_key, relationship FROM coverages "
        "WHERE policy_id < ? ORDER BY policy_id",
        (f"BP{WORKERS:08d}",),
    ).fetchall()
    start, end = dt.date(2026, 1, 1).isoformat(), dt.date(2026, 12, 31).isoformat()
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO obligations (authority_id, permit_id, person_token, relationship, "
        "obligated_from, obligated_until, responsible_key, leaf_indexes) "
        "VALUES ('bench-residence', ?, ?, ?, ?, ?, ?, '0')",
        [
            (f"PRM-{policy_id}", token, relationship, start, end, ESTABLISHMENT)
            for policy_id, token, relationship in rows
        ],
    )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def bench_employer(
    database: Path,
    line: Line,
    percentiles: Callable[[list[float]], tuple[float, float]],
    samples: int = 60,
) -> None:
    """Print CheckEmployer's p50/p99, one page of 500 people and the whole establishment."""
    from ledger.compliance.employer import EmployerReader
    from ledger.storage.db import create_ledger_engine, sqlite_url

    _load_obligations(database)
    reader = EmployerReader(create_ledger_engine(sqlite_url(database)))
    first, last = dt.date(2026, 1, 1), dt.date(2026, 12, 31)

    cpu: list[float] = []

    def page() -> float:
        began, began_cpu = time.perf_counter(), time.thread_time()
        answer = reader.check_employer(ESTABLISHMENT, first, last, 500, None)
        assert len(answer.people) == 500 and not any(p.uninsured_days for p in answer.people)
        cpu.append(time.thread_time() - began_cpu)
        return time.perf_counter() - began

    def whole() -> float:
        began = time.perf_counter()
        after, people = None, 0
        while True:
            answer = reader.check_employer(ESTABLISHMENT, first, last, 500, after)
            people += len(answer.people)
            if answer.next_page is None:
                break
            after = answer.next_page
        assert people == 3 * WORKERS
        return time.perf_counter() - began

    for name, measure in (
        (f"CheckEmployer, one page of 500 people ({WORKERS} workers' establishment)", page),
        (f"CheckEmployer, all {3 * WORKERS} people ({WORKERS} workers + dependents)", whole),
    ):
        latencies = [measure() for _ in range(samples)]
        p50, p99 = percentiles(latencies)
        line(name, f"p50 {p50:.2f} ms", f"p99 {p99:.2f} ms (store, in process)")
        if cpu:
            # The thread's own CPU time per page: what the page costs, whatever else the
            # machine runs (a loaded machine stretches the wall-clock figures above).
            cpu_p50, cpu_p99 = percentiles(cpu)
            line(
                "  of which CPU time of the calling thread",
                f"p50 {cpu_p50:.2f} ms",
                f"p99 {cpu_p99:.2f} ms",
            )
            cpu.clear()
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        line("  machine load average (1, 5, 15 min)", load)
