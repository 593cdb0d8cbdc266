"""``policy-ledger enrol``: the operator issues a one-time code (``enrol issue``, database), and
a new party trades it for its client certificate (``enrol --server ...``, see
clients/enrolment.py). The flow is in docs/security.md, "Enrolment".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import grpc

from clients.enrolment import enrol, signing_key_file, write_credentials
from ledger.cli_flags import PERSON_FORM, person_argument
from ledger.clock import SystemClock
from ledger.config import ServerConfig
from ledger.coverage.projector import person_ref
from ledger.enrolment import ENROLLABLE_ROLES, check_enrollable, new_code, parse_ttl
from ledger.storage.db import create_ledger_engine
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.storage.migrate import upgrade
from ledger.storage.vault_store import VaultStore

__all__ = ["add_enrol_commands", "add_enrol_serve_options", "apply_enrol_serve_options"]

_ISSUE_DESCRIPTION = """\
Issue a one-time enrolment code for a party (a role and a name). The code is printed once, on
standard output; the database keeps only its SHA-256. It expires after --ttl, is used once, and
is locked after 5 wrong tries (issue a new one to unlock). Issuing a new code for the same party
replaces the old one.

A person (role beneficiary, docs/beneficiaries.md) is named by identifier with --person: the
code is issued for their person token (the identity vault issues one if the person is new),
printed on standard output after the code; the person enrols with that token as --name.

Examples:
  policy-ledger enrol issue --role insurer --name acme-health --ttl 24h
  policy-ledger enrol issue --role beneficiary --person MA:NATIONAL_ID:BE123456 --ttl 7d"""


def _issue(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if (args.name is None) == (args.person is None):
        parser.error("give --name, or --person for a beneficiary (exactly one)")
    if args.person is not None and args.role != "beneficiary":
        parser.error("--person is for --role beneficiary only")
    ttl = parse_ttl(args.ttl)
    engine = create_ledger_engine(args.database or ServerConfig.from_environment().database_url)
    upgrade(engine)
    now = SystemClock().now()
    name = args.name
    if args.person is not None:  # the person's token, from the vault (issued if new)
        [name] = VaultStore(engine).tokens_for([person_ref(args.person)], now)
    check_enrollable(args.role, name)
    code = new_code()
    EnrolmentStore(engine).issue(args.role, name, code, now, ttl)
    engine.dispose()
    print(code)
    if args.person is not None:
        print(name)
    print(
        f"enrolment code for {args.role}/{args.name}, valid until {(now + ttl).isoformat()}; "
        "it is shown only this once",
        file=sys.stderr,
    )
    return 0


_ENROL_DESCRIPTION = """\
Enrol: make a TLS key and a certificate request, trade the operator's one-time code for a client
certificate (the enrolment port checks no client certificate; you check the server's against
--ca), and, as an insurer, have your signing key registered. Writes ROLE-NAME.pem/.key (and
ca.pem) into --out, so `--credentials DIR --as ROLE-NAME` works for every other command.

A person enrols as --role beneficiary with --name their person token (printed by `enrol issue
--person`), and their own Ed25519 signing key: they sign their declarations with it.

Examples:
  policy-ledger enrol --server 127.0.0.1:50052 --ca var/pki/ca.pem --code CODE \\
      --role insurer --name acme-health --signing-key var/acme.key --out var/acme
  policy-ledger enrol --server 127.0.0.1:50052 --ca var/pki/ca.pem --code CODE \\
      --role beneficiary --name pt_abcdefghijklmnopqrstuvwxyz --signing-key var/me.key \\
      --out var/me"""


def _enrol(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    missing = [
        f"--{option.replace('_', '-')}"
        for option in ("server", "ca", "code", "role", "name", "out")
        if not getattr(args, option)
    ]
    if missing:
        parser.error(f"enrolling needs {', '.join(missing)} (or `enrol issue` to make a code)")
    ca = Path(args.ca).read_bytes()
    signer = signing_key_file(Path(args.signing_key), args.name) if args.signing_key else None
    channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root_certificates=ca))
    with channel:
        enrolled = enrol(
            channel,
            code=args.code,
            role=args.role,
            name=args.name,
            signing_key=signer,
            trust_domain=args.trust_domain,
        )
    for path in write_credentials(Path(args.out), args.role, args.name, enrolled, ca):
        print(path)
    if enrolled.key_registered_receipt is not None:
        print(
            f"signing key registered at leaf {enrolled.key_registered_receipt.leaf_index}",
            file=sys.stderr,
        )
    return 0


def add_enrol_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``enrol`` (and ``enrol issue``) to the command line."""
    enrol = commands.add_parser(
        "enrol",
        help="enrolment: trade a one-time code for a client certificate (`enrol issue`: make one)",
        description=_ENROL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enrol.add_argument("--server", help="HOST:PORT of the server's enrolment port")
    enrol.add_argument("--ca", help="the CA of the server's certificate, PEM")
    enrol.add_argument("--code", help="the one-time code the operator gave you")
    enrol.add_argument("--role", choices=ENROLLABLE_ROLES)
    enrol.add_argument("--name", help="the name the code was issued for")
    enrol.add_argument(
        "--signing-key",
        help="insurers and beneficiaries: your Ed25519 signer key file (made, with FILE.pub, if "
        "it does not exist)",
    )
    enrol.add_argument("--out", help="directory to write ROLE-NAME.pem/.key (and ca.pem) into")
    enrol.add_argument("--trust-domain", default="policy-ledger.local", help="SPIFFE trust domain")
    enrol.set_defaults(handler=lambda args: _enrol(enrol, args))
    enrol_commands = enrol.add_subparsers(dest="enrol_command")
    issue = enrol_commands.add_parser(
        "issue",
        help="issue a one-time enrolment code (operator, database)",
        description=_ISSUE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument("--role", required=True, choices=ENROLLABLE_ROLES)
    issue.add_argument("--name", help="insurer id, jurisdiction, or a name")
    issue.add_argument(
        "--person",
        type=person_argument,
        help=f"beneficiaries: the person, {PERSON_FORM} (the code names their person token)",
    )
    issue.add_argument("--ttl", default="24h", help="how long the code is valid: 30m, 24h, 7d")
    issue.add_argument("--database", help="SQLAlchemy URL")
    issue.set_defaults(handler=lambda args: _issue(issue, args))


def add_enrol_serve_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s enrolment port options (all three, or none)."""
    serve.add_argument(
        "--enrol-listen",
        help="host:port of the enrolment port (server certificate only; EnrolmentService only)",
    )
    serve.add_argument("--client-ca-key", help="the client CA's key, PEM: signs enrolled parties")
    serve.add_argument(
        "--operator-key-file",
        help="the operator's signer key: signs enrolled insurers' KeyRegistered events",
    )


def apply_enrol_serve_options(args: argparse.Namespace, config: ServerConfig) -> ServerConfig:
    """``config`` with the enrolment port options of ``serve``."""
    return dataclasses.replace(
        config,
        enrol_listen=args.enrol_listen or config.enrol_listen,
        client_ca_key_path=Path(args.client_ca_key) if args.client_ca_key else None,
        operator_key_path=Path(args.operator_key_file) if args.operator_key_file else None,
    )
