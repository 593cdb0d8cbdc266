"""Read routing's refusals (``x-min-tree-size``, ``serve --read-database``), on both engines.

What a real hot standby does is tested in tests/durability/test_standby.py (it starts one);
here: an unreadable ``x-min-tree-size`` is INVALID_ARGUMENT and writes nothing, with or without
a standby; a readable one is honoured; a ``--read-database`` that cannot be a standby of the
database stops ``serve`` before anything is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from clients.errors import ClientError, from_rpc_error
from clients.samples import household
from ledger.config import ServerConfig
from ledger.errors import FailedPrecondition, InvalidArgument, LedgerError
from ledger.events import civil_date
from ledger.rpc.server import start_server
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.append import Appender
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.v1 import coverage_service_pb2 as coverage_pb
from ledger.v1 import coverage_service_pb2_grpc as coverage_grpc
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2
from tests.conftest import ServerHandle, postgres_database
from tests.stack import row_counts

UNREADABLE = ("abc", "-1", "", " 5", "5 ", "1e3", "0x10", "99999999999999999999", "+5")
"""Values of x-min-tree-size that are not one decimal tree size."""


def _calls(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]
) -> list[ClientError | object]:
    """A checkpoint read and a coverage read (which records an access) with ``metadata``."""
    results: list[ClientError | object] = []
    ledger = pb_grpc.LedgerServiceStub(channel)
    coverage = coverage_grpc.CoverageServiceStub(channel)
    calls = (
        lambda: ledger.GetCheckpoint(pb.GetCheckpointRequest(), metadata=metadata),
        lambda: coverage.GetCoverage(
            coverage_pb.GetCoverageRequest(
                person=household(7)[0],
                date=civil_date(dt.date(2026, 3, 1)),
                purpose=types_pb2.ACCESS_PURPOSE_AUDIT,
            ),
            metadata=metadata,
        ),
    )
    for call in calls:
        try:
            results.append(call())
        except grpc.RpcError as error:
            results.append(from_rpc_error(error))
    return results


def test_an_unreadable_min_tree_size_is_refused_and_writes_nothing(
    server: ServerHandle, database_url: str
) -> None:
    before = row_counts(database_url)
    with server.channel("auditor", "min-size") as channel:
        for value in UNREADABLE:
            for result in _calls(channel, (("x-min-tree-size", value),)):
                assert isinstance(result, ClientError), value
                assert result.code == grpc.StatusCode.INVALID_ARGUMENT
                assert result.reason == "MIN_TREE_SIZE_INVALID"
        twice = (("x-min-tree-size", "1"), ("x-min-tree-size", "1"))
        for result in _calls(channel, twice):
            assert isinstance(result, ClientError)
            assert result.reason == "MIN_TREE_SIZE_INVALID"
        assert row_counts(database_url) == before
        # The accepted twin: one decimal size is honoured (the primary answers at its newest
        # size, which is at least any receipt's), and the coverage read is recorded.
        size = before["log_entries"]
        checkpoint, coverage = _calls(channel, (("x-min-tree-size", str(size)),))
        assert isinstance(checkpoint, pb.GetCheckpointResponse)
        assert checkpoint.tree_size == size
        assert isinstance(coverage, coverage_pb.GetCoverageResponse)
        assert coverage.basis.tree_size == size
    after = row_counts(database_url)
    assert after["log_entries"] == size
    assert after != before  # the access record of the accepted coverage read


def _refused(config: ServerConfig) -> LedgerError:
    async def start() -> None:
        running = await start_server(config)
        await running.stop()
        raise AssertionError("serve started")

    with pytest.raises(LedgerError) as refused:
        asyncio.run(start())
    return refused.value


def _config(
    tmp_path: Path, log_signer: Ed25519Signer, database_url: str, read_url: str
) -> ServerConfig:
    key_path = tmp_path / "log.key"
    key_path.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    return replace(
        ServerConfig(),
        database_url=database_url,
        listen="127.0.0.1:0",
        log_key_path=key_path,
        insecure_plaintext=True,
        operator_verifier=format_verifier_key(log_signer),
        read_database_url=read_url,
    )


def test_a_sqlite_read_database_is_refused_before_anything_is_written(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    primary = tmp_path / "ledger.db"
    refused = _refused(
        _config(tmp_path, log_signer, sqlite_url(primary), sqlite_url(tmp_path / "copy.db"))
    )
    assert isinstance(refused, InvalidArgument)
    assert refused.reason == "READ_DATABASE_NOT_POSTGRESQL"
    assert not primary.exists()
    assert not (tmp_path / "copy.db").exists()


def _initialized(url: str, signer: Ed25519Signer) -> None:
    engine = create_ledger_engine(url)
    try:
        upgrade(engine)
        Appender(engine, signer, signer.name).initialize(dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_read_database_that_is_not_a_standby_of_the_database_is_refused(
    tmp_path: Path, log_signer: Ed25519Signer, fresh_postgres_url: str, postgres_admin_url: str
) -> None:
    _initialized(fresh_postgres_url, log_signer)
    before = row_counts(fresh_postgres_url)
    refused = _refused(_config(tmp_path, log_signer, fresh_postgres_url, fresh_postgres_url))
    assert isinstance(refused, InvalidArgument)
    assert refused.reason == "READ_DATABASE_IS_PRIMARY"
    with postgres_database(postgres_admin_url) as other_url:
        _initialized(other_url, Ed25519Signer.generate("another.example/log"))
        other_before = row_counts(other_url)
        refused = _refused(_config(tmp_path, log_signer, fresh_postgres_url, other_url))
        assert isinstance(refused, FailedPrecondition)
        assert refused.reason == "READ_DATABASE_OTHER_LOG"
        assert row_counts(other_url) == other_before
    assert row_counts(fresh_postgres_url) == before
    # The accepted twin: a database holding the same log (here the primary under another
    # URL spelling, as a standby answers) lets serve start, which writes the genesis entry.
    same_log = fresh_postgres_url.replace("127.0.0.1", "localhost")
    assert same_log != fresh_postgres_url

    async def start_and_stop() -> None:
        running = await start_server(_config(tmp_path, log_signer, fresh_postgres_url, same_log))
        await running.stop()

    asyncio.run(start_and_stop())
    assert row_counts(fresh_postgres_url)["log_entries"] == before["log_entries"] + 1


def test_serve_with_a_sqlite_read_database_exits_2_saying_why(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    primary = tmp_path / "ledger.db"
    base = [sys.executable, "-m", "policy_ledger.cli", "serve", "--database", sqlite_url(primary),
            "--listen", "127.0.0.1:0", "--log-key-file", str(key_file), "--insecure-plaintext",
            "--operator-verifier", format_verifier_key(log_signer)]  # fmt: skip
    refused = subprocess.run(
        [*base, "--read-database", sqlite_url(tmp_path / "copy.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "--read-database must be a PostgreSQL URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not primary.exists()
    bad_bound = subprocess.run(
        [*base, "--read-lag-max", "-1"], capture_output=True, text=True, timeout=120, check=False
    )
    assert bad_bound.returncode == 2
    assert "not a number of entries" in bad_bound.stderr
    assert not primary.exists()
