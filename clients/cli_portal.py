"""``policy-ledger insurer submit``, ``coverage check`` and ``renew``: the clients' daily commands.

Each talks to a server over gRPC with the typed clients of this package and verifies what it
gets back with the log's verifier key (``--log-verifier``): receipts, answers' checkpoints.
Exit codes: 0 done (renewable, all accepted); 1 refused or not renewable (each reason printed);
2 bad command line or unreadable input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from clients.channel import add_connection_arguments, connection_from_arguments
from clients.cli_common import trusted_log
from clients.cli_compliance import register_compliance, register_employer
from clients.cli_watch import register_watch
from ledger.cli_flags import PERSON_FORM, add_log_verifier, person_argument, person_text

__all__ = ["register"]


def _member(text: str) -> tuple[Any, int]:
    """``COUNTRY:TYPE:VALUE[/relationship]``."""
    from ledger.v1 import events_pb2

    identifier, _, relationship = text.partition("/")
    value = 0
    if relationship:
        try:
            value = events_pb2.Relationship.Value(f"RELATIONSHIP_{relationship.upper()}")
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown relationship {relationship!r}") from None
    return person_argument(identifier), value


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _tree_size(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise argparse.ArgumentTypeError(f"not a tree size: {text!r}")
    return int(text)


def _submit(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.errors import ClientError
    from clients.insurer import InsurerClient
    from clients.person_tokens import tokenize_event
    from ledger.signing import parse_signer_key
    from ledger.v1 import events_pb2

    signer = parse_signer_key(Path(args.key).read_text(encoding="utf-8").strip())
    events = []
    for path in args.events:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        for item in document if isinstance(document, list) else [document]:
            event = json_format.ParseDict(item, events_pb2.Event())
            if not event.HasField("occurred_at"):
                # Example files (examples/) leave the time out: it is when they are signed.
                event.occurred_at.FromDatetime(dt.datetime.now(dt.UTC))
            events.append(event)
    refused = 0
    with connection_from_arguments(args).open() as channel:
        client = InsurerClient(channel, signer=signer, log=trusted_log(args.log_verifier))
        try:
            for event in events:  # "id:COUNTRY:TYPE:VALUE" in a token field: ask its token
                tokenize_event(event, client.tokens)
        except ValueError as error:
            print(f"policy-ledger insurer submit: {error}", file=sys.stderr)
            return 2
        except ClientError as error:
            print(f"person tokens refused: {error}")
            return 3
        for event, result in zip(events, client.submit_stream(events), strict=True):
            if isinstance(result, ClientError):
                refused += 1
                print(f"{event.event_id}: REFUSED {result}")
            else:
                again = " (already in the log)" if result.duplicate else ""
                print(
                    f"{event.event_id}: leaf {result.leaf_index}, tree size "
                    f"{result.checkpoint.size}, receipt verified{again}"
                )
    print(f"{len(events) - refused} accepted, {refused} refused")
    return 3 if refused else 0  # 3: refused by the server (docs/operations.md, exit codes)


def _check(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.portal import PortalClient
    from ledger.v1 import coverage_service_pb2

    with connection_from_arguments(args).open() as channel:
        portal = PortalClient(
            channel, log=trusted_log(args.log_verifier), min_tree_size=args.min_tree_size
        )
        answer = portal.check_household(
            args.sponsor,
            args.member,
            through=args.through,
            as_of=args.as_of,
            jurisdiction=args.jurisdiction,
            accept_language=args.lang,
        )
    response = answer.response
    if args.json:
        print(
            json_format.MessageToJson(
                response, indent=None, always_print_fields_with_no_presence=True
            )
        )
        return 0 if response.renewable else 1
    verdict = "RENEWABLE" if response.renewable else "NOT RENEWABLE"
    print(
        f"{verdict} through {args.through} (answer at tree size {answer.checkpoint.size}, verified)"
    )
    for member in response.members:
        name = coverage_service_pb2.CoverageVerdict.Name(member.verdict)
        member_verdict = name.removeprefix("COVERAGE_VERDICT_")
        print(f"  {person_text(member.person)}: {member_verdict}: {member.detail}")
    return 0 if response.renewable else 1


def _renew(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.errors import ClientError
    from clients.renewal import RenewalClient
    from payments.v1 import renewal_service_pb2 as pb

    with connection_from_arguments(args).open() as channel:
        client = RenewalClient(channel, log=trusted_log(args.log_verifier))
        if args.complete:
            payment_id, quote_id = args.complete, ""
        else:
            request = json_format.Parse(
                Path(args.request).read_text(encoding="utf-8"), pb.QuoteRenewalRequest()
            )
            try:
                response = client.quote(request)
            except ClientError as error:
                if error.code is not grpc.StatusCode.FAILED_PRECONDITION:
                    raise  # unreachable, refused, unimplemented: the CLI's exit 3 with a hint
                # The renewal's own rules refused it: an answer (exit 1), not a failure to ask.
                print(f"REFUSED before any charge: {error.reason}: {error.message}")
                print("  nothing was charged; next: resolve the reason, then run renew again")
                return 1
            quote = response.quote
            total = quote.total
            print(
                f"quote {quote.quote_id}: {total.currency_code} {total.amount_minor} minor units"
                f" ({quote.schedule_version})"
            )
            for line in quote.lines:
                print(f"  {person_text(line.person)}: {line.rule_id} {line.amount.amount_minor}")
            if not quote.payable:
                blocked = [m for m in response.household.members if not m.covered]
                for member in blocked:
                    print(f"  not insured: {person_text(member.person)}: {member.detail}")
                print("nothing to collect" if not blocked else "REFUSED: members not insured")
                return 1 if blocked else 0
            payment_id, quote_id = "", quote.quote_id
        try:
            if payment_id:
                payment = client.complete_payment(payment_id)
            else:
                payment = client.start_payment(
                    quote_id,
                    args.idempotency_key,
                    gateway=args.gateway,
                    return_url=args.return_url,
                )
        except ClientError as error:
            return _renew_refused(args, client, error, payment_id, quote_id)
    return _renew_outcome(args, payment)


def _complete_command(args: argparse.Namespace, payment_id: str) -> str:
    return f"policy-ledger renew --server {args.server} --log-key KEY --complete {payment_id}"


def _renew_refused(
    args: argparse.Namespace, client: Any, error: Any, payment_id: str, quote_id: str
) -> int:
    """A refused StartPayment or CompletePayment: the payment id (when one exists: after a
    capture there always is one) and what to do next."""
    from clients.errors import ClientError

    known = payment_id or error.metadata.get("payment_id", "")
    if not known and quote_id:
        try:
            known = client.get(quote_id=quote_id).payment.payment_id
        except ClientError:
            known = ""
    if error.code.name == "UNAVAILABLE" and known:
        # Not a refusal: the outcome is not known yet (e.g. the fee is captured and its ledger
        # record in flight); finishing it with the same payment is safe.
        print(f"NOT FINISHED: {error.code.name} {error.reason}: {error.message}")
    else:
        print(f"REFUSED: {error.code.name} {error.reason}: {error.message}")
    if not known:
        print("  no payment was started: nothing was charged")
        print("  next: resolve the reason, then run renew again with a new quote")
        return 1
    print(f"payment {known}")
    print(f"  next: {_complete_command(args, known)}")
    return 1


_NEXT = {
    "RECORDED": "nothing: the fee is recorded",
    "RETURNED": "nothing was kept: the fee was refunded in full; renew again once resolved",
    "DECLINED": "nothing was charged: run renew again (a new --idempotency-key)",
    "FAILED": "nothing was charged: run renew again (a new --idempotency-key)",
    "VOIDED": "nothing was charged: run renew again (a new --idempotency-key)",
    "MISMATCH": "an operator runs: policy-ledger payments reconcile",
}


def _renew_outcome(args: argparse.Namespace, payment: Any) -> int:
    from payments.v1 import renewal_service_pb2 as pb

    state = pb.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
    print(f"payment {payment.payment_id}: {state}")
    if payment.message:
        print(f"  {payment.message}")
    if payment.redirect_url:
        print(f"  send the customer to: {payment.redirect_url}")
    if payment.state == pb.PAYMENT_STATE_RECORDED:
        print(f"  recorded at leaf {payment.receipt.leaf_index}; receipt verified")
    print(f"  next: {_NEXT.get(state) or _complete_command(args, payment.payment_id)}")
    return 0 if payment.state in (pb.PAYMENT_STATE_RECORDED, pb.PAYMENT_STATE_PENDING) else 1


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
    return parser


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``insurer submit``, ``coverage check`` and ``renew`` (and, task F, the
    ``beneficiary`` and ``fund`` commands of clients/cli_beneficiary.py)."""
    from clients.cli_beneficiary import register as register_beneficiary

    register_beneficiary(commands)
    insurer = commands.add_parser("insurer", help="insurer commands: submit signed events")
    insurer_commands = insurer.add_subparsers(dest="insurer_command", required=True)
    submit = _add(
        insurer_commands,
        "submit",
        "Sign events (JSON files of ledger.v1.Event) with the insurer's key and submit them;\n"
        "every receipt is verified.",
        "policy-ledger insurer submit --server 127.0.0.1:50051 --credentials var/pki "
        "--as insurer-acme-health --log-verifier @log.pub "
        "--key var/acme.key events.json",
    )
    submit.add_argument("--key", required=True, help="the insurer's signer key file")
    submit.add_argument("events", nargs="+", help="JSON files: an Event or a list of Events")
    submit.set_defaults(handler=_submit)

    coverage = commands.add_parser(
        "coverage", help="coverage commands: check a household, watch changes"
    )
    coverage_commands = coverage.add_subparsers(dest="coverage_command", required=True)
    check = _add(
        coverage_commands,
        "check",
        "Is every member of a household insured through a date? Exit 0 renewable, 1 not.",
        "policy-ledger coverage check --server 127.0.0.1:50051 --credentials var/pki "
        "--as portal-SA --jurisdiction SA --log-verifier @log.pub "
        "--sponsor SA:RESIDENCE_ID:2000000006 --member SA:RESIDENCE_ID:2000000014/spouse "
        "--through 2027-06-30",
    )
    check.add_argument("--sponsor", required=True, type=person_argument, help=PERSON_FORM)
    check.add_argument(
        "--member", action="append", default=[], type=_member, help=f"{PERSON_FORM}[/relationship]"
    )
    check.add_argument("--through", required=True, type=_date, help="last day to be covered")
    check.add_argument("--as-of", type=_date, help="first day to be covered (default today)")
    check.add_argument("--json", action="store_true", help="the answer as JSON")
    check.add_argument(
        "--jurisdiction", default="", help="the renewing state, e.g. KW (a portal's own)"
    )
    check.add_argument(
        "--lang",
        default="",
        help="language of the details: en, fr or ar; add -u-ca-islamic-umalqura for Hijri dates",
    )
    check.add_argument(
        "--min-tree-size",
        type=_tree_size,
        default=0,
        metavar="N",
        help="never be answered from a tree smaller than N (a receipt's tree size): a server "
        "with a read standby then asks its primary when the standby is behind",
    )
    check.set_defaults(handler=_check)
    register_employer(coverage_commands)  # Task A (issue 10): `coverage employer`
    register_compliance(commands)  # Task A (issue 10): `compliance arrears`
    register_watch(coverage_commands, _add, trusted_log)  # Task C: coverage watch

    renew = _add(
        commands,
        "renew",
        "Quote a residence renewal (a QuoteRenewalRequest JSON file) and pay its fee; or\n"
        "--complete a hosted-page payment once the customer is back.",
        "policy-ledger renew --server 127.0.0.1:50051 --credentials var/pki --as portal-KW "
        "--log-verifier @log.pub --request family.json "
        "--gateway simulated --idempotency-key portal-0001",
    )
    action = renew.add_mutually_exclusive_group(required=True)
    action.add_argument("--request", help="QuoteRenewalRequest as JSON")
    action.add_argument("--complete", help="payment id to confirm and record")
    renew.add_argument("--gateway", default="simulated", help="gateway adapter")
    renew.add_argument("--idempotency-key", default="", help="8 to 128 characters")
    renew.add_argument("--return-url", default="", help="where the hosted page returns")
    renew.set_defaults(handler=_renew)
