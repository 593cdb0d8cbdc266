"""``policy-ledger admin beneficiary``: a person's token resolutions and the operator's grants of
more (AdminService.GetBeneficiaryResolutions / GrantBeneficiaryResolutions; docs/privacy.md,
"A person asking for tokens"). Both sign nothing: an operator certificate is enough.
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from clients.channel import add_connection_arguments, connection_from_arguments
from clients.operator import AdminClient
from ledger import limits
from ledger.cli_flags import PERSON_FORM, person_argument
from ledger.v1 import admin_service_pb2

__all__ = ["ERASED_REASON_TEXT", "add_beneficiary_commands", "resolutions_text"]

ERASED_REASON_TEXT = "(erased)"
"""Printed for a grant's reason that the person's erasure cleared (the wire's empty reason, which
no grant is made with)."""

_RESOLUTIONS_DESCRIPTION = """\
Shows how many people a person (role beneficiary) has obtained the token of through
IdentityService.GetPersonTokens, and how many they may: the base bound
(limits.beneficiary_people_resolved_max) plus every grant, each listed with its amount, time,
operator, request id and reason ("(erased)" once the person's erasure cleared it: the grant
and its amount stay). Writes nothing. The person is named by identifier (--person,
looked up without issuing a token) or by token (--person-token).

Example:
  policy-ledger admin beneficiary resolutions --person MA:NATIONAL_ID:BE123456 \\
      --server 127.0.0.1:50051 --credentials var/pki --as operator-operator"""

_GRANT_DESCRIPTION = f"""\
Grants a person more people to resolve, with a reason (required): 1 to \
{limits.beneficiary_resolutions_grant_max} a grant
(limits.beneficiary_resolutions_grant_max), at most {limits.beneficiary_resolutions_granted_max} \
in all of one person's grants
(limits.beneficiary_resolutions_granted_max).
The grant is stored with the operator's identity, the time and its request id, and is never
deleted; the person's erasure clears the reason and keeps the rest, the request id included.
Write no identifier, name or birth date in the reason, nor in the request id: it outlives the
person's erasure.
Idempotent by --request-id (default: a fresh random id). The first line printed, before the
call, is "request id ID": if the answer is lost (a timeout, a dropped connection), run the same
command again with --request-id ID; it grants once, and prints the person's resolutions as they
are then. The same request id with another person, amount or reason is refused (ALREADY_EXISTS
REQUEST_ID_REUSED). Then the person's resolutions with the grant are printed.

Example:
  policy-ledger admin beneficiary grant --person-token pt_abcdefghijklmnopqrstuvwxyz \\
      --additional 8 --reason 'ticket 4411: slots spent on typos' --request-id ticket-4411-1 \\
      --server 127.0.0.1:50051 --credentials var/pki --as operator-operator"""


def resolutions_text(resolutions: admin_service_pb2.BeneficiaryResolutions) -> str:
    """Lines for a person's resolutions: the count and bound, then one line per grant
    (tab-separated: number, +amount, time, operator, request id or "-" for a grant made before
    request ids were stored, reason or :data:`ERASED_REASON_TEXT` once the person's erasure
    cleared it)."""
    erased = " (erased)" if resolutions.erased else ""
    lines = [
        f"{resolutions.person_token}{erased}: resolved {resolutions.resolved} of "
        f"{resolutions.allowed} ({resolutions.base_allowed} base + {resolutions.granted} "
        f"granted)"
    ]
    for number, grant in enumerate(resolutions.grants, start=1):
        reason = grant.reason or ERASED_REASON_TEXT
        lines.append(
            f"grant {number}\t+{grant.additional}\t{grant.granted_at.ToJsonString()}"
            f"\t{grant.granted_by}\t{grant.request_id or '-'}\t{reason}"
        )
    return "\n".join(lines)


def _admin_client(args: argparse.Namespace) -> tuple[grpc.Channel, AdminClient]:
    """(channel, AdminClient) as --server/--credentials/--as say."""
    channel = connection_from_arguments(args).open()
    return channel, AdminClient(channel)


def _person_token(admin: AdminClient, args: argparse.Namespace) -> str:
    return str(args.person_token or admin.person_token(args.person))


def _resolutions(args: argparse.Namespace) -> int:
    channel, admin = _admin_client(args)
    with channel:
        print(resolutions_text(admin.beneficiary_resolutions(_person_token(admin, args))))
    return 0


def _grant(args: argparse.Namespace) -> int:
    # Printed before the call, so that the operator holds the id however the call ends: a
    # retry with it after a lost answer grants once.
    request_id = args.request_id or str(uuid.uuid4())
    print(f"request id {request_id}", flush=True)
    channel, admin = _admin_client(args)
    with channel:
        token = _person_token(admin, args)
        resolutions = admin.grant_beneficiary_resolutions(
            token, args.additional, reason=args.reason, request_id=request_id
        )
    print(resolutions_text(resolutions))
    return 0


def _add_person_options(parser: argparse.ArgumentParser) -> None:
    person = parser.add_mutually_exclusive_group(required=True)
    person.add_argument("--person", type=person_argument, help=f"the person, {PERSON_FORM}")
    person.add_argument("--person-token", help="the person's token (pt_...)")
    add_connection_arguments(parser)


def _additional(text: str) -> int:
    """``--additional``: a whole number (its range is the server's to check, with its reason)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def add_beneficiary_commands(
    admin_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``admin beneficiary resolutions`` and ``admin beneficiary grant``."""
    beneficiary = admin_commands.add_parser(
        "beneficiary", help="a person's bound on the people they resolve to tokens"
    )
    commands = beneficiary.add_subparsers(dest="beneficiary_command", required=True)
    resolutions = commands.add_parser(
        "resolutions",
        help="how many people a person resolved and may resolve (their grants listed)",
        description=_RESOLUTIONS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_person_options(resolutions)
    resolutions.set_defaults(handler=_resolutions)
    grant = commands.add_parser(
        "grant",
        help="grant a person more people to resolve (audited, never deleted)",
        description=_GRANT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_person_options(grant)
    grant.add_argument(
        "--additional",
        required=True,
        type=_additional,
        help=f"how many more people (1..{limits.beneficiary_resolutions_grant_max})",
    )
    grant.add_argument(
        "--reason", required=True, help="why (kept until the person's erasure: name no one in it)"
    )
    grant.add_argument(
        "--request-id",
        default="",
        help=(
            f"the grant's idempotency key ({limits.resolution_grant_request_id_chars_min} to "
            f"{limits.resolution_grant_request_id_chars_max} printable characters); default: a "
            "fresh random id, printed first: retry a grant whose answer was lost with it. Kept "
            "after the person's erasure (which clears only the reason): put no personal data "
            "in it (no identifier, name or birth date)"
        ),
    )
    grant.set_defaults(handler=_grant)
