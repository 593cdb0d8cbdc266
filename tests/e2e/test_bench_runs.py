"""The benchmark runs (a smoke run, tiny): `make bench` is not part of `make test`, and a bench
that no longer runs is found only when someone wants its figures. Nothing here is about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*arguments: str) -> str:
    """``python -m <arguments>`` from the project's root; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_submission_bench_runs_at_each_worker_count() -> None:
    stdout = _bench("bench", "--only", "submit", "--events", "40", "--workers", "0,1")
    for count in (0, 1):
        assert f"serve --workers {count}\n" in stdout
    streams = [line for line in stdout.splitlines() if "streaming submit" in line]
    assert len(streams) == 6, stdout  # 1, 8 and 64 envelopes a message, at each count
    assert all("40 events, 0 refused" in line for line in streams), stdout
    assert stdout.count("unary submit") == 4, stdout
    paced = [line for line in stdout.splitlines() if "paced stream" in line]
    assert len(paced) == 2 and all("0 refused" in line for line in paced), stdout


def test_the_sequencer_cpu_bench_runs() -> None:
    stdout = _bench("bench.sequencer_cpu", "--events", "30", "--batch", "8")
    assert "us/event, " in stdout and "us/batch  30 events" in stdout, stdout
    stdout = _bench("bench.sequencer_cpu", "--fees", "--events", "8", "--batch", "4")
    assert "FeeCollected, batches of 4" in stdout and "us/batch  8 events" in stdout, stdout


def test_the_renewals_bench_runs() -> None:
    """New households at 1 and 16 callers, the same ones renewing again, and a connection per
    caller; on PostgreSQL too where the bench's server answers (else its lines say skipped)."""
    stdout = _bench("bench", "--only", "renewals", "--renewals", "20", "--workers", "0")
    lines = [line for line in stdout.splitlines() if "renewals, SQLite, --workers 0" in line]
    assert len(lines) == 4, stdout
    assert "renewing again; " in lines[2] and "16 connections; " in lines[3], stdout
    assert all("server CPU" in line and "client CPU" in line for line in lines), stdout
    postgres = [line for line in stdout.splitlines() if "renewals, PostgreSQL" in line]
    skipped = "renewals on PostgreSQL, --workers 0" in stdout and "skipped" in stdout
    assert len(postgres) == 4 or skipped, stdout
