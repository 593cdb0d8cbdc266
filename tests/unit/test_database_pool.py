"""One ``serve``'s PostgreSQL connections, divided over its processes (ledger/config.py,
ledger/storage/db.py; docs/operations.md "Database connections").

The rule: each process gets the configured totals divided by the number of processes (the one
process of ``--workers 0``, else the sequencer process and N workers), rounded down, and the
sequencer process also what is left, so the shares sum to the totals exactly; totals too small to
give each process its minimum are refused; unset totals are the defaults, raised to the minimum
per process. The processes themselves: tests/e2e/test_workers.py counts the connections a real
``serve --workers 2`` opens on PostgreSQL.
"""

from __future__ import annotations

import pytest

from ledger import limits
from ledger.config import ServerConfig, divide_database_pool
from ledger.errors import InvalidArgument
from ledger.rpc.supervisor import _environments
from ledger.storage.db import (
    POOL_SHARE_DEFAULT,
    POOL_SHARE_ENVIRONMENT,
    PoolShare,
    create_ledger_engine,
)

_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/never_connected"
"""Creating an engine opens no connection: these tests need no server."""


@pytest.mark.parametrize("workers", [0, 1, 2, 3, 5, 7])
@pytest.mark.parametrize(("size", "overflow"), [(16, 16), (30, 0), (17, 9), (64, 36)])
def test_the_shares_of_n_workers_sum_to_the_configured_totals(
    workers: int, size: int, overflow: int
) -> None:
    config = ServerConfig(workers=workers, database_pool_size=size, database_pool_overflow=overflow)
    shares = config.database_pool_shares()
    assert len(shares) == (1 if workers == 0 else workers + 1)
    assert sum(share.size for share in shares) == size
    assert sum(share.overflow for share in shares) == overflow
    assert sum(share.connections_max for share in shares) == size + overflow
    # Equal shares, the sequencer process's (first) taking what the division leaves.
    assert len({(share.size, share.overflow) for share in shares[1:]}) <= 1
    assert shares[0].size - shares[-1].size == size % len(shares)
    assert shares[0].overflow - shares[-1].overflow == overflow % len(shares)


def test_one_process_gets_the_whole_totals() -> None:
    assert ServerConfig(
        workers=0, database_pool_size=10, database_pool_overflow=3
    ).database_pool_shares() == (PoolShare(10, 3),)


def test_the_defaults_are_divided_and_raised_to_the_minimum_per_process_when_workers_are_many() -> (
    None
):
    assert divide_database_pool(None, None, 3) == (
        PoolShare(6, 6),
        PoolShare(5, 5),
        PoolShare(5, 5),
    )
    assert sum(s.connections_max for s in divide_database_pool(None, None, 1)) == (
        limits.database_pool_size_default + limits.database_pool_overflow_default
    )
    many = divide_database_pool(None, None, limits.workers_max + 1)
    assert {share.size for share in many} == {limits.database_pool_process_size_min}
    assert sum(share.overflow for share in many) == max(
        limits.database_pool_overflow_default,
        limits.database_pool_process_overflow_min * len(many),
    )


@pytest.mark.parametrize(
    ("size", "overflow", "option"),
    [
        (5, 6, "--database-pool-size"),
        (1, 0, "--database-pool-size"),
        (0, 16, "--database-pool-size"),
    ],
)
def test_totals_too_small_for_the_processes_are_refused_naming_the_least_that_would_do(
    size: int, overflow: int, option: str
) -> None:
    config = ServerConfig(workers=2, database_pool_size=size, database_pool_overflow=overflow)
    with pytest.raises(InvalidArgument) as refused:
        config.database_pool_shares()
    assert refused.value.reason == "DATABASE_POOL_TOO_SMALL"
    least = 3 * limits.database_pool_process_size_min  # three processes
    assert f"{option}=" in str(refused.value) and f"set it to {least} or more" in str(refused.value)


def test_totals_come_from_the_environment_and_must_be_numbers() -> None:
    config = ServerConfig.from_environment(
        {
            "POLICY_LEDGER_WORKERS": "2",
            "POLICY_LEDGER_DATABASE_POOL_SIZE": "9",
            "POLICY_LEDGER_DATABASE_POOL_OVERFLOW": "7",
        }
    )
    assert config.database_pool_shares() == (PoolShare(3, 3), PoolShare(3, 2), PoolShare(3, 2))
    unset = ServerConfig.from_environment({})
    assert unset.database_pool_size is None and unset.database_pool_overflow is None
    for bad in ("x", "-1", "2.5"):
        with pytest.raises(InvalidArgument) as refused:
            ServerConfig.from_environment({"POLICY_LEDGER_DATABASE_POOL_SIZE": bad})
        assert refused.value.reason == "DATABASE_POOL_INVALID"


def test_the_supervisor_gives_each_role_its_share_in_its_environment() -> None:
    shares = ServerConfig(
        workers=2, database_pool_size=8, database_pool_overflow=6
    ).database_pool_shares()
    environments = _environments(sequencer_pool=shares[0], worker_pool=shares[-1])
    assert environments["sequencer"][POOL_SHARE_ENVIRONMENT] == "4+2"
    assert environments["worker"][POOL_SHARE_ENVIRONMENT] == "2+2"
    assert PoolShare.parse(environments["worker"][POOL_SHARE_ENVIRONMENT]) == PoolShare(2, 2)


def test_an_engine_takes_its_pool_from_the_argument_else_its_share_else_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def pool_of(pool: PoolShare | None = None) -> tuple[int, int]:
        engine = create_ledger_engine(_POSTGRES_URL, pool=pool)
        try:
            return engine.pool.size(), engine.pool._max_overflow  # type: ignore[attr-defined]
        finally:
            engine.dispose()

    monkeypatch.delenv(POOL_SHARE_ENVIRONMENT, raising=False)
    assert pool_of() == (POOL_SHARE_DEFAULT.size, POOL_SHARE_DEFAULT.overflow)
    monkeypatch.setenv(POOL_SHARE_ENVIRONMENT, "3+1")
    assert pool_of() == (3, 1)
    assert pool_of(PoolShare(5, 0)) == (5, 0)


@pytest.mark.parametrize("text", ["", "3", "3+", "+1", "0+1", "3+-1", "a+b", "3+1+1"])
def test_a_malformed_share_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=POOL_SHARE_ENVIRONMENT):
        PoolShare.parse(text)
