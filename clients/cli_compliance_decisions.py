"""``policy-ledger compliance decision get|list``: a regulator's, the operator's or an auditor's
view of penalty decisions (task B; docs/compliance.md "Penalty decisions").

Exit codes: 0 shown; 2 bad command line; 3 refused by the server (the reason printed) or
unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clients.channel import add_connection_arguments, connection_from_arguments
from ledger.cli_flags import add_log_verifier

__all__ = ["register_decisions"]

_EXAMPLE_GET = (
    "Example:\n  policy-ledger compliance decision get --decision CCHI-2026-0001 \\\n"
    "    --server 127.0.0.1:50051 --credentials var/pki --as auditor-auditor "
    "--log-verifier @var/log.key.pub"
)
_EXAMPLE_LIST = (
    "Example:\n  policy-ledger compliance decision list --establishment 7001234567 \\\n"
    "    --server 127.0.0.1:50051 --credentials var/pki --as auditor-auditor "
    "--log-verifier @var/log.key.pub"
)


def register_decisions(compliance_commands: Any) -> None:
    """Add ``compliance decision get|list`` to the ``compliance`` group's subcommands
    (:func:`clients.cli_compliance.register_compliance` makes the group)."""
    decision = compliance_commands.add_parser(
        "decision", help="penalty decisions: status, amounts, deadlines"
    )
    commands = decision.add_subparsers(dest="decision_command", required=True)
    get = commands.add_parser(
        "get",
        help="one decision",
        description="Show one penalty decision, verified against the log key.\n\n" + _EXAMPLE_GET,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    get.add_argument("--decision", required=True, help="the decision number")
    listing = commands.add_parser(
        "list",
        help="an establishment's decisions",
        description="List an establishment's penalty decisions, oldest first.\n\n" + _EXAMPLE_LIST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--establishment", required=True, help="the establishment number")
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="")
    for parser in (get, listing):
        add_connection_arguments(parser)
        add_log_verifier(parser, required=True)
        parser.add_argument("--json", action="store_true", help="print the response as JSON")
    get.set_defaults(handler=_get)
    listing.set_defaults(handler=_list)


def _money(money: Any) -> str:
    return f"{money.amount_minor} {money.currency_code} minor units"


def _date(day: Any) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _print_decision(decision: Any) -> None:
    from ledger.v1 import compliance_service_pb2 as pb

    status = pb.PenaltyStatus.Name(decision.status).removeprefix("PENALTY_STATUS_")
    print(
        f"{decision.decision_id}: {status}; establishment {decision.establishment_number}, "
        f"assessed {_date(decision.assessed_on)} by {decision.regulator_id} "
        f"(schedule {decision.schedule_version})"
    )
    print(
        f"  total {_money(decision.total)}, paid {_money(decision.paid)}, "
        f"due {_money(decision.due)}; {len(decision.lines)} people"
    )
    for deadline in decision.deadlines:
        kind = pb.PenaltyDeadlineKind.Name(deadline.kind).removeprefix("PENALTY_DEADLINE_KIND_")
        state = "passed" if deadline.passed else "open"
        print(
            f"  {kind.lower()}: by {_date(deadline.last_day)} ({deadline.days} days from "
            f"{_date(deadline.counted_from)}, leaf {deadline.counted_from_leaf_index}): {state}"
        )
    print(f"  entries: {', '.join(str(leaf) for leaf in decision.leaf_indexes)}")


def _run(args: argparse.Namespace, call: Any) -> int:
    from google.protobuf import json_format

    from clients.compliance import ComplianceClient
    from clients.errors import ClientError
    from clients.verify import TrustedLog

    with connection_from_arguments(args).open() as channel:
        client = ComplianceClient(channel, log=TrustedLog.from_verifier_key(args.log_verifier))
        try:
            answer = call(client)
        except ClientError as error:
            print(f"refused: {error}")
            return 3  # refused by the server (docs/operations.md, exit codes)
    if args.json:
        print(json_format.MessageToJson(answer.response, indent=None))
        return 0
    response = answer.response
    found = [response.decision] if hasattr(response, "decision") else list(response.decisions)
    for decision in found:
        _print_decision(decision)
    if getattr(response, "next_page_token", ""):
        print(f"next page: --page-token {response.next_page_token}")
    print(f"(answer at tree size {answer.checkpoint.size}, verified)", file=sys.stderr)
    return 0


def _get(args: argparse.Namespace) -> int:
    return _run(args, lambda client: client.get_decision(args.decision))


def _list(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda client: client.list_decisions(
            args.establishment, page_size=args.page_size, page_token=args.page_token
        ),
    )
