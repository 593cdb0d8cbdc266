"""`policy-ledger payments reconcile` as an operator runs it: a separate process, a gateway
reached over HTTP (the KNET sandbox), a payment whose result the server never heard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ledger.signing import format_signer_key
from payments.gateways.knet import from_settings
from payments.sandbox.knet import KnetSandbox
from tests.payments.support import AUTHORITY, Stack, family_request

KEY = "0123456789ABCDEF"
CLI = [sys.executable, "-m", "policy_ledger.cli", "payments", "reconcile"]


@pytest.mark.parametrize(
    ("reverse_unacknowledged", "expected"),
    [
        (False, "recorded"),  # KNET before Sept 2023: the capture stands
        (True, "declined"),  # KNET since: an unacknowledged capture is reversed
    ],
)
def test_reconcile_resolves_a_payment_whose_result_was_lost(
    tmp_path: Path, reverse_unacknowledged: bool, expected: str
) -> None:
    sandbox = KnetSandbox(
        tranportal_id="123456",
        password="sandbox-pass",
        resource_key=KEY,
        reverse_unacknowledged=reverse_unacknowledged,
    )
    sandbox.start()
    try:
        settings = sandbox.settings("https://portal.example/receipt")
        stack = Stack(tmp_path, gateways={"knet": from_settings(settings)})
        stack.renewals.notification_base_url = "http://127.0.0.1:9"  # never reached: dropped
        quote = stack.renewals.quote(family_request(3, 2))
        payment = stack.renewals.start_payment(quote.quote_id, "cli-key-0001", "knet")
        with urllib.request.urlopen(payment.redirect_url, timeout=60):
            pass
        sandbox.drop_next_notification()  # the customer paid; the result never reaches us
        sandbox.pay(payment.payment_id, "CAPTURED")
        assert stack.renewals.get_payment(payment.payment_id).state == "pending"
        (tmp_path / "authority.key").write_text(format_signer_key(stack.authority) + "\n")
        (tmp_path / "log.key").write_text(format_signer_key(stack.log_signer) + "\n")
        (tmp_path / "gateways.json").write_text(json.dumps({"knet": settings}))
        environment = {
            **os.environ,
            "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY": str(tmp_path / "authority.key"),
            "POLICY_LEDGER_PAYMENTS_AUTHORITY_ID": AUTHORITY,
            "POLICY_LEDGER_PAYMENTS_GATEWAYS": str(tmp_path / "gateways.json"),
        }
        command = [
            *CLI,
            "--database",
            f"sqlite+pysqlite:///{tmp_path / 'ledger.db'}",
            "--log-key-file",
            str(tmp_path / "log.key"),
            "--stale-minutes",
            "0",
        ]
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=environment, check=False
        )
        assert run.returncode == 0, run.stderr
        assert f"{payment.payment_id}: pending -> {expected}; gateway said" in run.stdout
        resolved = stack.renewals.get_payment(payment.payment_id)
        assert resolved.state == expected
        assert (resolved.leaf_index is not None) == (expected == "recorded")
        again = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=environment, check=False
        )
        assert "reconciled: 0 payment(s)" in again.stdout  # nothing left to do
    finally:
        sandbox.stop()


def test_reconcile_without_an_authority_key_says_what_is_missing(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLICY_LEDGER_PAY")}
    run = subprocess.run(
        CLI, capture_output=True, text=True, timeout=60, env=environment, check=False
    )
    assert run.returncode == 2
    assert "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY" in run.stderr


def test_reconcile_lists_a_stuck_payment_in_json_and_exits_1(tmp_path: Path) -> None:
    """A payment captured by a gateway this process cannot see (the simulated gateway's state
    died with the server): reconcile lists it, says the gateway does not know it, exits 1."""
    from payments.renewal import Crash

    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(5, 2))

    def crash() -> None:
        raise Crash("after_captured_saved")

    stack.at_point["after_captured_saved"] = crash
    with pytest.raises(Crash):
        stack.renewals.start_payment(quote.quote_id, "cli-key-stuck", "simulated")
    payment_id, _ = stack.renewals.ids_of(quote_id=quote.quote_id)
    (tmp_path / "authority.key").write_text(format_signer_key(stack.authority) + "\n")
    (tmp_path / "log.key").write_text(format_signer_key(stack.log_signer) + "\n")
    environment = {
        **os.environ,
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY": str(tmp_path / "authority.key"),
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_ID": AUTHORITY,
    }
    environment.pop("POLICY_LEDGER_PAYMENTS_GATEWAYS", None)
    run = subprocess.run(
        [
            *CLI,
            "--database",
            f"sqlite+pysqlite:///{tmp_path / 'ledger.db'}",
            "--log-key-file",
            str(tmp_path / "log.key"),
            "--stale-minutes",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["needs_person"] == 1
    [item] = report["looked_at"]
    assert item | {"action": ""} == {
        "kind": "payment",
        "id": payment_id,
        "before": "recording",
        "after": "recording",
        "gateway_said": "not_found",
        "action": "",
        "needs_person": True,
    }
    assert "needs a person" in item["action"]
