"""A corrupt read standby (``serve --read-database``) is watched as the primary is
(``ledger.storage.integrity``, ``ledger.storage.read_routing`` step 5).

PostgreSQL's data_corrupted (XX001) raised by the standby is confirmed by the standby's own
watch, whose CRITICAL line names the read standby and says to rebuild it; reads bypass the
standby for good (reason ``standby_corrupt``, no statement reaches it again) and the primary
answers them; ``policy_ledger_standby_corrupt`` shows 1; the primary's watch and health are
untouched (SERVING: every read is still answered). Before, the router caught the error as any
failure (``standby_failed``, a DEBUG line), asked the corrupt standby again on every read, and
nothing told an operator. The standby here is an empty database of its own (a real hot standby
is tests/durability/test_standby.py's): the corruption is injected into the standby engine's
statements, so whatever a read asks the standby meets it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event

from ledger.signing import Ed25519Signer
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.conftest import ServerHandle, postgres_database, start_server_thread

pytestmark = pytest.mark.postgres

INTEGRITY_LOG = "ledger.storage.integrity"


@pytest.fixture
def routed_server(
    fresh_postgres_url: str, postgres_admin_url: str, log_signer: Ed25519Signer, tmp_path: Path
) -> Iterator[ServerHandle]:
    """A server on PostgreSQL whose reads may go to a standby (an empty database), metrics on."""
    with postgres_database(postgres_admin_url) as standby_url:
        handle = start_server_thread(
            fresh_postgres_url,
            log_signer,
            tmp_path,
            config_changes={"read_database_url": standby_url, "metrics_port": 0},
        )
        try:
            yield handle
        finally:
            handle.stop()


def _sample(server: ServerHandle, name: str, **labels: str) -> float | None:
    assert server.running.metrics is not None
    return server.running.metrics.registry.get_sample_value(name, labels)


def _checkpoint_size(server: ServerHandle) -> int:
    with server.channel("auditor", "standby-corruption") as channel:
        answer = pb_grpc.LedgerServiceStub(channel).GetCheckpoint(
            pb.GetCheckpointRequest(), timeout=30
        )
    return answer.tree_size


def test_a_corrupt_standby_is_confirmed_by_its_own_watch_and_bypassed_for_good(
    routed_server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    running = routed_server.running
    assert running.router is not None and running.router.standby is not None
    standby_watch = running.router.integrity
    assert standby_watch is not None and standby_watch.engine_name == "read standby"
    assert _sample(routed_server, "policy_ledger_standby_corrupt") == 0
    size = _checkpoint_size(routed_server)  # the primary answers (the standby is empty)
    asked: list[str] = []

    def corrupt(*arguments: Any) -> None:
        asked.append(str(arguments[2]))
        raise psycopg.errors.DataCorrupted("invalid page in block 3 of relation base/1/2")

    event.listen(running.router.standby, "before_cursor_execute", corrupt)
    try:
        with caplog.at_level(logging.CRITICAL, logger=INTEGRITY_LOG):
            assert _checkpoint_size(routed_server) == size  # answered by the primary
        assert standby_watch.corrupt and asked
        critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(critical) == 1
        assert "the read standby" in critical[0] and "Rebuild the standby" in critical[0]
        assert "invalid page in block 3" in critical[0]
        bypassed = "policy_ledger_standby_bypassed_total"
        assert _sample(routed_server, bypassed, reason="standby_corrupt") == 1
        assert _sample(routed_server, "policy_ledger_standby_corrupt") == 1

        # Bypassed for good: the next read asks the standby nothing.
        asked_before = len(asked)
        assert _checkpoint_size(routed_server) == size
        assert len(asked) == asked_before
        assert _sample(routed_server, bypassed, reason="standby_corrupt") == 2
    finally:
        event.remove(running.router.standby, "before_cursor_execute", corrupt)

    # The primary is not the standby: its watch saw nothing, health stays SERVING.
    assert running.integrity is not None and not running.integrity.corrupt
    assert _sample(routed_server, "policy_ledger_storage_corrupt") == 0
    with routed_server.channel("auditor", "standby-corruption") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
