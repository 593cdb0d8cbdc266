"""``policy-ledger beneficiary ...`` (the insured person) and ``policy-ledger fund decide`` (the
fund): declarations of beneficiaries, their decision, a person's record and contribution status
(issue 11, items 4-5; docs/beneficiaries.md).

A person calls as ``--as beneficiary-<their person token>`` with the credentials ``enrol`` wrote;
the token in that name is whom they act for. Exit codes: 0 done; 2 bad command line; 3 refused
by the server (the reason printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from clients.channel import add_connection_arguments, connection_from_arguments
from clients.cli_common import trusted_log
from ledger import limits
from ledger.cli_flags import PERSON_FORM, add_log_verifier, person_argument

__all__ = ["register"]

_TOKEN = "pt_abcdefghijklmnopqrstuvwxyz"  # noqa: S105 (a placeholder, not a secret)
"""The person token placeholder the examples use (policy_ledger/cli.py documents it)."""
_CONNECTION = (
    f"--server 127.0.0.1:50051 --credentials var/me --as beneficiary-{_TOKEN} "
    "--log-verifier @log.pub"
)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


_DECLARED_FORM = f"{PERSON_FORM}@YYYY-MM-DD=KIND:REFERENCE[,KIND:REFERENCE]"
"""A declared person: identifier, birth date, the references of their documents."""


def _declared(text: str) -> tuple[Any, dt.date, tuple[tuple[int, str], ...]]:
    """``COUNTRY:TYPE:VALUE@YYYY-MM-DD=KIND:REFERENCE[,KIND:REFERENCE...]``: the birth date is
    required (the ledger gives a person the token of someone else only with their birth date,
    checked against the identity vault's; docs/privacy.md)."""
    from ledger.v1 import events_pb2

    declared, separator, documents = text.partition("=")
    person, at, birth = declared.partition("@")
    if not separator or not documents or not at:
        raise argparse.ArgumentTypeError(
            f"a declared person is {_DECLARED_FORM}, e.g. "
            "MA:NATIONAL_ID:BK765432@1984-07-09=MARRIAGE_CERTIFICATE:DOC-1"
        )
    parsed: list[tuple[int, str]] = []
    for document in documents.split(","):
        kind, _, reference = document.partition(":")
        try:
            value = events_pb2.DocumentKind.Value(f"DOCUMENT_KIND_{kind.upper()}")
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown document kind {kind!r}") from None
        parsed.append((value, reference))
    return person_argument(person), _date(birth), tuple(parsed)


def _caller_token(args: argparse.Namespace) -> str:
    role, _, token = str(args.identity).partition("-")
    if role != "beneficiary" or not token:
        raise SystemExit("policy-ledger beneficiary: --as must be beneficiary-<person token>")
    return token


def _signer(path: str) -> Any:
    from ledger.signing import parse_signer_key

    return parse_signer_key(Path(path).read_text(encoding="utf-8").strip())


def _declare(args: argparse.Namespace) -> int:
    from clients.beneficiary import BeneficiaryClient, Declared
    from clients.errors import ClientError
    from ledger.v1 import events_pb2

    token = _caller_token(args)
    insurer_id, _, policy_id = args.policy.partition("/")
    people = [(p, b, events_pb2.RELATIONSHIP_SPOUSE, d) for p, b, d in args.spouse] + [
        (p, b, events_pb2.RELATIONSHIP_CHILD, d) for p, b, d in args.child
    ]
    if not people:
        print("policy-ledger beneficiary declare: name a --spouse or a --child", file=sys.stderr)
        return 2
    with connection_from_arguments(args).open() as channel:
        client = BeneficiaryClient(
            channel,
            person_token=token,
            signer=_signer(args.key),
            log=trusted_log(args.log_verifier),
        )
        try:
            tokens = client.tokens.tokens(
                [person for person, _, _, _ in people], [birth for _, birth, _, _ in people]
            )
            receipt = client.declare(
                args.declaration_id,
                (insurer_id, policy_id),
                [
                    Declared(person_token, relationship, documents)
                    for person_token, (_, _, relationship, documents) in zip(
                        tokens, people, strict=True
                    )
                ],
                effective=args.effective,
            )
        except ClientError as error:
            print(f"REFUSED {error}")
            return 3
    print(f"declaration {args.declaration_id}: leaf {receipt.leaf_index}, receipt verified")
    return 0


def _record(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.beneficiary import BeneficiaryClient
    from clients.errors import ClientError

    token = _caller_token(args)
    with connection_from_arguments(args).open() as channel:
        client = BeneficiaryClient(
            channel, person_token=token, signer=None, log=trusted_log(args.log_verifier)
        )
        try:
            record = client.record(args.person or token)
        except ClientError as error:
            print(f"REFUSED {error}")
            return 3
    print(json_format.MessageToJson(record, indent=2))
    return 0


def _contributions(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from clients.beneficiary import BeneficiaryClient
    from clients.errors import ClientError

    token = _caller_token(args)
    with connection_from_arguments(args).open() as channel:
        client = BeneficiaryClient(
            channel, person_token=token, signer=None, log=trusted_log(args.log_verifier)
        )
        try:
            status = client.contribution_status(args.jurisdiction, args.as_of)
        except ClientError as error:
            print(f"REFUSED {error}")
            return 3
    print(json_format.MessageToJson(status, indent=2))
    return 0


def _decide(args: argparse.Namespace) -> int:
    from clients.beneficiary import declaration_decided
    from clients.errors import ClientError
    from clients.insurer import InsurerClient

    insurer_id = str(args.identity).partition("-")[2]
    if args.reject is None and not args.accept:
        print("policy-ledger fund decide: --accept or --reject REASON", file=sys.stderr)
        return 2
    with connection_from_arguments(args).open() as channel:
        client = InsurerClient(
            channel, signer=_signer(args.key), log=trusted_log(args.log_verifier)
        )
        try:
            [insured] = client.tokens.tokens([args.insured])
            receipt = client.submit(
                declaration_decided(
                    insurer_id,
                    insured,
                    args.declaration_id,
                    accepted=args.accept,
                    reason=args.reject or "",
                    occurred_at=dt.datetime.now(dt.UTC),
                )
            )
        except ClientError as error:
            print(f"REFUSED {error}")
            return 3
    decision = "accepted" if args.accept else "rejected"
    print(f"declaration {args.declaration_id} {decision}: leaf {receipt.leaf_index}, verified")
    return 0


def _issue_code(args: argparse.Namespace) -> int:
    from clients.beneficiary import issue_enrolment_code
    from clients.errors import ClientError
    from clients.person_tokens import PersonTokens

    with connection_from_arguments(args).open() as channel:
        try:
            [insured] = PersonTokens(channel).tokens([args.insured])
            issued = issue_enrolment_code(channel, insured, args.ttl)
        except ClientError as error:
            print(f"REFUSED {error}")
            return 3
    print(issued.code)
    print(insured)
    print(
        f"enrolment code for beneficiary/{insured}, valid until "
        f"{issued.expires_at.ToDatetime(tzinfo=dt.UTC).isoformat()}; it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    example: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=text.splitlines()[0],
        description=f"{text}\n\nExample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(parser)
    add_log_verifier(parser, required=True)
    return parser


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``beneficiary declare|record|contributions`` and ``fund decide|issue-code``."""
    beneficiary = commands.add_parser(
        "beneficiary", help="the insured person: declare beneficiaries, read one's record"
    )
    beneficiary_commands = beneficiary.add_subparsers(dest="beneficiary_command", required=True)
    declare = _add(
        beneficiary_commands,
        "declare",
        "Declare your spouse and children (with their birth dates and the references of their\n"
        "documents) on the fund's policy covering you, signed with your own key; the fund then\n"
        "decides. The ledger gives you their tokens only with their birth dates (checked\n"
        "against the identity vault's, never stored) and for at most "
        f"{limits.beneficiary_people_resolved_max} people\nin all, unless the operator grants "
        "you more (docs/privacy.md).",
        f"policy-ledger beneficiary declare {_CONNECTION} --key var/me.key "
        "--declaration-id DECL-1 --policy acme-health/ACME-HELP-MA --effective 2026-07-01 "
        "--spouse MA:NATIONAL_ID:BK765432@1984-07-09=MARRIAGE_CERTIFICATE:DOC-1 "
        "--child MA:NATIONAL_ID:BJ234567@2015-03-14=BIRTH_CERTIFICATE:DOC-2",
    )
    declare.add_argument("--key", required=True, help="your Ed25519 signer key file (enrolled)")
    declare.add_argument("--declaration-id", required=True, help="your id for this declaration")
    declare.add_argument("--policy", required=True, help="INSURER/POLICY covering you as SELF")
    declare.add_argument("--effective", required=True, type=_date, help="first covered day")
    declare.add_argument(
        "--spouse",
        action="append",
        default=[],
        type=_declared,
        help=_DECLARED_FORM,
    )
    declare.add_argument("--child", action="append", default=[], type=_declared, help="as --spouse")
    declare.set_defaults(handler=_declare)

    record = _add(
        beneficiary_commands,
        "record",
        "Print your record (coverages, declarations), or an accepted beneficiary's (--person).",
        f"policy-ledger beneficiary record {_CONNECTION}",
    )
    record.add_argument("--person", default="", help="a person token (default: yours)")
    record.set_defaults(handler=_record)

    contributions = _add(
        beneficiary_commands,
        "contributions",
        "Print your contribution status: paid through, owed through the end of the month.",
        f"policy-ledger beneficiary contributions {_CONNECTION} --jurisdiction MA "
        "--as-of 2026-06-15",
    )
    contributions.add_argument("--jurisdiction", required=True, help="e.g. MA")
    contributions.add_argument("--as-of", type=_date, help="default: the ledger's date today")
    contributions.set_defaults(handler=_contributions)

    from clients.cli_fund import fund_commands as fund_group

    fund_commands = fund_group(commands)
    decide = _add(
        fund_commands,
        "decide",
        "Accept (the declared people become members of the policy) or reject a declaration.",
        "policy-ledger fund decide --server 127.0.0.1:50051 --credentials var/pki "
        "--as insurer-acme-health --log-verifier @log.pub --key var/acme.key "
        "--insured MA:NATIONAL_ID:BE123456 --declaration-id DECL-1 --accept",
    )
    decide.add_argument("--key", required=True, help="the insurer's signer key file")
    decide.add_argument("--insured", required=True, type=person_argument, help=PERSON_FORM)
    decide.add_argument("--declaration-id", required=True, help="the insured's declaration id")
    decision = decide.add_mutually_exclusive_group(required=True)
    decision.add_argument("--accept", action="store_true", help="accept it")
    decision.add_argument("--reject", metavar="REASON", help="reject it, saying why")
    decide.set_defaults(handler=_decide)

    issue_code = _add(
        fund_commands,
        "issue-code",
        "Issue a one-time enrolment code for a person the fund insures (covered as SELF), to\n"
        "deliver out of band; prints the code, then the person's token (their enrolment name).",
        "policy-ledger fund issue-code --server 127.0.0.1:50051 --credentials var/pki "
        "--as insurer-acme-health --log-verifier @log.pub --insured MA:NATIONAL_ID:BE123456 "
        "--ttl 7d",
    )
    issue_code.add_argument("--insured", required=True, type=person_argument, help=PERSON_FORM)
    issue_code.add_argument("--ttl", default="24h", help="30m, 24h or 7d (at most 30 days)")
    issue_code.set_defaults(handler=_issue_code)
