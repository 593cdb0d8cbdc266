"""Opt-in measurement of what each test leaves behind in the test process (POLICY_LEDGER_LEAKS=1).

Records, per test, the growth of this process's open descriptors (/proc/self/fd) and live
threads across its setup, call and teardown, and prints the worst files and tests at the end
of the run with the totals. Run it in one process to see one process's whole story::

    POLICY_LEDGER_LEAKS=1 .venv/bin/pytest -n 0 -p tests.leaks tests/e2e
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Generator
from pathlib import Path

import pytest


def open_descriptors() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def descriptor_targets() -> list[str]:
    """What each of this process's descriptors refers to (a path, ``socket:[...]``, ...)."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
    return targets


def descriptor_kinds() -> collections.Counter[str]:
    """This process's descriptors by kind (socket, pipe, anon_inode:..., or the file's path)."""
    return collections.Counter(
        target.split(":[", 1)[0] if ":[" in target else target for target in descriptor_targets()
    )


def open_files_under(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open."""
    return [target for target in descriptor_targets() if target.startswith(f"{folder}{os.sep}")]


class _Leaks:
    """The plugin: each test's growth, and the process's at the end against its start."""

    def __init__(self) -> None:
        self.by_test: dict[str, tuple[int, int]] = {}
        self.start = (open_descriptors(), threading.active_count())
        self.kinds_start = descriptor_kinds()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None]:
        before = (open_descriptors(), threading.active_count())
        yield
        after = (open_descriptors(), threading.active_count())
        self.by_test[item.nodeid] = (after[0] - before[0], after[1] - before[1])

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        write = terminalreporter.write_line
        end = (open_descriptors(), threading.active_count())
        write("")
        write(
            f"leaks: descriptors {self.start[0]} -> {end[0]}, threads {self.start[1]} -> {end[1]}"
            f" over {len(self.by_test)} tests"
        )
        by_file: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for nodeid, (fds, threads) in self.by_test.items():
            totals = by_file[nodeid.split("::", 1)[0]]
            totals[0] += fds
            totals[1] += threads
        write("leaks by file (descriptors, threads):")
        for path, (fds, threads) in sorted(by_file.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))[
            :25
        ]:
            if fds or threads:
                write(f"  {fds:+5d} {threads:+4d}  {path}")
        write("leaks by test (descriptors, threads):")
        for nodeid, (fds, threads) in sorted(
            self.by_test.items(), key=lambda kv: (-kv[1][0], -kv[1][1])
        )[:25]:
            if fds or threads:
                write(f"  {fds:+5d} {threads:+4d}  {nodeid}")
        kinds = descriptor_kinds()
        kinds.subtract(self.kinds_start)
        write("descriptors gained by kind:")
        for kind, count in kinds.most_common(15):
            if count:
                write(f"  {count:+5d}  {kind}")
        names = collections.Counter(
            thread.name.rstrip("0123456789_-") for thread in threading.enumerate()
        )
        write(f"threads alive: {dict(names)}")


def pytest_configure(config: pytest.Config) -> None:
    """Measure only when asked: the listing of /proc/self/fd per test costs little, but it is
    output nobody asked for."""
    if os.environ.get("POLICY_LEDGER_LEAKS") == "1":
        config.pluginmanager.register(_Leaks(), "policy-ledger-leaks")
