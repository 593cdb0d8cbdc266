"""``policy-ledger payments ...``: operator commands of the renewal payments.

Registered through the entry-point group ``policy_ledger.cli_commands`` (the ledger's CLI finds
it without importing payments). ``reconcile`` compares every unfinished payment and refund with
its gateway and repairs the difference: captured but not recorded -> recorded; declined ->
declined; stale pending or authorized -> voided; and prints what it did.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``payments`` command group."""
    payments = commands.add_parser("payments", help="renewal payments: reconcile")
    sub = payments.add_subparsers(dest="payments_command", required=True)
    reconcile = sub.add_parser(
        "reconcile",
        help="compare payments with their gateways and repair the difference",
        description=(
            "Compares every unfinished payment and refund with its gateway and repairs it:\n"
            "captured but not recorded -> recorded in the ledger (exactly once); declined ->\n"
            "declined; pending or authorized for longer than --stale-minutes -> voided.\n"
            "Configured like the server: POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY, _AUTHORITY_ID,\n"
            "_GATEWAYS (the simulated gateway keeps its state in the server's memory: reconcile\n"
            "from another process is for real gateways).\n\n"
            "Example:\n  policy-ledger payments reconcile --log-key var/log.key"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reconcile.add_argument("--database", help="SQLAlchemy URL (default: the server's)")
    reconcile.add_argument("--log-key", help="the log's signer key (default: the server's)")
    reconcile.add_argument("--stale-minutes", type=float, default=30.0)
    reconcile.set_defaults(handler=_reconcile)


def _reconcile(args: Any) -> int:
    from ledger.clock import SystemClock
    from ledger.config import ServerConfig, load_signer
    from ledger.storage.append import Appender
    from ledger.storage.db import create_ledger_engine
    from ledger.storage.key_store import KeyStore
    from ledger.storage.migrate import upgrade
    from payments.service import (
        AppenderRecorder,
        authority_signer_from_environment,
        renewals_from_environment,
    )

    defaults = ServerConfig.from_environment()
    configured = authority_signer_from_environment()
    if configured is None:
        print("error: POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY is not set", file=sys.stderr)
        return 2
    authority_id, authority = configured
    engine = create_ledger_engine(args.database or defaults.database_url)
    upgrade(engine)
    log_signer = load_signer(Path(args.log_key) if args.log_key else defaults.log_key_path)
    clock = SystemClock()
    appender = Appender(engine, log_signer, defaults.origin or log_signer.name)
    renewals = renewals_from_environment(
        engine, AppenderRecorder(appender, authority, clock, KeyStore(engine)), clock, authority_id
    )
    actions = renewals.reconcile(stale_after=dt.timedelta(minutes=args.stale_minutes))
    for action in actions:
        print(action)
    print(f"reconciled: {len(actions)} payment(s) or refund(s) looked at")
    return 0
