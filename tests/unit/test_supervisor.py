"""The supervisor's parts that need no child of its own (ledger/rpc/supervisor.py): giving up on a
process that keeps dying, the metrics of several children under one endpoint, the children's
environments (extensions adjust them: tests/payments/test_notify_environment.py for the
payments'), and the relay of a corruption the sequencer process confirmed to every worker (the
workers here are ``cat``: what the supervisor writes on their stdin comes back on their stdout).
The processes themselves: tests/e2e/test_workers.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ledger import limits
from ledger.config import ServerConfig
from ledger.errors import InvalidArgument
from ledger.metrics import LedgerMetrics
from ledger.rpc import supervisor as supervisor_module
from ledger.rpc.children import read_supervisor
from ledger.rpc.supervisor import (
    CHILD_ENVIRONMENTS_GROUP,
    PROCESS_UP_SERIES,
    ChildEnvironments,
    Supervisor,
    _ChildrenCollector,
    _environments,
)
from ledger.storage.db import POOL_SHARE_ENVIRONMENT, PoolShare, sqlite_url


def test_a_process_that_keeps_dying_is_restarted_up_to_the_limit_then_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "process_restart_delay_seconds_max", 0.0)
    spawned: list[str] = []

    async def run() -> Supervisor:
        supervisor = Supervisor(ServerConfig(workers=1))

        async def spawn(child: supervisor_module._Child) -> None:
            # A process that exits at once, as one that crashes on start would.
            spawned.append(child.name)
            child.process = await asyncio.create_subprocess_exec("true")

        monkeypatch.setattr(supervisor, "_spawn", spawn)
        child = supervisor_module._Child("worker", "worker-1")
        supervisor._children.append(child)
        await spawn(child)
        supervisor._start_metrics(0)
        try:
            await supervisor._watch(child)
            samples = _scrape(supervisor)
        finally:
            supervisor._close()
        assert samples[("policy_ledger_worker_restarts_total", "worker")] == (
            limits.process_restarts_per_minute_max
        )
        assert samples[("policy_ledger_worker_restarts_total", "sequencer")] == 0
        return supervisor

    supervisor = asyncio.run(run())
    assert supervisor.gave_up.is_set()
    assert len(spawned) == 1 + limits.process_restarts_per_minute_max
    assert "worker-1 process died" in supervisor.why
    assert f"is {limits.process_restarts_per_minute_max}" in supervisor.why


def _scrape(supervisor: Supervisor) -> dict[tuple[str, str], float]:
    import urllib.request

    url = f"http://127.0.0.1:{supervisor.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode("utf-8")
    return {
        (sample.name, sample.labels.get("process", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.fixture
def two_children() -> Iterator[list[tuple[str, LedgerMetrics]]]:
    children = [("sequencer", LedgerMetrics()), ("worker-1", LedgerMetrics())]
    for _, metrics in children:
        metrics.serve("127.0.0.1", 0)
    yield children
    for _, metrics in children:
        metrics.stop()


def test_every_child_s_series_is_shown_once_with_a_process_label(
    two_children: list[tuple[str, LedgerMetrics]],
) -> None:
    (_, sequencer), (_, worker) = two_children
    sequencer.entries_appended.inc(7)
    sequencer.tree_size.set(12)
    worker.tree_size.set(11)
    endpoints = [(name, m.endpoint.port) for name, m in two_children if m.endpoint is not None]
    endpoints.append(("worker-2", 9))  # a child that does not answer is left out
    endpoints.append(("worker-3", 0))  # a child that is down (restarting) is not asked
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ChildrenCollector(lambda: endpoints))
    text = generate_latest(registry).decode("utf-8")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert text.count("# TYPE policy_ledger_tree_size gauge") == 1  # one family, two processes
    sizes = {s.labels["process"]: s.value for s in families["policy_ledger_tree_size"].samples}
    assert sizes == {"sequencer": 12, "worker-1": 11}
    appended = {
        s.labels["process"]: s.value
        for s in families["policy_ledger_entries_appended"].samples
        if s.name.endswith("_total")
    }
    assert appended == {"sequencer": 7, "worker-1": 0}
    # A child that does not answer, and one that is down (port 0), have no series but "up" 0.
    up = {s.labels["process"]: s.value for s in families[PROCESS_UP_SERIES].samples}
    assert up == {"sequencer": 1, "worker-1": 1, "worker-2": 0, "worker-3": 0}
    assert {
        family.name
        for family in families.values()
        for sample in family.samples
        if sample.labels.get("process") in {"worker-2", "worker-3"}
    } == {PROCESS_UP_SERIES}


class _Point:
    """An entry point of the child-environments group, already loaded."""

    def __init__(self, function: ChildEnvironments) -> None:
        self._function = function

    def load(self) -> ChildEnvironments:
        return self._function


def test_child_environment_functions_adjust_each_role_after_the_pool_shares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLICY_LEDGER_TEST_SHARED", "as set")
    given: list[tuple[dict[str, str], dict[str, str]]] = []

    def first(sequencer: dict[str, str], worker: dict[str, str]) -> None:
        given.append((dict(sequencer), dict(worker)))
        sequencer["POLICY_LEDGER_TEST_ONLY_SEQUENCER"] = "here"
        worker.pop("POLICY_LEDGER_TEST_SHARED")
        worker["POLICY_LEDGER_TEST_WHERE"] = "told"

    def second(sequencer: dict[str, str], worker: dict[str, str]) -> None:
        given.append((dict(sequencer), dict(worker)))  # after the first one's changes

    groups: list[str] = []

    def points(*, group: str) -> list[_Point]:
        groups.append(group)
        return [_Point(first), _Point(second)]

    monkeypatch.setattr(supervisor_module, "entry_points", points)
    environments = _environments(sequencer_pool=PoolShare(3, 1), worker_pool=PoolShare(2, 1))
    assert groups == [CHILD_ENVIRONMENTS_GROUP] == ["policy_ledger.child_environments"]
    (sequencer_given, worker_given), after_first = given
    # Each function sees the supervisor's environment with each role's pool share set.
    assert sequencer_given["POLICY_LEDGER_TEST_SHARED"] == worker_given["POLICY_LEDGER_TEST_SHARED"]
    assert sequencer_given[POOL_SHARE_ENVIRONMENT] == str(PoolShare(3, 1))
    assert worker_given[POOL_SHARE_ENVIRONMENT] == str(PoolShare(2, 1))
    assert after_first == (environments["sequencer"], environments["worker"])
    assert environments["sequencer"]["POLICY_LEDGER_TEST_ONLY_SEQUENCER"] == "here"
    assert environments["sequencer"]["POLICY_LEDGER_TEST_SHARED"] == "as set"
    assert "POLICY_LEDGER_TEST_ONLY_SEQUENCER" not in environments["worker"]
    assert "POLICY_LEDGER_TEST_SHARED" not in environments["worker"]
    assert environments["worker"]["POLICY_LEDGER_TEST_WHERE"] == "told"
    # The supervisor's own environment is not changed.
    assert os.environ["POLICY_LEDGER_TEST_SHARED"] == "as set"
    assert "POLICY_LEDGER_TEST_WHERE" not in os.environ


def test_workers_come_from_the_environment_default_to_the_cores_and_are_bounded() -> None:
    assert ServerConfig.from_environment({}).workers == min(os.cpu_count() or 1, 64)
    assert ServerConfig.from_environment({"POLICY_LEDGER_WORKERS": "3"}).workers == 3
    assert ServerConfig.from_environment({"POLICY_LEDGER_WORKERS": "0"}).workers == 0
    for bad in ("x", "-1", str(limits.workers_max + 1)):
        with pytest.raises(InvalidArgument) as refused:
            ServerConfig.from_environment({"POLICY_LEDGER_WORKERS": bad})
        assert refused.value.reason == "WORKERS_INVALID"


def test_serve_refuses_too_many_workers_before_opening_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from policy_ledger.cli import main

    database = tmp_path / "ledger.db"
    code = main(
        ["serve", "--database", sqlite_url(database), "--workers", str(limits.workers_max + 1)]
    )
    assert code == 2
    assert "workers must be 0 (one process) to 64" in capsys.readouterr().err
    assert not database.exists()


def test_a_corruption_the_sequencer_reports_is_relayed_to_every_worker_once(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        supervisor = Supervisor(ServerConfig(workers=3))
        supervisor._directory = tmp_path
        sequencer = supervisor_module._Child("sequencer", "sequencer")
        workers = [supervisor_module._Child("worker", f"worker-{n}") for n in (1, 2, 3)]
        restarted = supervisor_module._Child("worker", "worker-3")
        supervisor._children.extend([sequencer, *workers])
        for worker in workers:
            worker.process = await asyncio.create_subprocess_exec(
                "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        dead = workers[2].process
        assert dead is not None and dead.stdin is not None
        dead.stdin.close()
        await dead.wait()  # a worker that died: not written to, nothing raised
        try:
            reports = asyncio.StreamReader()
            reports.feed_data(b"connected 1\n")
            reports.feed_data(b"corrupt *** in database main *** Page 7: btreeInitPage\n")
            reports.feed_data(b"corrupt a second finding, after a restart\n")  # not relayed
            reports.feed_eof()
            # Before it: a worker, or the sequencer process, starts with no finding.
            assert len(supervisor._child_arguments(workers[0])) == 7
            assert len(supervisor._child_arguments(sequencer)) == 7
            await supervisor._read_reports(reports, sequencer)
            # A worker's line of that form is not the sequencer's confirmation.
            from_worker = asyncio.StreamReader()
            from_worker.feed_data(b"corrupt from a worker\n")
            from_worker.feed_eof()
            await supervisor._read_reports(from_worker, workers[0])
            assert supervisor.corruption == "*** in database main *** Page 7: btreeInitPage"
            for worker in workers[:2]:
                assert worker.process is not None and worker.process.stdin is not None
                worker.process.stdin.close()  # cat echoes what it was told, then ends
                assert worker.process.stdout is not None
                told = await worker.process.stdout.read()
                assert told == b"corrupt *** in database main *** Page 7: btreeInitPage\n"
            # A worker started after it (a restart) gets the finding as its last argument, which
            # it takes before it opens its port; so does a restarted sequencer process (before
            # it takes a submission), not left to confirm it again by its own writes.
            finding = "*** in database main *** Page 7: btreeInitPage"
            worker_arguments = supervisor._child_arguments(restarted)
            assert worker_arguments[3:5] == ["worker", "worker-3"]
            assert worker_arguments[5:] == [str(tmp_path), str(os.getpid()), finding]
            sequencer_arguments = supervisor._child_arguments(sequencer)
            assert sequencer_arguments[3:5] == ["sequencer", "sequencer"]
            assert sequencer_arguments[5:] == [str(tmp_path), str(os.getpid()), finding]
            # One confirmed while the process was being created is written on its stdin.
            restarted.process = await asyncio.create_subprocess_exec(
                "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            supervisor._tell_corruption(restarted)
            supervisor._tell_corruption(sequencer)  # not a worker: nothing to tell
            assert restarted.process.stdin is not None and restarted.process.stdout is not None
            restarted.process.stdin.close()
            assert await restarted.process.stdout.read() == (
                b"corrupt *** in database main *** Page 7: btreeInitPage\n"
            )
        finally:
            for worker in [*workers, restarted]:
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
                    await worker.process.wait()

    asyncio.run(run())


def test_a_worker_passes_the_supervisor_s_corrupt_lines_on_and_stops_at_the_end() -> None:
    told: list[str] = []
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as writing:
        writing.write(b"corrupt page 7: damaged\nsomething else\ncorrupt page 7: damaged\n")
    with os.fdopen(read_end, "rb") as reading:
        asyncio.run(read_supervisor(reading, told.append))
    # Each line as written (the watch takes the first; a second is no news to it).
    assert told == ["page 7: damaged", "page 7: damaged"]
