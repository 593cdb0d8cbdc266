"""``policy-ledger card issue|replace|revoke|status|get|verify``: insurance cards (docs/cards.md).

``issue``, ``replace`` and ``revoke`` sign the card event with the insurer's key (``--key``)
and submit it, verifying the receipt with the log key. ``status`` asks the server
(``GetCardStatus``). ``get`` writes the signed card (a bundle file, as ``certificate get``) and
its QR code. ``verify`` checks a card offline with the log key: exit 0 prints the statement,
the checkpoint it was issued at and "check its status online"; exit 1 when a check fails or
the card has expired.
Exit codes: 0 done; 1 not verified / expired / not current; 2 bad command line; 3 refused by the
server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from pathlib import Path

from clients.cards import (
    CardClient,
    card_issued_event,
    card_replaced_event,
    card_revoked_event,
)
from clients.certificate import render_qr_png
from clients.channel import add_connection_arguments, connection_from_arguments
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.offline.certificate import CertificateError, load_bundle
from clients.offline.document import DocumentStatement, verify_document
from clients.offline.note import NoteError
from clients.verify import TrustedLog
from ledger.cli_flags import PERSON_FORM, add_log_verifier, person_argument
from ledger.signing import parse_signer_key
from ledger.v1 import events_pb2

__all__ = ["print_document", "register"]

_REASONS = sorted(
    name.removeprefix("CARD_REASON_").lower()
    for name, _ in events_pb2.CardReason.items()
    if name != "CARD_REASON_UNSPECIFIED"
)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _reason(text: str) -> events_pb2.CardReason.ValueType:
    if text.lower() not in _REASONS:
        raise argparse.ArgumentTypeError(f"reason must be one of {', '.join(_REASONS)}")
    return events_pb2.CardReason.Value(f"CARD_REASON_{text.upper()}")


def _key(value: str) -> str:
    if value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``card`` command group."""
    card = commands.add_parser(
        "card",
        help="insurance cards: issue, replace, revoke, status, get, verify offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = card.add_subparsers(dest="card_command", required=True)

    def signed(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        add_connection_arguments(parser)
        add_log_verifier(parser, required=True)
        parser.add_argument("--key", required=True, help="the insurer's signer key file")
        parser.add_argument("--insurer", required=True, help="the insurer (fund) id that signs")
        parser.add_argument("--event-id", help="the event id (default: a new random one)")
        return parser

    issue = signed("issue", "issue a card number to a person the insurer covers")
    issue.add_argument("--card-number", required=True, help="16 digits, Luhn check digit last")
    issue.add_argument("--person", required=True, type=person_argument, help=PERSON_FORM)
    issue.add_argument("--valid-until", required=True, type=_date, help="YYYY-MM-DD")
    issue.set_defaults(handler=_issue)

    replace = signed("replace", "replace a current card by a new number")
    replace.add_argument("--card-number", required=True, help="the card replaced")
    replace.add_argument("--new-card-number", required=True, help="the new number")
    replace.add_argument("--valid-until", required=True, type=_date, help="YYYY-MM-DD")
    replace.add_argument("--reason", required=True, type=_reason, help=", ".join(_REASONS))
    replace.set_defaults(handler=_replace)

    revoke = signed("revoke", "revoke a current card")
    revoke.add_argument("--card-number", required=True, help="the card revoked")
    revoke.add_argument("--reason", required=True, type=_reason, help=", ".join(_REASONS))
    revoke.set_defaults(handler=_revoke)

    status = sub.add_parser("status", help="a card's status: current, replaced, revoked, expired")
    add_connection_arguments(status)
    status.add_argument("--card-number", required=True)
    status.add_argument("--lang", default="", help="en, fr or ar (-u-ca-islamic-umalqura: Hijri)")
    status.set_defaults(handler=_status)

    get = sub.add_parser("get", help="the signed card, to a bundle file and a QR code")
    add_connection_arguments(get)
    get.add_argument("--card-number", required=True)
    get.add_argument("--out", required=True, help="file to write the card bundle to")
    get.add_argument("--qr", help="PNG file to write the card's QR code to")
    get.add_argument("--lang", default="", help="en, fr or ar (-u-ca-islamic-umalqura: Hijri)")
    add_log_verifier(get, required=False, help="verify with this log verifier key (or @FILE)")
    get.set_defaults(handler=_get)

    verify = sub.add_parser("verify", help="verify a card (bundle or QR note) offline")
    verify.add_argument("--card", required=True, help="bundle (JSON) or note file")
    add_log_verifier(verify, required=True)
    verify.add_argument("--origin", help="the log's checkpoint origin (default: the key's name)")
    verify.add_argument("--today", type=_date, help="the date to check expiry on (default: today)")
    verify.set_defaults(handler=_verify)


def _submit(args: argparse.Namespace, event: events_pb2.Event, person: object = None) -> int:
    signer = parse_signer_key(Path(args.key).read_text(encoding="utf-8").strip())
    log = TrustedLog.from_verifier_key(_key(args.log_verifier))
    with connection_from_arguments(args).open() as channel:
        client = InsurerClient(channel, signer=signer, log=log)
        try:
            if person is not None:
                event.card_issued.person_token = client.tokens.token(person)  # type: ignore[arg-type]
            receipt = client.submit(event)
        except ClientError as error:
            print(f"{event.event_id}: REFUSED {error}")
            return 3
    print(
        f"{event.event_id}: leaf {receipt.leaf_index}, tree size {receipt.checkpoint.size}, "
        "receipt verified"
    )
    return 0


def _event_id(args: argparse.Namespace, kind: str) -> str:
    return args.event_id or f"{args.insurer}-{kind}-{uuid.uuid4().hex[:12]}"


def _issue(args: argparse.Namespace) -> int:
    event = card_issued_event(
        insurer_id=args.insurer,
        event_id=_event_id(args, "card-issued"),
        card_number=args.card_number,
        person_token="",
        valid_until=args.valid_until,
        occurred_at=dt.datetime.now(dt.UTC),
    )
    return _submit(args, event, args.person)


def _replace(args: argparse.Namespace) -> int:
    event = card_replaced_event(
        insurer_id=args.insurer,
        event_id=_event_id(args, "card-replaced"),
        old_card_number=args.card_number,
        new_card_number=args.new_card_number,
        valid_until=args.valid_until,
        reason=args.reason,
        occurred_at=dt.datetime.now(dt.UTC),
    )
    return _submit(args, event)


def _revoke(args: argparse.Namespace) -> int:
    event = card_revoked_event(
        insurer_id=args.insurer,
        event_id=_event_id(args, "card-revoked"),
        card_number=args.card_number,
        reason=args.reason,
        occurred_at=dt.datetime.now(dt.UTC),
    )
    return _submit(args, event)


def _status(args: argparse.Namespace) -> int:
    with connection_from_arguments(args).open() as channel:
        try:
            answer = CardClient(channel).status(args.card_number, accept_language=args.lang)
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
    print(
        f"card {args.card_number}: {answer.status} (entry {answer.leaf_index}, valid until "
        f"{answer.valid_until}, as of {answer.as_of}, tree size {answer.tree_size})"
        + (f", replaced by {answer.replaced_by}" if answer.replaced_by else "")
    )
    if answer.human_text:
        print(f"  {answer.human_text}")
    return 0 if answer.status == "CURRENT" else 1


def _get(args: argparse.Namespace) -> int:
    log_key = _key(args.log_verifier) if args.log_verifier else None
    with connection_from_arguments(args).open() as channel:
        try:
            issued = CardClient(channel, log_key=log_key).get(
                args.card_number, accept_language=args.lang
            )
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
        except CertificateError as error:
            print(f"error: the server's card does not verify: {error}", file=sys.stderr)
            return 1
    Path(args.out).write_text(issued.bundle.to_json(), encoding="utf-8")
    written = [args.out]
    if args.qr:
        render_qr_png(issued.document, args.qr)
        written.append(args.qr)
    verified = " (verified)" if issued.statement is not None else ""
    print(f"card {args.card_number}: wrote {', '.join(written)}{verified}")
    if issued.human_text:
        print(f"  {issued.human_text}")
    return 0


def print_document(statement: DocumentStatement, today: dt.date, checked: list[str]) -> int:
    """Print a verified document, its checkpoint and expiry; 1 when expired, else 0."""
    sys.stdout.write(statement.text)
    print(f"verified: {', '.join(checked)}")
    print(f"issued at checkpoint: tree size {statement.tree_size}")
    if statement.expired(today):
        print(f"EXPIRED: valid until {statement.valid_until} (today is {today})")
        return 1
    print(f"valid until {statement.valid_until}")
    print(
        "check its status online: the ledger may have replaced, revoked or cancelled it since "
        f"tree size {statement.tree_size} (policy-ledger card status / certificate status)"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    today = args.today or dt.datetime.now(dt.UTC).date()
    try:
        bundle = load_bundle(Path(args.card).read_bytes())
        statement = verify_document(
            bundle.certificate,
            _key(args.log_verifier),
            checkpoint=bundle.checkpoint,
            entry=bundle.entry,
            origin=args.origin,
        )
    except (CertificateError, NoteError) as error:
        print(f"error: card rejected: {error}", file=sys.stderr)
        return 1
    checked = ["signature", "inclusion proof"]
    checked += ["checkpoint"] if bundle.checkpoint is not None else []
    checked += ["entry"] if bundle.entry is not None else []
    return print_document(statement, today, checked)
