"""``policy-ledger certificate get|verify``: coverage certificates from the command line.

``get`` asks a server for the certificates of a person on a date and writes each as a bundle
file (JSON: the certificate note, the checkpoint and the entry), optionally with its QR code.
``verify`` checks a bundle file, or a bare certificate note (what the QR code holds), offline
with the log's verifier key: exit 0 prints the statement, the checkpoint it was issued at and
"check its status online"; exit 1 says which check failed, or that it expired (valid-until).
It verifies insurance cards and registration certificates too. ``status`` asks the server
whether a document is still current; ``registration`` gets registration certificates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from clients.cards import CardClient
from clients.certificate import CertificateClient, render_qr_png
from clients.channel import add_connection_arguments, connection_from_arguments
from clients.cli_cards import print_document
from clients.cli_witness_policy import add_witness_arguments, check_witnesses, witness_policy
from clients.errors import ClientError
from clients.offline.certificate import (
    CertificateError,
    LogKey,
    load_bundle,
    parse_statement,
)
from clients.offline.document import verify_document
from clients.offline.note import NoteError
from clients.offline.witness_policy import Cosigned
from ledger.cli_flags import PERSON_FORM, add_log_verifier, person_argument

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``certificate`` command group."""
    certificate = commands.add_parser(
        "certificate",
        help="coverage certificates: get one from a server, verify one offline",
        description=(
            "Coverage certificates: a coverage stated and signed by the log key, with the\n"
            "inclusion proof of the entry that created it, verifiable offline.\n\n"
            "Example:\n  policy-ledger certificate verify --certificate card.json "
            "--log-verifier @var/log.key.pub"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = certificate.add_subparsers(dest="certificate_command", required=True)
    get = sub.add_parser(
        "get",
        help="get a person's coverage certificates on a date",
        description=(
            "Asks the server for a certificate per coverage of the person on the date and\n"
            "writes each to --out (the second to FILE-2.json, and so on), with its QR code to\n"
            "--qr when given. With --log-verifier, each is verified before it is written.\n\n"
            "Example:\n  policy-ledger certificate get --server 127.0.0.1:50051 "
            "--credentials var/pki --as operator-operator "
            "--person SA:RESIDENCE_ID:2123456788 --date 2026-11-23 --out card.json --qr card.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(get)
    get.add_argument(
        "--person",
        required=True,
        type=person_argument,
        help=f"{PERSON_FORM}, e.g. SA:RESIDENCE_ID:2123456788",
    )
    get.add_argument("--date", required=True, help="the day covered, YYYY-MM-DD")
    get.add_argument("--out", required=True, help="file to write the certificate bundle to")
    get.add_argument("--qr", help="PNG file to write the certificate's QR code to")
    get.add_argument(
        "--lang",
        default="",
        help="language of the printed text: en, fr or ar; add -u-ca-islamic-umalqura for Hijri",
    )
    add_log_verifier(get, required=False, help="verify with this log verifier key (or @FILE)")
    get.set_defaults(handler=_get)

    verify = sub.add_parser(
        "verify",
        help="verify a certificate offline with the log key",
        description=(
            "Verifies a certificate bundle (from `certificate get`) or a bare certificate note\n"
            "(what the QR code holds): the log key's signature, the statement, the inclusion\n"
            "proof, and the checkpoint and entry when the bundle has them. Exit 0 prints the\n"
            "statement; exit 1 says which check failed.\n\n"
            "Example:\n  policy-ledger certificate verify --certificate card.json "
            "--log-verifier @var/log.key.pub"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--certificate", required=True, help="bundle (JSON) or note file")
    add_log_verifier(verify, required=True)
    verify.add_argument("--origin", help="the log's checkpoint origin (default: the key's name)")
    verify.add_argument("--on", help="also require the stated period to cover this YYYY-MM-DD")
    verify.add_argument(
        "--today", help="the date to check valid-until against, YYYY-MM-DD (default: today)"
    )
    add_witness_arguments(verify)
    verify.set_defaults(handler=_verify)

    page = sub.add_parser(
        "page",
        help="write the verification page, with the log key in it, as one HTML file",
        description=(
            "Writes the certificate verification page (docs/verify-page.md) with the log's\n"
            "verifier key in it: one HTML file that checks a QR code's text or a certificate\n"
            "file in the browser, offline. The server serves the same page with\n"
            "`serve --verify-page-port`.\n\n"
            "Example:\n  policy-ledger certificate page --log-verifier @var/log.key.pub "
            "--out verify.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_verifier(page, required=True)
    page.add_argument("--out", required=True, help="the HTML file to write")
    page.set_defaults(handler=_page)
    # Task E (cards): the status of any signed document, online; registration certificates.
    status = sub.add_parser(
        "status",
        help="ask the server whether a certificate or card is still current",
        description=(
            "Sends the signed document (a bundle or the note a QR code holds) to\n"
            "CoverageService/GetDocumentStatus: CURRENT, EXPIRED, REPLACED, REVOKED or\n"
            "CANCELLED, with the entry that decided it. Exit 0 when CURRENT, 1 otherwise."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(status)
    status.add_argument("--certificate", required=True, help="bundle (JSON) or note file")
    status.add_argument("--lang", default="", help="en, fr or ar")
    status.set_defaults(handler=_status)

    registration = sub.add_parser(
        "registration",
        help="get a person's registration certificates (registered with a fund or insurer)",
    )
    add_connection_arguments(registration)
    registration.add_argument("--person", required=True, type=person_argument, help=PERSON_FORM)
    registration.add_argument("--date", required=True, help="a day the registration holds on")
    registration.add_argument("--out", required=True, help="file to write the bundle to")
    registration.add_argument("--qr", help="PNG file to write the QR code to")
    registration.add_argument("--lang", default="", help="en, fr or ar")
    add_log_verifier(
        registration, required=False, help="verify with this log verifier key (or @FILE)"
    )
    registration.set_defaults(handler=_registration)


def _check_witnesses(args: argparse.Namespace, checkpoint: bytes | None) -> tuple[Cosigned, ...]:
    """The witness policy applies to the bundle's checkpoint (the certificate is the log's)."""
    if witness_policy(args) is None:
        return ()
    if checkpoint is None:
        raise CertificateError("a witness policy needs the bundle's checkpoint: it has none")
    return check_witnesses(args, checkpoint)


def _key(value: str) -> str:
    if value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def _day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option} must be YYYY-MM-DD, got {value!r}") from None


def _numbered(path: Path, number: int) -> Path:
    return path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")


def _get(args: argparse.Namespace) -> int:
    person = args.person
    day = _day(args.date, "--date")
    log_key = _key(args.log_verifier) if args.log_verifier else None
    with connection_from_arguments(args).open() as channel:
        try:
            issued = CertificateClient(channel, log_key=log_key).get(
                person, day, accept_language=args.lang
            )
        except CertificateError as error:
            print(f"error: the server's certificate does not verify: {error}", file=sys.stderr)
            return 1
    for number, certificate in enumerate(issued, 1):
        out = _numbered(Path(args.out), number)
        out.write_text(certificate.bundle.to_json(), encoding="utf-8")
        written = [str(out)]
        if args.qr:
            qr = _numbered(Path(args.qr), number)
            render_qr_png(certificate.bundle.certificate, qr)
            written.append(str(qr))
        coverage = certificate.coverage
        print(
            f"{coverage.insurer_id} {coverage.policy_id}: wrote {', '.join(written)}"
            + (" (verified)" if certificate.statement is not None else "")
        )
        if certificate.human_text:
            print(f"  {certificate.human_text}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    on = _day(args.on, "--on") if args.on else None
    today = _day(args.today, "--today") if args.today else dt.datetime.now(dt.UTC).date()
    data = Path(args.certificate).read_bytes()
    try:
        bundle = load_bundle(data)
        statement = verify_document(
            bundle.certificate,
            _key(args.log_verifier),
            checkpoint=bundle.checkpoint,
            entry=bundle.entry,
            origin=args.origin,
        )
        cosigned = _check_witnesses(args, bundle.checkpoint)
        if on is not None:
            coverage = parse_statement(statement.text)
            if not coverage.covers(on):
                raise CertificateError(
                    f"the certificate's period {coverage.start}..{coverage.end} does not cover {on}"
                )
    except (CertificateError, NoteError) as error:
        print(f"error: certificate rejected: {error}", file=sys.stderr)
        return 1
    checked = ["signature", "inclusion proof"]
    checked += ["checkpoint"] if bundle.checkpoint is not None else []
    checked += ["entry"] if bundle.entry is not None else []
    checked += [f"cosigned by {witness.witness}" for witness in cosigned]
    return print_document(statement, today, checked)


def _status(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(Path(args.certificate).read_bytes())
    except CertificateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with connection_from_arguments(args).open() as channel:
        try:
            answer = CardClient(channel).document_status(
                bundle.certificate, accept_language=args.lang
            )
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
    print(
        f"{answer.kind}: {answer.status} (entry {answer.leaf_index}, valid until "
        f"{answer.valid_until}, as of {answer.as_of}, tree size {answer.tree_size})"
    )
    if answer.human_text:
        print(f"  {answer.human_text}")
    return 0 if answer.status == "CURRENT" else 1


def _registration(args: argparse.Namespace) -> int:
    day = _day(args.date, "--date")
    log_key = _key(args.log_verifier) if args.log_verifier else None
    with connection_from_arguments(args).open() as channel:
        try:
            issued = CardClient(channel, log_key=log_key).registration(
                args.person, day, accept_language=args.lang
            )
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
        except CertificateError as error:
            print(f"error: the server's certificate does not verify: {error}", file=sys.stderr)
            return 1
    for number, document in enumerate(issued, 1):
        out = _numbered(Path(args.out), number)
        out.write_text(document.bundle.to_json(), encoding="utf-8")
        written = [str(out)]
        if args.qr:
            qr = _numbered(Path(args.qr), number)
            render_qr_png(document.document, qr)
            written.append(str(qr))
        print(f"wrote {', '.join(written)}" + (" (verified)" if document.statement else ""))
        if document.human_text:
            print(f"  {document.human_text}")
    return 0


def _page(args: argparse.Namespace) -> int:
    from ledger.verify_page import page_html, page_with_key

    key = _key(args.log_verifier)
    try:
        LogKey.parse(key)
    except CertificateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(page_with_key(page_html(), key))
    print(f"wrote {args.out}: open it in a browser (it needs no network)")
    return 0
