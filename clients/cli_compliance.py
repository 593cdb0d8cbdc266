"""``policy-ledger coverage employer`` and ``compliance arrears`` (issue 10, task A).

``coverage employer`` asks CoverageService.CheckEmployer for every worker and dependent an
establishment is responsible for, page after page, and prints each person's uninsured runs;
``compliance arrears`` asks ComplianceService.ComputeArrears and prints every figure with its
explanation. Each answer's checkpoint is verified with the log's verifier key. Exit codes:
0 everyone insured (``employer``) or the figures computed (``arrears``); 1 someone uninsured
(``employer``); 3 refused by the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from clients.channel import add_connection_arguments, connection_from_arguments
from clients.cli_common import trusted_log
from ledger.cli_flags import add_log_verifier, person_text

__all__ = ["register_compliance", "register_employer"]

_PURPOSES = ("AUDIT", "RESIDENCE_RENEWAL")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _verified(args: argparse.Namespace, basis: Any) -> int:
    """Verify an answer's checkpoint; its tree size."""
    from clients.verify import verify_checkpoint

    checkpoint = verify_checkpoint(basis.checkpoint, trusted_log(args.log_verifier))
    if checkpoint.size != basis.tree_size:
        raise ValueError(f"answer at tree size {basis.tree_size}, checkpoint {checkpoint.size}")
    return checkpoint.size


def _civil(day: dt.date) -> Any:
    from ledger.events import civil_date

    return civil_date(day)


def _employer(args: argparse.Namespace) -> int:
    from ledger.v1 import coverage_service_pb2 as pb
    from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
    from ledger.v1 import events_pb2, types_pb2

    request = pb.CheckEmployerRequest(
        establishment_number=args.establishment,
        jurisdiction=args.jurisdiction,
        from_date=_civil(args.from_date),
        through_date=_civil(args.through),
        page_size=args.page_size,
        purpose=types_pb2.AccessPurpose.Value(f"ACCESS_PURPOSE_{args.purpose}"),
    )
    people, uninsured = 0, 0
    with connection_from_arguments(args).open() as channel:
        stub = pb_grpc.CoverageServiceStub(channel)
        while True:
            page = stub.CheckEmployer(request, timeout=60)
            size = _verified(args, page.basis)
            for person in page.people:
                people += 1
                who = person_text(person.person) if person.HasField("person") else "(erased)"
                state = "UNINSURED" if person.uninsured_days else "insured"
                if person.uninsured_days:
                    uninsured += 1
                print(
                    f"{who} ({person.person_token}, "
                    f"{events_pb2.Relationship.Name(person.relationship).removeprefix('RELATIONSHIP_')}"
                    f", permit {person.authority_id}/{person.permit_id}): {state}, "
                    f"{person.uninsured_days} uninsured days"
                )
                for run in person.intervals:
                    if not run.covered:
                        print(f"    {_text(run.first_day)}..{_text(run.last_day)}: {run.reason}")
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    print(
        f"{people} people, {uninsured} with uninsured days "
        f"(last page at tree size {size}, verified)"
    )
    return 1 if uninsured else 0


def _text(day: Any) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _arrears(args: argparse.Namespace) -> int:
    from ledger.v1 import compliance_service_pb2 as pb
    from ledger.v1 import compliance_service_pb2_grpc as pb_grpc
    from ledger.v1 import types_pb2

    request = pb.ComputeArrearsRequest(
        establishment_number=args.establishment,
        jurisdiction=args.jurisdiction,
        from_date=_civil(args.from_date),
        through_date=_civil(args.through),
        activity=args.activity,
        region=args.region,
        category=args.category,
        purpose=types_pb2.AccessPurpose.Value(f"ACCESS_PURPOSE_{args.purpose}"),
    )
    with connection_from_arguments(args).open() as channel:
        answer = pb_grpc.ComplianceServiceStub(channel).ComputeArrears(request, timeout=60)
    size = _verified(args, answer.basis)
    currency = answer.total_arrears.currency_code
    print(
        f"establishment {args.jurisdiction}/{args.establishment}, {args.from_date}.."
        f"{args.through}: arrears {answer.total_arrears.amount_minor}, fines "
        f"{answer.total_fines.amount_minor} ({currency} minor units; schedule "
        f"{answer.schedule_version}; answer at tree size {size}, verified)"
    )
    for line in answer.explanation:
        print(f"  {line}")
    for person in answer.people:
        who = person_text(person.person) if person.HasField("person") else "(erased)"
        print(
            f"{who} ({person.person_token}): {person.uninsured_days} uninsured days, arrears "
            f"{person.arrears.amount_minor}, fine {person.fine.amount_minor}"
        )
        for line in person.explanation:
            print(f"    {line}")
    return 0


def _add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    example: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=text,
        description=f"{text}\n\nExample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(parser)
    add_log_verifier(parser, required=True)
    parser.add_argument("--establishment", required=True, help="the establishment number")
    parser.add_argument(
        "--jurisdiction", required=True, help="the state that registered it, e.g. SA"
    )
    parser.add_argument("--from", dest="from_date", required=True, type=_date, help="first day")
    parser.add_argument("--through", required=True, type=_date, help="last day (inclusive)")
    parser.add_argument("--purpose", default="AUDIT", choices=_PURPOSES, help="why you ask")
    return parser


def register_employer(coverage: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``coverage employer`` to the ``coverage`` command group."""
    employer = _add(
        coverage,
        "employer",
        "Every worker and dependent an establishment must insure, with their uninsured days\n"
        "and why. Exit 0 everyone insured, 1 not.",
        "policy-ledger coverage employer --server 127.0.0.1:50051 --credentials var/pki "
        "--as portal-SA --log-verifier @log.pub --establishment 7001234567 "
        "--jurisdiction SA --from 2026-01-01 --through 2026-12-31",
    )
    employer.add_argument("--page-size", type=int, default=0, help="people per page")
    employer.set_defaults(handler=_employer)


def register_compliance(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compliance arrears`` and ``compliance decision get|list``."""
    from clients.cli_compliance_decisions import register_decisions

    compliance = commands.add_parser(
        "compliance", help="employers' arrears and fines, and penalty decisions"
    )
    compliance_commands = compliance.add_subparsers(dest="compliance_command", required=True)
    register_decisions(compliance_commands)
    arrears = _add(
        compliance_commands,
        "arrears",
        "The premiums an establishment owes for the people it left uninsured, and the fines,\n"
        "every figure explained (computed; nothing is recorded).",
        "policy-ledger compliance arrears --server 127.0.0.1:50051 --credentials var/pki "
        "--as portal-SA --log-verifier @log.pub --establishment 7001234567 "
        "--jurisdiction SA --from 2026-01-01 --through 2026-12-31 "
        "--activity CONSTRUCTION --region RIYADH",
    )
    arrears.add_argument("--activity", required=True, help="as the penalty schedule names it")
    arrears.add_argument("--region", required=True, help="as the penalty schedule names it")
    arrears.add_argument(
        "--category", default="", help="plan whose market average applies (default: every plan)"
    )
    arrears.set_defaults(handler=_arrears)
