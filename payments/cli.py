"""``policy-ledger payments ...``: operator commands of the renewal payments.

Registered through the entry-point group ``policy_ledger.cli_commands`` (the command line,
``policy_ledger.cli``, finds it without importing payments). ``reconcile`` compares every
unfinished payment and refund with its gateway and repairs the difference (see its ``--help``),
and prints everything it looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from ledger.cli_flags import add_log_key_file

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``payments`` command group."""
    payments = commands.add_parser("payments", help="renewal payments: reconcile")
    sub = payments.add_subparsers(dest="payments_command", required=True)
    reconcile = sub.add_parser(
        "reconcile",
        help="compare payments with their gateways and repair the difference",
        description=(
            "Looks at every unfinished payment (started, pending, authorized, unknown, captured,\n"
            "recording, returning, mismatch) and every refund in flight last changed more than\n"
            "--stale-minutes ago (the only filter), asks its gateway, and repairs it: captured\n"
            "-> recorded in the ledger (exactly once), or returned (refunded) when the ledger\n"
            "refuses the record for good; declined -> declined; pending or authorized that the\n"
            "gateway does not know or can void -> voided. Prints one line per thing looked at:\n"
            "its state before and after, what the gateway said, what was done.\n"
            "Exit 0: nothing is left stuck; 1: something needs a person (money held that this\n"
            "run could not record or return); 2: not configured.\n"
            "Configured like the server: POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY, _AUTHORITY_ID,\n"
            "_GATEWAYS (the simulated gateway keeps its state in the server's memory: reconcile\n"
            "from another process is for real gateways).\n\n"
            "Example:\n  policy-ledger payments reconcile --log-key-file var/log.key --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reconcile.add_argument("--database", help="SQLAlchemy URL (default: the server's)")
    add_log_key_file(reconcile, help="the log's private signer key file (default: the server's)")
    reconcile.add_argument(
        "--stale-minutes",
        type=float,
        default=30.0,
        help="look only at what last changed at least this long ago (default 30; 0: everything):"
        " younger payments may still have a customer on the gateway's page",
    )
    reconcile.add_argument("--json", action="store_true", help="print JSON, one object")
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
    log_signer = load_signer(
        Path(args.log_key_file) if args.log_key_file else defaults.log_key_path
    )
    clock = SystemClock()
    appender = Appender(engine, log_signer, defaults.origin or log_signer.name)
    renewals = renewals_from_environment(
        engine, AppenderRecorder(appender, authority, clock, KeyStore(engine)), clock, authority_id
    )
    items = renewals.reconcile(stale_after=dt.timedelta(minutes=args.stale_minutes))
    stuck = sum(item.needs_person for item in items)
    if args.json:
        print(
            json.dumps(
                {
                    "looked_at": [dataclasses.asdict(item) for item in items],
                    "needs_person": stuck,
                },
                indent=2,
            )
        )
    else:
        for item in items:
            print(
                f"{item.id}: {item.before} -> {item.after}; gateway said {item.gateway_said}; "
                f"{item.action}"
            )
        print(
            f"reconciled: {len(items)} payment(s) or refund(s) looked at, {stuck} need(s) a person"
        )
    return 1 if stuck else 0
