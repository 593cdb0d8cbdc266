"""Where the gateway-notification receiver runs under ``serve --workers N``
(payments/notifications.py ``place_receiver``, the ledger supervisor's
``policy_ledger.child_environments`` entry point): in the sequencer process, on one port; the
workers are told its URL."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from ledger.rpc.supervisor import CHILD_ENVIRONMENTS_GROUP, _environments
from payments.notifications import (
    NOTIFY_LISTEN_ENVIRONMENT,
    NOTIFY_URL_ENVIRONMENT,
    place_receiver,
)


def test_a_port_0_is_picked_once_for_the_sequencer_and_the_workers_are_told_its_url() -> None:
    sequencer = {NOTIFY_LISTEN_ENVIRONMENT: "127.0.0.1:0", "OTHER": "kept"}
    worker = dict(sequencer)
    place_receiver(sequencer, worker)
    listen = sequencer[NOTIFY_LISTEN_ENVIRONMENT]
    host, _, port = listen.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0  # a concrete port
    assert worker == {NOTIFY_URL_ENVIRONMENT: f"http://{listen}", "OTHER": "kept"}
    assert sequencer == {NOTIFY_LISTEN_ENVIRONMENT: listen, "OTHER": "kept"}


def test_a_given_port_is_kept_and_a_host_left_out_is_the_loopback_in_the_url() -> None:
    sequencer, worker = {NOTIFY_LISTEN_ENVIRONMENT: ":8471"}, {NOTIFY_LISTEN_ENVIRONMENT: ":8471"}
    place_receiver(sequencer, worker)
    assert sequencer == {NOTIFY_LISTEN_ENVIRONMENT: ":8471"}
    assert worker == {NOTIFY_URL_ENVIRONMENT: "http://127.0.0.1:8471"}


def test_a_public_url_that_is_set_is_what_the_workers_keep() -> None:
    configured = {
        NOTIFY_LISTEN_ENVIRONMENT: "0.0.0.0:8471",
        NOTIFY_URL_ENVIRONMENT: "https://pay.example/gateway",
    }
    sequencer, worker = dict(configured), dict(configured)
    place_receiver(sequencer, worker)
    assert sequencer == configured
    assert worker == {NOTIFY_URL_ENVIRONMENT: "https://pay.example/gateway"}


def test_without_a_receiver_nothing_changes() -> None:
    for environment in ({}, {NOTIFY_LISTEN_ENVIRONMENT: ""}, {NOTIFY_URL_ENVIRONMENT: "http://x"}):
        sequencer, worker = dict(environment), dict(environment)
        place_receiver(sequencer, worker)
        assert sequencer == worker == environment


def test_the_supervisor_runs_it_through_the_installed_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyproject.toml registers it (a venv installed before it did lacks it: reinstall)."""
    registered = {point.value for point in entry_points(group=CHILD_ENVIRONMENTS_GROUP)}
    assert "payments.notifications:place_receiver" in registered
    monkeypatch.setenv(NOTIFY_LISTEN_ENVIRONMENT, "127.0.0.1:0")
    monkeypatch.delenv(NOTIFY_URL_ENVIRONMENT, raising=False)
    environments = _environments()
    listen = environments["sequencer"][NOTIFY_LISTEN_ENVIRONMENT]
    assert int(listen.rpartition(":")[2]) > 0
    assert NOTIFY_LISTEN_ENVIRONMENT not in environments["worker"]
    assert environments["worker"][NOTIFY_URL_ENVIRONMENT] == f"http://{listen}"
    monkeypatch.delenv(NOTIFY_LISTEN_ENVIRONMENT)
    plain = _environments()
    assert NOTIFY_URL_ENVIRONMENT not in plain["worker"]
    assert NOTIFY_LISTEN_ENVIRONMENT not in plain["sequencer"]
