"""``policy-ledger coverage watch``: follow a person's, household's or establishment's coverage
changes as the log sequences them (CoverageService.WatchCoverage; docs/coverage.md "Watching
coverage"). Task C (issue 10 item 9).

Each change is printed with the leaf index of the entry that caused it (prove it with
``policy-ledger proof export``); each heartbeat with the verified tree size to resume from
(``--from``). Exit codes: 0 (``--once``: caught up; else the stream ended), 2 bad command line,
3 refused or unreachable (the status printed; UNAVAILABLE while the server stops: watch again
``--from`` the last tree size printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from clients.channel import connection_from_arguments
from ledger.cli_flags import PERSON_FORM, person_argument, person_text

__all__ = ["register_watch"]

EXAMPLE = (
    "policy-ledger coverage watch --server 127.0.0.1:50051 --credentials var/pki "
    "--as portal-SA --jurisdiction SA --log-verifier @log.pub "
    "--household SA:RESIDENCE_ID:2000000006 --from 0 --once"
)


def _organization(text: str) -> Any:
    """``COUNTRY:REGISTRATION_NUMBER``, e.g. ``SA:7001234567``."""
    from ledger.v1 import types_pb2

    country, _, number = text.partition(":")
    if len(country) != 2 or not country.isupper() or not number:
        raise argparse.ArgumentTypeError(f"not COUNTRY:REGISTRATION_NUMBER: {text!r}")
    return types_pb2.Organization(country_code=country, registration_number=number)


def _line(response: Any) -> str:
    from ledger.v1 import coverage_service_pb2 as pb

    if response.WhichOneof("kind") == "heartbeat":
        return f"caught up at tree size {response.tree_size} (checkpoint verified)"
    entry = response.entry
    lines = []
    for change in entry.changes:
        kind = pb.CoverageChangeKind.Name(change.kind).removeprefix("COVERAGE_CHANGE_KIND_")
        people = ", ".join(person_text(person) for person in change.people) or "-"
        lines.append(
            f"leaf {entry.leaf_index}: {kind} {change.insurer_id}/{change.policy_id} "
            f"[{people}]: {change.detail}"
        )
    return "\n".join(lines)


def _watch(args: argparse.Namespace, trusted_log: Callable[[str], Any]) -> int:
    from google.protobuf import json_format

    from clients.errors import ClientError
    from clients.portal import PortalClient

    last = args.from_tree_size
    with connection_from_arguments(args).open() as channel:
        client = PortalClient(channel, log=trusted_log(args.log_verifier))
        stream = client.watch(
            person=args.person,
            household_sponsor=args.household,
            establishment=args.establishment,
            from_tree_size=args.from_tree_size,
            heartbeat_seconds=args.heartbeat,
            jurisdiction=args.jurisdiction,
        )
        try:
            for response in stream:
                last = response.tree_size
                if args.json:
                    print(json_format.MessageToJson(response, indent=None), flush=True)
                else:
                    print(_line(response), flush=True)
                if args.once and response.WhichOneof("kind") == "heartbeat":
                    stream.cancel()
                    return 0
        except ClientError as error:
            print(f"watch ended: {error}", file=sys.stderr)
            print(f"  resume with: --from {last}", file=sys.stderr)
            return 3
    return 0


def register_watch(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
    trusted_log: Callable[[str], Any],
) -> None:
    """Add ``coverage watch`` to the ``coverage`` commands (``add`` adds the connection and
    log-verifier options, as for ``coverage check``)."""
    watch = add(
        commands,
        "watch",
        "Follow the coverage changes of a person, a household or an establishment as the log\n"
        "sequences them: cancellations, insurer suspensions, premiums overdue, household holds\n"
        "lifted; each with its entry's leaf index. --from the last tree size printed resumes.",
        EXAMPLE,
    )
    subject = watch.add_mutually_exclusive_group(required=True)
    subject.add_argument("--person", type=person_argument, help=PERSON_FORM)
    subject.add_argument("--household", type=person_argument, help=f"the sponsor: {PERSON_FORM}")
    subject.add_argument(
        "--establishment", type=_organization, help="COUNTRY:REGISTRATION_NUMBER (the holder)"
    )
    watch.add_argument(
        "--from", dest="from_tree_size", type=int, default=0, help="tree size to start at"
    )
    watch.add_argument("--heartbeat", type=int, default=0, help="seconds between heartbeats")
    watch.add_argument("--jurisdiction", default="", help="the state the portal acts for, e.g. SA")
    watch.add_argument(
        "--once", action="store_true", help="stop when caught up (after the first heartbeat)"
    )
    watch.add_argument("--json", action="store_true", help="one JSON message per line")
    watch.set_defaults(handler=lambda args: _watch(args, trusted_log))
