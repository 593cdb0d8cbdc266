"""The metrics listener (``serve --metrics-port``) is bounded like the verification page's:
connections at once (more are closed unanswered) and seconds a request may take
(:mod:`ledger.http_listener`)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from ledger import limits
from ledger.errors import FailedPrecondition
from ledger.http_listener import Listener
from ledger.metrics import MetricsEndpoint


@pytest.fixture
def endpoint() -> Iterator[MetricsEndpoint]:
    registry = CollectorRegistry(auto_describe=False)
    Counter("policy_ledger_probe", "A series for the test.", registry=registry).inc(3)
    served = MetricsEndpoint("127.0.0.1", 0, registry)
    try:
        yield served
    finally:
        served.stop()


def _scrape(port: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_the_registry_is_served(endpoint: MetricsEndpoint) -> None:
    status, text = _scrape(endpoint.port)
    assert status == 200
    assert "policy_ledger_probe_total 3.0" in text


def test_connections_over_the_cap_are_closed_unanswered(endpoint: MetricsEndpoint) -> None:
    held = [
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=30)
        for _ in range(limits.metrics_connections_max)
    ]
    try:
        for connection in held:  # each has its thread (a byte sent: it is being read)
            connection.sendall(b"G")
        extra = socket.create_connection(("127.0.0.1", endpoint.port), timeout=30)
        with extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(100) == b""  # closed, unanswered
    finally:
        for connection in held:
            connection.close()


def test_a_slot_is_given_back_when_its_connection_ends(endpoint: MetricsEndpoint) -> None:
    # As many scrapes one after another as there are slots, twice: none keeps its slot.
    for _ in range(2 * limits.metrics_connections_max):
        assert _scrape(endpoint.port)[0] == 200


def test_a_silent_connection_is_closed_after_the_request_timeout(
    endpoint: MetricsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler's timeout is the named limit; a short one here so that the close comes soon.
    handler = endpoint.server.RequestHandlerClass  # type: ignore[attr-defined]
    assert handler.timeout == limits.metrics_request_seconds_max
    monkeypatch.setattr(handler, "timeout", 0.2)
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as silent:
        silent.sendall(b"GET /metr")  # never finished
        assert silent.recv(100) == b""  # closed by the listener, not by this test's timeout
    assert _scrape(endpoint.port)[0] == 200  # and its slot is free again


def test_a_port_in_use_is_refused(endpoint: MetricsEndpoint) -> None:
    with pytest.raises(FailedPrecondition, match="--metrics-port") as refused:
        MetricsEndpoint("127.0.0.1", endpoint.port, CollectorRegistry())
    assert refused.value.details.reason == "ADDRESS_IN_USE"


def test_an_ipv6_host_is_listened_on() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        served = MetricsEndpoint("::1", 0, CollectorRegistry())
    except OSError as error:  # the loopback may have no IPv6 address here
        pytest.skip(f"cannot listen on ::1 here: {error}")
    try:
        connection = http.client.HTTPConnection("::1", served.port, timeout=30)
        connection.request("GET", "/metrics")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        served.stop()


def test_a_listener_is_stopped_and_its_port_closed() -> None:
    served = MetricsEndpoint("127.0.0.1", 0, CollectorRegistry())
    port = served.port
    served.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=30).close()
    assert isinstance(served, Listener)
