"""``policy-ledger fund totals``: a funder's (or every funder's) totals per state and month,
from ``FundService/GetFundTotals`` (task D, issue 11; docs/funds.md), the answer's checkpoint
verified with the log's key. Exit 0 answered; 1 refused; 2 bad command line."""

from __future__ import annotations

import argparse
import re
from typing import Any

from clients.channel import add_connection_arguments, connection_from_arguments
from clients.cli_common import trusted_log
from ledger.cli_flags import add_log_verifier

__all__ = ["register"]

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


def _month(text: str) -> tuple[int, int]:
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise argparse.ArgumentTypeError(f"not a month (YYYY-MM): {text!r}")
    return int(match.group(1)), int(match.group(2))


def _money(money: Any) -> str:
    return f"{money.amount_minor // 100}.{money.amount_minor % 100:02d} {money.currency_code}"


def _totals(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.errors import ClientError
    from clients.fund import FundClient

    try:
        with connection_from_arguments(args).open() as channel:
            answer = FundClient(channel, log=trusted_log(args.log_verifier)).totals(
                args.funder, args.from_month, args.to_month, state_code=args.state
            )
    except ClientError as error:
        print(f"refused: {error}")
        return 1
    response = answer.response
    if args.json:
        print(json_format.MessageToJson(response, indent=None))
        return 0
    print(
        f"{len(response.totals)} totals at tree size {answer.checkpoint.size} (verified); "
        "funder state month: enrolled covered paid owed"
    )
    for total in response.totals:
        print(
            f"  {total.funder_id} {total.state_code} {total.month.year}-{total.month.month:02d}: "
            f"{total.beneficiaries_enrolled} {total.beneficiaries_covered} "
            f"{_money(total.paid)} {_money(total.owed)}"
        )
    return 0


_FUND_HELP = "a fund's and a funder's commands: cohort totals, enrolment codes, decisions"


def fund_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``fund`` group's subcommands: made by whichever registers first (``fund totals``
    here, ``fund decide|issue-code`` in clients/cli_beneficiary.py), found by the other."""
    fund = commands.choices.get("fund")
    if fund is None:
        fund = commands.add_parser("fund", help=_FUND_HELP)
        fund.set_defaults(fund_commands=fund.add_subparsers(dest="fund_command", required=True))
    found: argparse._SubParsersAction[argparse.ArgumentParser] = fund.get_default("fund_commands")
    return found


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fund totals``."""
    fund_commands_ = fund_commands(commands)
    text = (
        "Beneficiaries enrolled and covered, contributions paid and owed (SDG), per funder,\n"
        "state and month, with the tree size they were computed at. A funder asks for its own\n"
        "(--funder its name); the operator, an auditor or a regulator for any or all."
    )
    example = (
        "policy-ledger fund totals --server 127.0.0.1:50051 --credentials var/pki "
        "--as operator-operator --log-verifier @log.pub --from 2026-01 --to 2026-12"
    )
    totals = fund_commands_.add_parser(
        "totals",
        help="totals per funder, state and month",
        description=f"{text}\n\nExample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(totals)
    add_log_verifier(totals, required=True)
    totals.add_argument("--funder", default="", help="the funder (empty: every funder)")
    totals.add_argument(
        "--from", dest="from_month", required=True, type=_month, help="first month, YYYY-MM"
    )
    totals.add_argument(
        "--to", dest="to_month", required=True, type=_month, help="last month, YYYY-MM"
    )
    totals.add_argument("--state", default="", help="one state, e.g. SD-KH (default: all)")
    totals.add_argument("--json", action="store_true", help="the answer as JSON")
    totals.set_defaults(handler=_totals)
