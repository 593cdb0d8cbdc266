"""The several-instances bench runs (a smoke run, tiny; `make bench-instances` is not part of
`make test`): two `serve` instances on one PostgreSQL database take both loads, and the bench's
own check finds one linear history. Nothing here is about speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_the_instances_bench_runs_and_finds_one_history(postgres_admin_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "instances", "--instance-events", "16",
         "--instance-counts", "1,2", "--instance-workers", "0",
         "--instance-paced-seconds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "POLICY_LEDGER_TEST_POSTGRES_URL": POSTGRES_URL},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "ceiling: PostgreSQL durable commits" in done.stdout
    for count in (1, 2):
        assert f"{count} instance(s) x --workers 0, streaming" in done.stdout
        assert f"{count} instance(s) x --workers 0, unary at 30/s in all" in done.stdout
    assert f"{16 * 1} events acknowledged, 0 refused" in done.stdout
    assert f"{16 * 2} events acknowledged, 0 refused" in done.stdout
    assert done.stdout.count("one linear history") == 2, done.stdout
