"""``policy-ledger witness``: run a C2SP tlog-witness for one or more logs (docs/witness.md)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``witness`` command group."""
    witness = commands.add_parser("witness", help="cosign other logs' checkpoints (tlog-witness)")
    sub = witness.add_subparsers(dest="witness_command", required=True)
    keygen = sub.add_parser(
        "keygen",
        help="make a witness key (cosignature/v1, type 0x04)",
        description="Write the witness's signer key to --out (0600), its verifier key to "
        "--out.pub, and print the verifier key.\n\nExample:\n  policy-ledger witness keygen "
        "--name witness.example/w1 --out var/witness.key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("--name", required=True, help="the witness name, e.g. witness.example/w1")
    keygen.add_argument("--out", required=True, help="signer key file to write")
    keygen.set_defaults(handler=_keygen)
    serve = sub.add_parser(
        "serve",
        help="serve POST /add-checkpoint (C2SP tlog-witness) for the given logs",
        description=(
            "Serve the C2SP tlog-witness protocol. Each --log names a log the witness follows\n"
            "by its verifier key (and origin, when not the key's name). State (the latest\n"
            "cosigned checkpoint per log, and evidence of refused ones) lives in --state.\n\n"
            "Example:\n  policy-ledger witness serve --key-file var/witness.key "
            "--state var/witness.db \\\n      --log policy-ledger.example/log+1234abcd+AQ... "
            "--listen 127.0.0.1:8380"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--key-file", required=True, help="the witness's signer key file")
    serve.add_argument("--state", required=True, help="SQLite file of the witness's state")
    serve.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="[ORIGIN=]VERIFIERKEY",
        help="a log to witness (repeat for several logs or keys); @file reads the key",
    )
    serve.add_argument("--listen", default="127.0.0.1:8380", help="host:port (port 0: any)")
    serve.add_argument("--port-file", help="write the port listened on to this file")
    serve.set_defaults(handler=_serve)


def _keygen(args: argparse.Namespace) -> int:
    from clients.witness.keys import WitnessKey

    key = WitnessKey.generate(args.name)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key.private_text())
    Path(f"{out}.pub").write_text(key.verifier_key.encode() + "\n", encoding="utf-8")
    print(key.verifier_key.encode())
    return 0


def parse_log_option(text: str) -> tuple[str, str]:
    """``[ORIGIN=]VERIFIERKEY`` (the key may be ``@file``) -> (origin, verifier key text)."""
    origin, equals, key_text = text.partition("=")
    # A verifier key never contains '=' before its base64, whose padding ends it: split on the
    # first '=' only when what precedes it has no '+' (an origin, not a key).
    if not equals or "+" in origin:
        origin, key_text = "", text
    if key_text.startswith("@"):
        key_text = Path(key_text[1:]).read_text(encoding="utf-8").strip()
    return origin or key_text.split("+", 1)[0], key_text


def _serve(args: argparse.Namespace) -> int:
    from clients.offline.note import NoteError, VerifierKey
    from clients.witness.keys import WitnessKey
    from clients.witness.server import WitnessServer
    from clients.witness.store import WitnessStore
    from clients.witness.witness import Witness

    try:
        key = WitnessKey.load(args.key_file)
        logs: dict[str, list[VerifierKey]] = {}
        for option in args.log:
            origin, key_text = parse_log_option(option)
            logs.setdefault(origin, []).append(VerifierKey.parse(key_text))
    except (NoteError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    store = WitnessStore(args.state)
    server = WitnessServer(Witness(key, logs, store), host or "127.0.0.1", int(port))
    if args.port_file:
        Path(args.port_file).write_text(f"{server.port}\n", encoding="utf-8")

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: an exception raised here lands wherever the signal does, and one that
        # lands in a garbage-collector callback or a __del__ is printed and dropped (the
        # witness then served on); a lock taken here could be the one the interrupted code holds.
        nonlocal stopping
        stopping = True

    # Before saying it serves: a SIGTERM sent the moment that line is read stops it too.
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"witness {key.verifier_key.encode()} on {server.url}", flush=True)
        server.serve_until(lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.shutdown_socket()
        store.close()
    return 0
