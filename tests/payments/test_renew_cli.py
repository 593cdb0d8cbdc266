"""``policy-ledger renew`` prints the payment id on every outcome once a payment exists
(refusals after capture included) and the next command to run."""

from __future__ import annotations

import argparse

import grpc
import pytest

from clients.cli_portal import _renew_outcome, _renew_refused
from clients.errors import ClientError
from payments.v1 import renewal_service_pb2 as pb

ARGS = argparse.Namespace(server="127.0.0.1:50051", log_key="@log.pub")


@pytest.mark.parametrize(
    ("state", "code", "next_words"),
    [
        (pb.PAYMENT_STATE_RECORDED, 0, "nothing: the fee is recorded"),
        (pb.PAYMENT_STATE_PENDING, 0, "--complete pay123"),
        (pb.PAYMENT_STATE_RETURNED, 1, "refunded in full"),
        (pb.PAYMENT_STATE_RETURNING, 1, "--complete pay123"),
        (pb.PAYMENT_STATE_UNKNOWN, 1, "--complete pay123"),
        (pb.PAYMENT_STATE_RECORDING, 1, "--complete pay123"),
        (pb.PAYMENT_STATE_CAPTURED, 1, "--complete pay123"),
        (pb.PAYMENT_STATE_DECLINED, 1, "nothing was charged"),
    ],
)
def test_every_outcome_names_the_payment_and_the_next_command(
    capsys: pytest.CaptureFixture[str], state: int, code: int, next_words: str
) -> None:
    payment = pb.Payment(payment_id="pay123", state=state, message="why it is so")  # type: ignore[arg-type]
    assert _renew_outcome(ARGS, payment) == code
    out = capsys.readouterr().out
    assert out.startswith("payment pay123: ")
    [next_line] = [line for line in out.splitlines() if "next:" in line]
    assert next_words in next_line


class _NoClient:
    def get(self, **_: str) -> pb.GetRenewalResponse:
        raise AssertionError("the payment id came with the error")


def test_a_refusal_after_capture_names_the_payment_and_how_to_finish_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = ClientError(
        code=grpc.StatusCode.UNAVAILABLE,
        message="the fee was captured but could not be recorded yet",
        reason="RECORD_PENDING",
        metadata={"payment_id": "pay777"},
    )
    assert _renew_refused(ARGS, _NoClient(), error, "", "q-1") == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT FINISHED: UNAVAILABLE RECORD_PENDING")  # not a refusal
    assert "payment pay777" in out
    assert (
        "next: policy-ledger renew --server 127.0.0.1:50051 --log-key KEY --complete pay777" in out
    )


def test_a_refusal_before_any_payment_says_nothing_was_charged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class NoPayment:
        def get(self, **_: str) -> pb.GetRenewalResponse:
            return pb.GetRenewalResponse()

    error = ClientError(
        code=grpc.StatusCode.FAILED_PRECONDITION, message="already covers", reason="DOUBLE_COVERAGE"
    )
    assert _renew_refused(ARGS, NoPayment(), error, "", "q-1") == 1
    out = capsys.readouterr().out
    assert "nothing was charged" in out and "pay" not in out.replace("payment was", "")
