"""The simulated gateway's fault plan: determinism, unknown outcomes, notification delivery."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.gateway import (
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
    Notification,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
    load_gateway,
)
from payments.gateways.simulated import (
    DEFAULT_HMAC_KEY,
    SIGNATURE_HEADER,
    FaultPlan,
    SimulatedGateway,
    from_settings,
)

FEE = 10_000
"""KWD 10.000 in fils."""


def _request(reference: str, amount_minor: int = FEE) -> PaymentRequest:
    return PaymentRequest(reference, Money("KWD", amount_minor), "health-insurance fee")


def _outcome(call: object) -> str:
    """What a call did, as text (a status or the exception's name)."""
    try:
        result = call()  # type: ignore[operator]
    except (GatewayOutcomeUnknown, GatewayRefused) as error:
        return type(error).__name__
    assert isinstance(result, GatewayResult)
    return f"{result.status.value}:{result.captured_minor}:{result.refunded_minor}"


def _script(gateway: SimulatedGateway) -> list[str]:
    """A fixed sequence of calls; their outcomes depend only on the seed and the plan."""
    outcomes = []
    for number in range(40):
        reference = f"ref{number % 15}"
        outcomes.append(_outcome(lambda r=reference: gateway.purchase(_request(r))))
        outcomes.append(
            _outcome(
                lambda r=reference, n=number: gateway.refund(r, Money("KWD", 1_000), f"rf{n % 7}")
            )
        )
    return outcomes


FAULTY = FaultPlan(
    decline_rate=0.2,
    timeout_rate=0.3,
    timeout_applied_rate=0.5,
    duplicate_rate=0.3,
    lose_rate=0.2,
    reorder=True,
)


def _delivered(gateway: SimulatedGateway) -> list[tuple[str, str]]:
    return [
        (n.merchant_reference, n.result.raw["sequence"] if n.result else "")
        for n in gateway.drain_notifications()
    ]


# -- determinism ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_faults() -> None:
    first, second = SimulatedGateway(FAULTY, seed=42), SimulatedGateway(FAULTY, seed=42)
    assert _script(first) == _script(second)
    assert _delivered(first) == _delivered(second)
    assert first.snapshot() == second.snapshot()
    assert first.calls == second.calls
    assert first.applied == second.applied


def test_another_seed_gives_other_faults() -> None:
    assert _script(SimulatedGateway(FAULTY, seed=1)) != _script(SimulatedGateway(FAULTY, seed=2))


def test_a_fault_free_plan_never_faults() -> None:
    outcomes = _script(SimulatedGateway(seed=3))
    assert "GatewayOutcomeUnknown" not in outcomes
    assert not any(outcome.startswith("declined") for outcome in outcomes)


def test_rates_are_roughly_honoured() -> None:
    gateway = SimulatedGateway(FaultPlan(decline_rate=0.25, timeout_rate=0.1), seed=5)
    outcomes = Counter(
        _outcome(lambda n=n: gateway.purchase(_request(f"r{n}"))) for n in range(2000)
    )
    timeouts = outcomes["GatewayOutcomeUnknown"]
    declined = outcomes["declined:0:0"]
    assert 120 < timeouts < 280, outcomes
    assert 0.18 < declined / (2000 - timeouts) < 0.32, outcomes


def test_fault_plan_refuses_rates_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="decline_rate"):
        FaultPlan(decline_rate=1.5)
    with pytest.raises(ValueError, match="lose_rate"):
        FaultPlan(lose_rate=-0.1)
    with pytest.raises(ValueError, match="latency_seconds"):
        FaultPlan(latency_seconds=-1)


# -- timeouts: applied or not, only get_status tells ---------------------------------------------


def test_a_timeout_that_applied_shows_in_get_status() -> None:
    gateway = SimulatedGateway(FaultPlan(timeout_rate=1.0, timeout_applied_rate=1.0))
    with pytest.raises(GatewayOutcomeUnknown, match="applied"):
        gateway.purchase(_request("t1"))
    status = gateway.get_status("t1")
    assert status.status is PaymentStatus.CAPTURED
    assert status.captured_minor == FEE
    assert gateway.calls["purchase"] == 1
    assert gateway.applied["purchase"] == 1


def test_a_timeout_that_did_not_apply_leaves_nothing() -> None:
    gateway = SimulatedGateway(FaultPlan(timeout_rate=1.0, timeout_applied_rate=0.0))
    with pytest.raises(GatewayOutcomeUnknown, match="not applied"):
        gateway.purchase(_request("t2"))
    assert gateway.get_status("t2").status is PaymentStatus.NOT_FOUND
    assert gateway.applied["purchase"] == 0
    assert gateway.drain_notifications() == []


def test_retrying_after_unknown_outcomes_charges_exactly_once() -> None:
    gateway = SimulatedGateway(FaultPlan(timeout_rate=0.6, timeout_applied_rate=0.5), seed=11)
    for _attempt in range(50):
        try:
            gateway.purchase(_request("retry"))
            break
        except GatewayOutcomeUnknown:
            continue
    assert gateway.get_status("retry").captured_minor == FEE
    assert gateway.applied["purchase"] == 1
    assert gateway.calls["purchase"] > 1


def test_injected_unknown_outcome_is_one_shot() -> None:
    gateway = SimulatedGateway()
    gateway.inject_outcome_unknown(True)
    with pytest.raises(GatewayOutcomeUnknown):
        gateway.authorize(_request("inj"))
    assert gateway.get_status("inj").status is PaymentStatus.AUTHORIZED
    gateway.inject_outcome_unknown(False)
    with pytest.raises(GatewayOutcomeUnknown):
        gateway.capture("inj", Money("KWD", FEE))
    assert gateway.get_status("inj").status is PaymentStatus.AUTHORIZED
    assert gateway.capture("inj", Money("KWD", FEE)).status is PaymentStatus.CAPTURED
    assert gateway.capture("inj", Money("KWD", FEE)).captured_minor == FEE
    assert gateway.applied["capture"] == 1, "captured exactly once"
    assert gateway.calls["capture"] == 3


def test_get_status_is_never_faulted() -> None:
    gateway = SimulatedGateway(FaultPlan(timeout_rate=1.0))
    for _ in range(20):
        assert gateway.get_status("never").status is PaymentStatus.NOT_FOUND


def test_latency_is_spent_on_every_call() -> None:
    gateway = SimulatedGateway(FaultPlan(latency_seconds=0.02))
    started = time.monotonic()
    gateway.purchase(_request("slow"))
    gateway.get_status("slow")
    assert time.monotonic() - started >= 0.04


# -- the ledger's rules ----------------------------------------------------------------------------


def test_a_reference_reused_with_another_amount_is_refused() -> None:
    gateway = SimulatedGateway()
    gateway.purchase(_request("same"))
    with pytest.raises(GatewayRefused):
        gateway.purchase(_request("same", FEE + 1))
    with pytest.raises(GatewayRefused):
        gateway.purchase(PaymentRequest("same", Money("SAR", FEE), "other currency"))
    assert gateway.applied["purchase"] == 1


def test_a_declined_reference_stays_declined() -> None:
    gateway = SimulatedGateway(FaultPlan(declined_references=frozenset({"no"})))
    assert gateway.purchase(_request("no")).status is PaymentStatus.DECLINED
    assert gateway.purchase(_request("no")).status is PaymentStatus.DECLINED
    with pytest.raises(GatewayRefused):
        gateway.refund("no", Money("KWD", 1), "rfno")


def test_a_refund_reference_belongs_to_one_payment_and_one_amount() -> None:
    gateway = SimulatedGateway()
    gateway.purchase(_request("a"))
    gateway.purchase(_request("b"))
    gateway.refund("a", Money("KWD", 100), "rf1")
    with pytest.raises(GatewayRefused):
        gateway.refund("b", Money("KWD", 100), "rf1")
    with pytest.raises(GatewayRefused):
        gateway.refund("a", Money("KWD", 200), "rf1")
    assert gateway.get_status("a").refunded_minor == 100
    assert gateway.get_status("b").refunded_minor == 0


def test_concurrent_purchases_of_one_reference_charge_once() -> None:
    gateway = SimulatedGateway(FaultPlan(latency_seconds=0.001))
    barrier = threading.Barrier(8)
    results: list[GatewayResult] = []

    def buy() -> None:
        barrier.wait()
        results.append(gateway.purchase(_request("race")))

    threads = [threading.Thread(target=buy) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gateway.applied["purchase"] == 1
    assert {r.gateway_reference for r in results} == {gateway.get_status("race").gateway_reference}


def test_concurrent_refunds_never_exceed_the_capture() -> None:
    gateway = SimulatedGateway()
    gateway.purchase(_request("many"))
    barrier = threading.Barrier(12)

    def refund(number: int) -> None:
        barrier.wait()
        with contextlib.suppress(GatewayRefused):
            gateway.refund("many", Money("KWD", 1_000), f"rf{number}")

    threads = [threading.Thread(target=refund, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gateway.get_status("many").refunded_minor == FEE
    assert gateway.applied["refund"] == 10


# -- notifications -------------------------------------------------------------------------------


def _changes(gateway: SimulatedGateway, count: int) -> None:
    for number in range(count):
        gateway.purchase(_request(f"n{number}"))


def test_every_state_change_is_notified_in_order_without_faults() -> None:
    gateway = SimulatedGateway()
    gateway.authorize(_request("flow"))
    gateway.capture("flow", Money("KWD", FEE))
    gateway.refund("flow", Money("KWD", 500), "rfflow")
    gateway.refund("flow", Money("KWD", 500), "rfflow")  # repeated: no change, no notification
    drained = gateway.drain_notifications()
    assert [n.result.status if n.result else None for n in drained] == [
        PaymentStatus.AUTHORIZED,
        PaymentStatus.CAPTURED,
        PaymentStatus.CAPTURED,
    ]
    assert [n.result.raw["sequence"] if n.result else "" for n in drained] == ["1", "2", "3"]
    assert all(n.verified and n.acknowledgement == b"OK" for n in drained)
    assert gateway.drain_notifications() == []


def test_duplicates() -> None:
    gateway = SimulatedGateway(FaultPlan(duplicate_rate=1.0), seed=1)
    _changes(gateway, 5)
    drained = gateway.drain_notifications()
    assert len(drained) == 10
    assert Counter(n.merchant_reference for n in drained) == {f"n{i}": 2 for i in range(5)}


def test_loss() -> None:
    lossless, lossy = SimulatedGateway(), SimulatedGateway(FaultPlan(lose_rate=1.0))
    _changes(lossless, 5)
    _changes(lossy, 5)
    assert len(lossless.drain_notifications()) == 5
    assert lossy.drain_notifications() == []
    partly = SimulatedGateway(FaultPlan(lose_rate=0.5), seed=9)
    _changes(partly, 200)
    assert 60 < len(partly.drain_notifications()) < 140


def test_reordering_keeps_every_notification() -> None:
    gateway = SimulatedGateway(FaultPlan(reorder=True), seed=4)
    _changes(gateway, 30)
    drained = gateway.drain_notifications()
    references = [n.merchant_reference for n in drained]
    assert sorted(references) == sorted(f"n{i}" for i in range(30))
    assert references != [f"n{i}" for i in range(30)]


def test_notification_bytes_round_trip_and_forgery() -> None:
    gateway = SimulatedGateway()
    gateway.purchase(_request("wire"))
    (notification,) = gateway.drain_notifications()
    body, headers = gateway.notification_bytes(notification)
    parsed = gateway.parse_notification(body, headers)
    assert parsed == Notification(
        merchant_reference="wire",
        verified=True,
        result=notification.result,
        acknowledgement=b"OK",
    )
    lowercase = {key.lower(): value for key, value in headers.items()}
    assert gateway.parse_notification(body, lowercase).verified
    unsigned = gateway.parse_notification(body, {})
    assert (unsigned.verified, unsigned.result, unsigned.merchant_reference) == (
        False,
        None,
        "wire",
    )
    forged = body.replace(b'"captured_minor":10000', b'"captured_minor":99999')
    assert forged != body
    assert not gateway.parse_notification(forged, headers).verified
    other_key = SimulatedGateway(hmac_key="another key")
    assert not other_key.parse_notification(body, headers).verified
    garbage = gateway.parse_notification(b"\xff not json", {SIGNATURE_HEADER: "00"})
    assert (garbage.verified, garbage.result, garbage.merchant_reference) == (False, None, "")


def test_a_signed_body_that_is_not_a_result_is_only_a_hint() -> None:
    gateway = SimulatedGateway()
    body = b'{"merchant_reference": "odd", "status": "no such status"}'
    headers = {
        SIGNATURE_HEADER: hmac.new(DEFAULT_HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    }
    parsed = gateway.parse_notification(body, headers)
    assert (parsed.verified, parsed.result, parsed.merchant_reference) == (False, None, "odd")


# -- settings -------------------------------------------------------------------------------------


def test_from_settings_defaults_to_no_faults() -> None:
    gateway = from_settings({})
    assert gateway.plan == FaultPlan()
    assert gateway.seed == 0
    assert isinstance(gateway, PaymentGateway)
    body, headers = gateway.notification_bytes(
        Notification("x", True, gateway.purchase(_request("x")), b"OK")
    )
    assert SimulatedGateway(hmac_key=DEFAULT_HMAC_KEY).parse_notification(body, headers).verified


def test_from_settings_reads_every_knob() -> None:
    gateway = from_settings(
        {
            "seed": "17",
            "decline_rate": "0.1",
            "timeout_rate": "0.2",
            "timeout_applied_rate": "0.3",
            "duplicate_rate": "0.4",
            "lose_rate": "0.05",
            "reorder": "true",
            "latency_seconds": "0.05",
            "declined_references": "a, b",
            "hmac_key": "k",
        }
    )
    assert gateway.seed == 17
    assert gateway.plan == FaultPlan(
        decline_rate=0.1,
        timeout_rate=0.2,
        timeout_applied_rate=0.3,
        duplicate_rate=0.4,
        lose_rate=0.05,
        reorder=True,
        latency_seconds=0.05,
        declined_references=frozenset({"a", "b"}),
    )
    with pytest.raises(ValueError, match="timeout_rate"):
        from_settings({"timeout_rate": "2"})


def test_the_entry_point_builds_a_simulated_gateway() -> None:
    gateway = load_gateway("simulated", {"seed": "3"})
    assert isinstance(gateway, SimulatedGateway)
    assert gateway.name == "simulated"


# -- the property: refunds never exceed captures ----------------------------------------------


_references = st.sampled_from(["p0", "p1", "p2"])
_refund_references = st.sampled_from([f"rf{n}" for n in range(6)])
_amounts = st.integers(min_value=-5, max_value=FEE + 5)
_operations = st.one_of(
    st.tuples(st.just("purchase"), _references, _amounts, st.just("")),
    st.tuples(st.just("authorize"), _references, _amounts, st.just("")),
    st.tuples(st.just("capture"), _references, _amounts, st.just("")),
    st.tuples(st.just("void"), _references, st.just(0), st.just("")),
    st.tuples(st.just("refund"), _references, _amounts, _refund_references),
)


def _apply(gateway: SimulatedGateway, operation: tuple[str, str, int, str]) -> None:
    name, reference, amount, refund_reference = operation
    money = Money("KWD", amount)
    calls = {
        "purchase": lambda: gateway.purchase(_request(reference, amount)),
        "authorize": lambda: gateway.authorize(_request(reference, amount)),
        "capture": lambda: gateway.capture(reference, money),
        "void": lambda: gateway.void(reference),
        "refund": lambda: gateway.refund(reference, money, refund_reference),
    }
    with contextlib.suppress(GatewayOutcomeUnknown, GatewayRefused):
        calls[name]()


def _check_invariants(gateway: SimulatedGateway) -> None:
    for result in gateway.snapshot().values():
        assert 0 <= result.refunded_minor <= result.captured_minor <= result.authorized_minor
        if result.status is not PaymentStatus.CAPTURED:
            assert result.captured_minor == 0
            assert result.refunded_minor == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=st.lists(_operations, max_size=40),
    seed=st.integers(min_value=0, max_value=2**32),
    timeout_rate=st.sampled_from([0.0, 0.3, 1.0]),
    decline_rate=st.sampled_from([0.0, 0.3]),
)
def test_refunded_never_exceeds_captured(
    operations: list[tuple[str, str, int, str]],
    seed: int,
    timeout_rate: float,
    decline_rate: float,
) -> None:
    plan = FaultPlan(decline_rate=decline_rate, timeout_rate=timeout_rate)
    gateway = SimulatedGateway(plan, seed=seed)
    for operation in operations:
        _apply(gateway, operation)
        _check_invariants(gateway)
    # The faults stop; every refund is sent again, twice: the first replay may apply refunds
    # that had timed out before they applied, the second changes nothing at all.
    gateway.plan = FaultPlan()
    for _replay in range(2):
        before, refunds_before = gateway.snapshot(), gateway.applied["refund"]
        for operation in operations:
            if operation[0] == "refund":
                _apply(gateway, operation)
        _check_invariants(gateway)
    assert gateway.snapshot() == before
    assert gateway.applied["refund"] == refunds_before
