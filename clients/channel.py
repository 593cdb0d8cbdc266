"""How a client reaches a server: mTLS with a credentials directory, one form for every command.

A credentials directory is what ``policy-ledger pki init`` writes (or what an operator hands a
party): ``ca.pem`` (the CA that signed the server's certificate) and, per caller,
``<role>-<name>.pem`` / ``<role>-<name>.key``. Every command that talks to a server takes

  --server HOST:PORT --credentials DIR --as ROLE-NAME      (e.g. --as portal-KW)

or the environment variables POLICY_LEDGER_SERVER, POLICY_LEDGER_CREDENTIALS, POLICY_LEDGER_AS.
``--insecure-plaintext`` talks to a development server started with the same flag.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = [
    "ClientCredentials",
    "Connection",
    "add_connection_arguments",
    "add_identity_arguments",
    "connection_from_arguments",
]

_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
"""The largest message a client accepts (entries pages, certificates); the server's own limit
is lower, so this only guards against a misbehaving server."""


@dataclass(frozen=True)
class ClientCredentials:
    """A client's certificate chain and key, and the CA it trusts for the server (all PEM)."""

    root_certificates: bytes
    certificate_chain: bytes
    private_key: bytes

    @classmethod
    def from_files(cls, ca: Path, certificate: Path, key: Path) -> ClientCredentials:
        """Read the three PEM files, with a clear error naming a missing one."""
        try:
            return cls(ca.read_bytes(), certificate.read_bytes(), key.read_bytes())
        except FileNotFoundError as error:
            raise ValueError(
                f"missing credential file {error.filename}: issue one with `policy-ledger pki "
                "issue --role ROLE --name NAME --out DIR`"
            ) from None

    @classmethod
    def from_directory(cls, directory: Path, identity: str) -> ClientCredentials:
        """``ca.pem`` and ``<identity>.pem/.key`` of ``directory`` (identity: ``role-name``)."""
        return cls.from_files(
            directory / "ca.pem", directory / f"{identity}.pem", directory / f"{identity}.key"
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC credentials: verify the server against the CA, present our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to prove who we are (None: plaintext, development only)."""

    address: str
    credentials: ClientCredentials | None

    def open(self) -> grpc.Channel:
        """A new channel (close it after use, e.g. with ``with``)."""
        options = [("grpc.max_receive_message_length", _MESSAGE_BYTES_MAX)]
        if self.credentials is None:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(
            self.address, self.credentials.channel_credentials(), options=options
        )


def add_connection_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add ``--server``, ``--credentials``, ``--as`` and ``--insecure-plaintext``."""
    parser.add_argument(
        "--server",
        required=required and "POLICY_LEDGER_SERVER" not in os.environ,
        default=os.environ.get("POLICY_LEDGER_SERVER"),
        help="HOST:PORT of the ledger's gRPC server (env POLICY_LEDGER_SERVER)",
    )
    add_identity_arguments(parser)


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--credentials``, ``--as`` and ``--insecure-plaintext`` (not ``--server``)."""
    parser.add_argument(
        "--credentials",
        default=os.environ.get("POLICY_LEDGER_CREDENTIALS"),
        help="directory with ca.pem and ROLE-NAME.pem/.key, as `pki init` writes it "
        "(env POLICY_LEDGER_CREDENTIALS)",
    )
    parser.add_argument(
        "--as",
        dest="identity",
        default=os.environ.get("POLICY_LEDGER_AS"),
        help="whose certificate to present, ROLE-NAME, e.g. portal-KW (env POLICY_LEDGER_AS)",
    )
    parser.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="no TLS (only against a development server started with --insecure-plaintext)",
    )


def connection_from_arguments(args: argparse.Namespace) -> Connection:
    """The connection the command line asks for; refuses to guess when credentials are missing."""
    if args.insecure_plaintext:
        return Connection(args.server, None)
    if not args.credentials or not args.identity:
        raise ValueError(
            "say who you are: --credentials DIR --as ROLE-NAME (e.g. --credentials var/pki "
            "--as portal-KW), or --insecure-plaintext for a plaintext development server"
        )
    return Connection(
        args.server, ClientCredentials.from_directory(Path(args.credentials), args.identity)
    )
