"""Flags every command shares: the log keys, with a hint for a mix-up, and the person form.

The log has two keys. ``--log-key-file`` is the private signer key's file (``PRIVATE+KEY+...``,
written by ``policy-ledger keygen --out FILE``): only commands that sign checkpoints take it
(``serve``, ``payments reconcile``). ``--log-verifier`` is the public verifier key
(``<name>+<hex id>+<base64>``, or ``@FILE`` holding it: keygen's ``FILE.pub``): every command
that verifies takes it. Giving one where the other belongs, or the old ``--log-key``, stops
with a hint (exit 2) instead of a confusing parse error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.identifiers import validate_person_id
from ledger.v1 import types_pb2

__all__ = [
    "PERSON_FORM",
    "add_log_key_file",
    "add_log_verifier",
    "person_argument",
    "person_text",
    "read_log_verifier",
]

_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"
_OLD_FLAG_HINT = (
    "--log-key was split in two: --log-key-file FILE for the log's private signer key "
    "(serve, payments reconcile), --log-verifier KEY|@FILE for its public verifier key "
    "(every command that verifies)"
)


class _MixedUpFlag(argparse.Action):
    """A flag that belongs to other commands: stop with a hint naming the right one."""

    def __init__(self, option_strings: Sequence[str], dest: str, hint: str, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.hint = hint

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(self.hint)


def read_log_verifier(value: str) -> str:
    """The verifier key text of ``--log-verifier`` (``@FILE`` is read); refuses a signer key."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise argparse.ArgumentTypeError(
                f"cannot read the log verifier key file {value[1:]}: {error.strerror}"
            ) from None
    if text.startswith(_SIGNER_KEY_PREFIX):
        raise argparse.ArgumentTypeError(
            "that is the log's PRIVATE signer key; --log-verifier takes the public verifier "
            "key (the .pub file keygen wrote next to it). Keep the private key on the server."
        )
    return text


def add_log_verifier(
    parser: argparse.ArgumentParser, *, required: bool, help: str | None = None
) -> None:
    """``--log-verifier KEY|@FILE`` (read into ``args.log_verifier``), with mix-up hints."""
    parser.add_argument(
        "--log-verifier",
        required=required,
        type=read_log_verifier,
        metavar="KEY|@FILE",
        help=help or "the log's public verifier key, or @FILE holding it (keygen's .pub file)",
    )
    parser.add_argument(
        "--log-key-file",
        action=_MixedUpFlag,
        hint="--log-key-file is the log's private key, which only the server uses; this "
        "command verifies: pass the public key as --log-verifier @FILE.pub",
    )
    parser.add_argument("--log-key", action=_MixedUpFlag, hint=_OLD_FLAG_HINT)


def add_log_key_file(parser: argparse.ArgumentParser, *, help: str) -> None:
    """``--log-key-file FILE`` (``args.log_key_file``), with mix-up hints."""
    parser.add_argument("--log-key-file", metavar="FILE", help=help)
    parser.add_argument(
        "--log-verifier",
        action=_MixedUpFlag,
        hint="this command signs checkpoints: it needs the log's private signer key, "
        "--log-key-file FILE; --log-verifier is the public key that auditors use",
    )
    parser.add_argument("--log-key", action=_MixedUpFlag, hint=_OLD_FLAG_HINT)


PERSON_FORM = "COUNTRY:TYPE:VALUE"
"""The one way the command line writes a person, in and out: the form certificates and the
projections use (``SA:RESIDENCE_ID:2123456788``)."""


def person_text(person: types_pb2.PersonId) -> str:
    """``COUNTRY:TYPE:VALUE``: how every command prints a person (as it accepts one)."""
    kind = types_pb2.PersonIdType.Name(person.type).removeprefix("PERSON_ID_TYPE_")
    return f"{person.country_code}:{kind}:{person.value}"


def person_argument(text: str) -> types_pb2.PersonId:
    """Parse ``COUNTRY:TYPE:VALUE`` (an argparse ``type``), checked as the server checks it."""
    country, _, rest = text.partition(":")
    kind, _, value = rest.partition(":")
    if _is_person_type(country) and not _is_person_type(kind):
        raise argparse.ArgumentTypeError(
            f"a person is {PERSON_FORM}, country first: {kind}:{country}:{value}"
        )
    if not (country and kind and value):
        raise argparse.ArgumentTypeError(f"a person is {PERSON_FORM}, e.g. SA:RESIDENCE_ID:...")
    if not _is_person_type(kind):
        raise argparse.ArgumentTypeError(f"unknown identifier type {kind!r}")
    person = types_pb2.PersonId(
        type=types_pb2.PersonIdType.Value(f"PERSON_ID_TYPE_{kind.upper()}"),
        value=value,
        country_code=country,
    )
    violations = validate_person_id(person, "person")
    if violations:
        raise argparse.ArgumentTypeError(f"{text}: {violations[0].description}")
    return person


def _is_person_type(text: str) -> bool:
    return f"PERSON_ID_TYPE_{text.upper()}" in set(types_pb2.PersonIdType.keys())
