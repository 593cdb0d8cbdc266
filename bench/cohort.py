"""Task D (issue 11): one funder streams a whole cohort (25,000 beneficiaries by default, the size
of one re-targeting announcement) in one ``SubmitEvents`` call, as CohortEnrolled events of
``limits.cohort_beneficiaries_per_event_max``; printed in members/s next to this run's ceiling for
the same rows: the rate SQLite inserts the cohort's member rows alone, in one transaction."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from bench.kit import Line
from clients.funder import cohort_events, sdg
from clients.insurer import sign_event
from clients.person_tokens import PersonTokens
from ledger import limits
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["bench_cohort", "member_insert_ceiling"]

FUNDER = "bench-zakat"


def member_insert_ceiling(folder: Path, members: int) -> float:
    """Rows/s SQLite inserts ``members`` rows shaped like ``fund_cohort_members`` in one
    durable transaction (WAL, synchronous=FULL): what no submission path can beat."""
    connection = sqlite3.connect(folder / "ceiling-members.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(
        "CREATE TABLE m (cohort_id TEXT, person_token TEXT, position INTEGER, state_code TEXT, "
        "leaf_index INTEGER, PRIMARY KEY (cohort_id, person_token))"
    )
    connection.execute("CREATE INDEX m_token ON m (person_token)")
    rows = [("C", f"pt_{n:026d}", n, "SD-KH", n // 250) for n in range(members)]
    started = time.perf_counter()
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", rows)
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return members / elapsed


def bench_cohort(
    channel_as: Callable[[str], grpc.Channel],
    onboard: Callable[[bytes, str, SignerRole], None],
    members: int,
    line: Line,
    ceiling: float,
) -> None:
    """Stream ``members`` beneficiaries of one cohort in one SubmitEvents call and print the
    rate; ``channel_as`` opens a channel as an identity, ``onboard`` registers the funder."""
    funder = Ed25519Signer.generate(FUNDER)
    onboard(funder.public_key, FUNDER, SignerRole.FUNDER)
    with channel_as(f"funder-{FUNDER}") as channel:
        people = [
            types_pb2.PersonId(
                type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID,
                value=f"3{number:010d}",
                country_code="SD",
            )
            for number in range(members)
        ]
        tokens = PersonTokens(channel).tokens(people)
        year = dt.date.today().year
        events = cohort_events(
            FUNDER,
            "BENCH-COHORT",
            [(token, "SD-KH") for token in tokens],
            (dt.date(year, 1, 1), dt.date(year, 12, 31)),
            sdg(1_500),
            fund_id="sd-nhif",
            occurred_at=dt.datetime.now(dt.UTC),
        )
        envelopes = [sign_event(event, funder) for event in events]  # before timing starts
        per = limits.submit_message_envelopes_default
        requests = [
            pb.SubmitEventsRequest(envelopes=envelopes[i : i + per])
            for i in range(0, len(envelopes), per)
        ]
        started = time.perf_counter()
        responses = list(pb_grpc.LedgerServiceStub(channel).SubmitEvents(iter(requests)))
        elapsed = time.perf_counter() - started
    results = [r for response in responses for r in (response.results or [response])]
    refused = sum(1 for result in results if result.WhichOneof("result") == "error")
    line(
        "cohort members streamed (1 SubmitEvents)",
        f"{members / elapsed:,.0f} members/s",
        f"{members:,} members in {len(events)} events, {refused} refused, {elapsed:.1f} s; "
        f"ceiling: SQLite inserts the member rows alone at {ceiling:,.0f}/s",
    )
