"""SQLite's WAL checkpointed off the commit path (ledger/storage/wal.py): a server's commits never
checkpoint, the checkpointer does past its threshold, escalates when readers keep the WAL growing,
and checkpoints once more when it stops. Driven directly (``check()``) or through its thread by
events; the retry delay runs on the test's own clock. PostgreSQL is untouched."""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from ledger.metrics import LedgerMetrics
from ledger.rpc.server import start_wal_checkpointer
from ledger.storage.db import WRITE_LOCK_OPTION, create_ledger_engine, sqlite_url
from ledger.storage.wal import CheckpointReport, WalCheckpointer, WalState, read_wal_state
from tests.conftest import ServerHandle

BLOB_BYTES = 16 * 1024
"""One row's blob: with four a commit, every commit writes at least 16 pages (overflow pages)."""


class Clock:
    """The test's own monotonic clock (the TRUNCATE retry delay is counted on it)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class Recorder:
    """A :class:`~ledger.storage.wal.CheckpointObserver` that keeps what it was told."""

    def __init__(self) -> None:
        self.states: list[WalState] = []
        self.reports: list[CheckpointReport] = []

    def wal_observed(self, state: WalState) -> None:
        self.states.append(state)

    def wal_checkpointed(self, report: CheckpointReport) -> None:
        self.reports.append(report)


def open_blobs(path: Path, *, auto_checkpoint: bool) -> Engine:
    engine = create_ledger_engine(sqlite_url(path), auto_checkpoint=auto_checkpoint)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS blobs (data BLOB NOT NULL)"))
    return engine


def commit_blobs(engine: Engine, commits: int) -> None:
    """``commits`` transactions of four blobs each, committed one by one, each begun as the
    sequencer's are (``BEGIN IMMEDIATE``: the checkpointer's write hook runs before it)."""
    writer = engine.execution_options(**{WRITE_LOCK_OPTION: True})
    for _ in range(commits):
        with writer.begin() as connection:
            connection.execute(
                text("INSERT INTO blobs (data) VALUES (randomblob(:n))"),
                [{"n": BLOB_BYTES}] * 4,
            )


def commit_until(engine: Engine, database: Path, pages: int) -> WalState:
    """Commit until the WAL holds at least ``pages`` pages; its state then."""
    while True:
        commit_blobs(engine, 1)
        state = read_wal_state(database)
        assert state is not None
        if state.pages >= pages:
            return state


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = open_blobs(database, auto_checkpoint=False)
    yield engine
    engine.dispose()


def test_a_server_engine_s_commits_never_checkpoint(engine: Engine, database: Path) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    commit_blobs(engine, 80)  # at least 1,280 pages: past SQLite's automatic threshold
    state = read_wal_state(database)
    assert state is not None and state.pages >= 1280
    assert state.checkpointed == 0  # no commit copied anything into the database file


def test_a_tool_s_engine_keeps_sqlite_s_automatic_checkpoint(tmp_path: Path) -> None:
    database = tmp_path / "tool.db"
    engine = open_blobs(database, auto_checkpoint=True)
    try:
        commit_blobs(engine, 80)
        state = read_wal_state(database)
    finally:
        engine.dispose()
    # A commit past 1,000 pages checkpointed, and the next one started the WAL again.
    assert state is not None and state.pages < 1280


def test_the_checkpointer_copies_the_wal_past_its_threshold(engine: Engine, database: Path) -> None:
    recorder = Recorder()
    checkpointer = WalCheckpointer(
        engine, observer=recorder, checkpoint_pages=1000, restart_pages=1000
    )
    try:
        below = commit_until(engine, database, 500)
        assert below.pending < 1000
        assert checkpointer.check() == []  # below the threshold: nothing copied
        assert recorder.states[-1] == below
        assert read_wal_state(database) == below
        commit_until(engine, database, 1000)
        (report,) = checkpointer.check()
        assert report.mode == "passive" and report.complete
        assert report.wal.pages >= 1000 and report.wal.pending == 0
        assert read_wal_state(database) == report.wal
        assert recorder.reports == [report]
    finally:
        checkpointer.stop()


def checkpoint_a_commit_behind(
    checkpointer: WalCheckpointer, engine: Engine, database: Path
) -> CheckpointReport:
    """What the checkpointer's thread sees while the sequencer writes batch after batch: its
    PASSIVE checkpoint ends with the last commit not copied (a reader's snapshot holds it back
    here, and ends right after)."""
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM blobs").fetchone()
        commit_blobs(engine, 1)
        (report,) = checkpointer.check()
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert report.mode == "passive" and report.wal.pending > 0
    return report


def test_the_wal_starts_again_once_it_holds_restart_pages(engine: Engine, database: Path) -> None:
    recorder = Recorder()
    checkpointer = WalCheckpointer(
        engine, observer=recorder, checkpoint_pages=100, restart_pages=300
    )
    try:
        commit_until(engine, database, 100)
        first = checkpoint_a_commit_behind(checkpointer, engine, database)
        assert first.wal.pages < 300
        # Below restart_pages: the next write begins with a commit not copied, and SQLite
        # appends to the WAL (it starts it again only when every page is copied).
        commit_blobs(engine, 1)
        grown = read_wal_state(database)
        assert grown is not None and grown.pages > first.wal.pages
        assert len(recorder.reports) == 1
        commit_until(engine, database, 300)
        second = checkpoint_a_commit_behind(checkpointer, engine, database)
        assert len(recorder.reports) == 2
        # Past it: the next write copies that tail first, and so starts the WAL again.
        commit_blobs(engine, 1)
        tail = recorder.reports[-1]
        assert len(recorder.reports) == 3 and tail.mode == "passive" and tail.complete
        assert tail.wal.pages == second.wal.pages
        again = read_wal_state(database)
        assert again is not None and again.pages < 100 and again.checkpointed == 0
        commit_blobs(engine, 1)  # once: later writes run no checkpoint
        assert len(recorder.reports) == 3
    finally:
        checkpointer.stop()


def test_readers_keeping_the_wal_growing_escalate_to_truncate(
    engine: Engine, database: Path
) -> None:
    clock = Clock()
    recorder = Recorder()
    checkpointer = WalCheckpointer(
        engine,
        observer=recorder,
        checkpoint_pages=100,
        restart_pages=300,
        pages_max=600,
        truncate_wait_ms=0,
        truncate_retry_seconds=10.0,
        monotonic=clock,
    )
    reader = sqlite3.connect(database, isolation_level=None)

    def modes() -> list[tuple[str, bool]]:
        return [(report.mode, report.complete) for report in recorder.reports]

    try:
        commit_until(engine, database, 50)
        # A reader holding a snapshot that reads from the WAL: no checkpoint may copy past it,
        # and no write may start the WAL again while it reads.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM blobs").fetchone()
        commit_until(engine, database, 700)
        (passive,) = checkpointer.check()  # the TRUNCATE is left to the next write
        assert (passive.mode, passive.complete) == ("passive", False)
        commit_blobs(engine, 1)
        assert modes()[-1] == ("truncate", False)  # blocked by the reader
        assert recorder.reports[-1].wal.pages >= 700
        # Not tried again before the retry delay (PASSIVE goes on meanwhile).
        commit_blobs(engine, 10)
        assert [report.mode for report in checkpointer.check()] == ["passive"]
        commit_blobs(engine, 1)
        assert modes()[-1] == ("passive", False)
        clock.seconds += 10.0
        checkpointer.check()  # arms it; no write takes it, so the next round runs it
        assert [(r.mode, r.complete) for r in checkpointer.check()] == [
            ("passive", False),
            ("truncate", False),
        ]
        reader.execute("COMMIT")
        clock.seconds += 10.0
        checkpointer.check()
        commit_blobs(engine, 1)
        assert modes()[-1] == ("truncate", True)
        assert recorder.reports[-1].wal == WalState(0, 0)
        state = read_wal_state(database)  # the write after it started the WAL from empty
        assert state is not None and state.checkpointed == 0 and state.pages < 100
        assert checkpointer.check() == []
    finally:
        reader.close()
        checkpointer.stop()


def test_the_thread_checkpoints_after_a_commit_and_stops_with_a_final_checkpoint(
    engine: Engine, database: Path
) -> None:
    # The interval is an hour: only notify() wakes the thread here.
    checkpointer = WalCheckpointer(engine, checkpoint_pages=100, check_interval_seconds=3600)
    checkpointer.start()
    with pytest.raises(RuntimeError):
        checkpointer.start()
    commit_until(engine, database, 100)
    checkpointer.notify()
    assert checkpointer.checked.wait(timeout=60)  # a hang guard: it is set by the round
    state = read_wal_state(database)
    assert state is not None and state.pending == 0
    commit_blobs(engine, 2)
    final = checkpointer.stop()
    assert final is not None and final.mode == "truncate" and final.complete
    assert os.path.getsize(f"{database}-wal") == 0
    assert not [t for t in threading.enumerate() if t.name == "wal-checkpointer"]


def test_metrics_count_checkpoints_and_show_the_wal_s_pages(engine: Engine, database: Path) -> None:
    metrics = LedgerMetrics()
    checkpointer = WalCheckpointer(engine, observer=metrics, checkpoint_pages=100)
    try:
        commit_until(engine, database, 100)
        (report,) = checkpointer.check()
    finally:
        checkpointer.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    passive = (("mode", "passive"), ("outcome", "complete"))
    truncate = (("mode", "truncate"), ("outcome", "complete"))
    assert samples[("policy_ledger_wal_checkpoints_total", passive)] == 1
    assert samples[("policy_ledger_wal_checkpoints_total", truncate)] == 1  # the final one
    assert samples[("policy_ledger_wal_checkpoint_seconds_count", ())] == 2
    assert samples[("policy_ledger_wal_pages", (("kind", "total"),))] == 0  # truncated
    assert samples[("policy_ledger_wal_pages", (("kind", "pending"),))] == 0
    assert report.wal.pages >= 100


def test_a_served_database_has_one_checkpointer_told_of_each_commit(
    server: ServerHandle,
) -> None:
    running = server.running
    if running.engine.dialect.name != "sqlite":
        # PostgreSQL: no checkpointer, and the engine option changes nothing.
        assert running.wal_checkpointer is None
        assert start_wal_checkpointer(running.engine, running.sequencer, None) is None
        with pytest.raises(ValueError):
            WalCheckpointer(running.engine)
        return
    checkpointer = running.wal_checkpointer
    assert checkpointer is not None
    assert checkpointer.notify in running.sequencer.commit_listeners
    with running.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_the_wal_index_is_read_only_when_whole_and_known(tmp_path: Path) -> None:
    database = tmp_path / "none.db"
    assert read_wal_state(database) is None  # no -shm file
    header = bytearray(136)
    struct.pack_into("=I", header, 0, 3007000)  # the format's version
    header[12] = 1  # initialized
    struct.pack_into("=I", header, 16, 40)  # pages in the WAL
    struct.pack_into("=I", header, 96, 30)  # pages copied
    header[48:96] = header[0:48]
    shm = tmp_path / "none.db-shm"
    shm.write_bytes(bytes(header))
    assert read_wal_state(database) == WalState(40, 30)
    torn = bytearray(header)
    struct.pack_into("=I", torn, 48 + 16, 41)  # a commit was rewriting the second copy
    shm.write_bytes(bytes(torn))
    assert read_wal_state(database) is None
    other = bytearray(header)
    struct.pack_into("=I", other, 0, 3007001)
    other[48:96] = other[0:48]
    shm.write_bytes(bytes(other))
    assert read_wal_state(database) is None
