"""``policy-ledger proof ...``: export C2SP tlog-proof bundles, verify them offline.

Bundles follow https://c2sp.org/tlog-proof (see :mod:`clients.offline.tlog_proof`).

- ``proof export`` asks a server (gRPC ``LedgerService``) for a leaf's entry, the signed
  checkpoint of a tree size and the inclusion proof at that size, and writes the bundle to FILE
  and the entry bytes to FILE.entry.
- ``proof verify`` needs no server: it checks the bundle and the entry with the log's verifier
  key alone, and exits 0 (printing what was verified) or 1 (printing why not).

Wiring: ``register(commands)`` adds the ``proof`` group; each command sets ``handler`` to
:func:`export_command` or :func:`verify_command` (``handler(args) -> exit code``).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import grpc

from clients.channel import Connection, add_connection_arguments, connection_from_arguments
from clients.cli_witness_policy import add_witness_arguments, check_witnesses
from clients.errors import from_rpc_error
from clients.offline.note import NoteError
from clients.offline.tlog_proof import (
    BUNDLE_BYTES_MAX,
    TlogProof,
    leaf_hash,
    parse_tlog_proof,
    serialize_tlog_proof,
    verify_inclusion,
    verify_tlog_proof,
)
from ledger.cli_flags import add_log_verifier
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

__all__ = ["ENTRY_BYTES_MAX", "export_command", "register", "verify_command"]

ENTRY_BYTES_MAX = 4 * 1024 * 1024
"""Largest entry file ``proof verify`` reads (an entry travels in one 4 MiB gRPC message)."""
ENTRY_SUFFIX = ".entry"
"""The entry file is written next to the bundle: FILE + this suffix."""
_TIMEOUT_SECONDS = 30.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``proof`` command group (``export``, ``verify``) to ``commands``."""
    proof = commands.add_parser(
        "proof",
        help="C2SP tlog-proof bundles: export from a server, verify offline",
        description=(
            "Offline-verifiable proofs that an entry is in the log (https://c2sp.org/tlog-proof).\n\n"
            "Example:\n"
            "  policy-ledger proof export --server 127.0.0.1:50051 --credentials var/pki "
            "--as auditor-auditor --leaf-index 42 "
            "--out leaf42.tlog-proof\n"
            "  policy-ledger proof verify --bundle leaf42.tlog-proof "
            "--entry leaf42.tlog-proof.entry --log-verifier @log.key.pub"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = proof.add_subparsers(dest="proof_command", required=True)

    export = sub.add_parser(
        "export",
        help="fetch a leaf's entry, proof and checkpoint from a server; write a bundle",
        description=(
            "Fetches, over gRPC, the entry at --leaf-index (GetEntries), the signed checkpoint of\n"
            "--tree-size (GetCheckpoint; default: the latest) and the inclusion proof of the\n"
            "leaf in that tree (GetInclusionProof). Checks the proof against the checkpoint's\n"
            "root hash (and, with --log-verifier, the checkpoint's signature), then writes the\n"
            "c2sp.org/tlog-proof@v1 bundle to --out and the entry bytes to --out + '.entry'.\n"
            "Exit code 0 on success, 1 when what the server sent does not verify, 2 usage,\n"
            "3 server unreachable or refused.\n\n"
            "Example:\n"
            "  policy-ledger proof export --server 127.0.0.1:50051 --credentials var/pki "
            "--as auditor-auditor --leaf-index 42 "
            "--out leaf42.tlog-proof"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(export)
    export.add_argument("--leaf-index", type=int, required=True, help="the leaf to prove")
    export.add_argument(
        "--tree-size",
        type=int,
        default=0,
        help="prove inclusion in the checkpoint of this tree size (default: the latest)",
    )
    export.add_argument("--out", required=True, help="bundle file (the entry goes to FILE.entry)")
    add_log_verifier(
        export,
        required=False,
        help="optional: also verify the bundle with this verifier key (string or @FILE)",
    )
    export.set_defaults(handler=export_command)

    verify = sub.add_parser(
        "verify",
        help="verify a bundle and its entry offline, with the log's verifier key",
        description=(
            "Verifies, without any server: the checkpoint's Ed25519 signature by the log key\n"
            "(C2SP signed-note), the checkpoint (origin, tree size, root hash) and the RFC 9162\n"
            "inclusion proof of SHA-256(0x00 || entry) at the bundle's leaf index.\n"
            "Exit code 0 and a summary when all hold; 1 and the reason otherwise.\n\n"
            "Example:\n"
            "  policy-ledger proof verify --bundle leaf42.tlog-proof "
            "--entry leaf42.tlog-proof.entry --log-verifier @log.key.pub"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--bundle", required=True, help="the tlog-proof bundle file")
    verify.add_argument("--entry", required=True, help="the entry bytes file")
    add_log_verifier(
        verify,
        required=True,
        help="the log's verifier key <name>+<hex key id>+<base64 key>, or @FILE holding it",
    )
    verify.add_argument(
        "--origin", help="the log's checkpoint origin (default: the verifier key's name)"
    )
    add_witness_arguments(verify)
    verify.set_defaults(handler=verify_command)


def export_command(args: argparse.Namespace) -> int:
    """``proof export``: write the bundle to ``args.out`` and the entry to ``args.out.entry``."""
    try:
        bundle, entry = _fetch_bundle(
            connection_from_arguments(args), args.leaf_index, args.tree_size
        )
        if args.log_verifier:
            verified = verify_tlog_proof(bundle, entry, _read_log_key(args.log_verifier))
            print(f"checked: checkpoint signed by {verified.log_key}")
        out = Path(args.out)
        entry_path = out.with_name(out.name + ENTRY_SUFFIX)
        out.write_bytes(bundle)
        entry_path.write_bytes(entry)
    except (NoteError, _CommandError) as error:  # the offline verifier's one error root
        return _fail(str(error))
    except OSError as error:
        return _fail(f"cannot write {error.filename}: {error.strerror}")
    proof = parse_tlog_proof(bundle)
    print(f"wrote {out} (leaf {proof.index}, {len(proof.hashes)} proof hashes) and {entry_path}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    """``proof verify``: exit 0 and print what was verified; exit 1 and print why not."""
    try:
        bundle = _read_limited(Path(args.bundle), BUNDLE_BYTES_MAX, "bundle")
        entry = _read_limited(Path(args.entry), ENTRY_BYTES_MAX, "entry")
        log_key = _read_log_key(args.log_verifier)
        verified = verify_tlog_proof(bundle, entry, log_key, origin=args.origin)
        # The bundle's checkpoint verified with the log key: now the witness policy, if any.
        cosigned = check_witnesses(args, parse_tlog_proof(bundle).checkpoint)
    except (NoteError, _CommandError) as error:  # the offline verifier's one error root
        return _fail(str(error))
    root = base64.b64encode(verified.root_hash).decode("ascii")
    print(f"verified: the entry is leaf {verified.leaf_index} of the log {verified.origin}")
    print(f"  leaf hash    {verified.leaf_hash.hex()} (SHA-256(0x00 || entry))")
    print(f"  checkpoint   tree size {verified.tree_size}, root hash {root}")
    print(f"  signed by    {verified.log_key} (Ed25519, C2SP signed note)")
    for witness in cosigned:
        print(f"  cosigned by  {witness.witness} at {witness.timestamp} (witness)")
    unchecked = verified.other_signatures - len(cosigned)
    if unchecked:
        print(f"  not checked  {unchecked} other signature line(s)")
    if verified.extra:
        print(f"  not trusted  {len(verified.extra)} bytes of extra data (unauthenticated)")
    return 0


class _CommandError(Exception):
    """A server call failed or answered something unusable, or an input file is unreadable."""


def _fetch_bundle(server: Connection, leaf_index: int, tree_size: int) -> tuple[bytes, bytes]:
    """(bundle, entry) of ``leaf_index`` at ``tree_size`` (0: latest), fetched from ``server``."""
    if leaf_index < 0:
        raise _CommandError(f"--leaf-index must be >= 0, got {leaf_index}")
    if tree_size < 0:
        raise _CommandError(f"--tree-size must be >= 0, got {tree_size}")
    if tree_size and leaf_index >= tree_size:
        raise _CommandError(f"leaf {leaf_index} is not in a tree of size {tree_size}")
    with server.open() as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        try:
            checkpoint = stub.GetCheckpoint(
                pb.GetCheckpointRequest(tree_size=tree_size), timeout=_TIMEOUT_SECONDS
            )
            size = checkpoint.tree_size
            if leaf_index >= size:
                raise _CommandError(
                    f"leaf {leaf_index} is not in the log's latest checkpoint (tree size {size})"
                )
            inclusion = stub.GetInclusionProof(
                pb.GetInclusionProofRequest(leaf_index=leaf_index, tree_size=size),
                timeout=_TIMEOUT_SECONDS,
            )
            entries = [
                (chunk.start_index, data)
                for chunk in stub.GetEntries(
                    pb.GetEntriesRequest(start_index=leaf_index, end_index=leaf_index + 1),
                    timeout=_TIMEOUT_SECONDS,
                )
                for data in chunk.entries
            ]
        except grpc.RpcError as error:
            # Unreachable or refused: exit 3, as every command (policy-ledger's main maps it).
            raise from_rpc_error(error) from None
    if inclusion.tree_size != size or inclusion.leaf_index != leaf_index:
        raise _CommandError(
            f"server sent a proof for leaf {inclusion.leaf_index} at tree size "
            f"{inclusion.tree_size}, asked for leaf {leaf_index} at {size}"
        )
    if len(entries) != 1 or entries[0][0] != leaf_index:
        raise _CommandError(f"server did not send exactly the entry at leaf {leaf_index}")
    entry = entries[0][1]
    # The server's word is checked before it is written: the proof must lead to the root the
    # checkpoint response states (the signature is checked offline, or here with --log-verifier).
    verify_inclusion(
        leaf_index, size, leaf_hash(entry), list(inclusion.hashes), checkpoint.root_hash
    )
    proof = TlogProof(
        index=leaf_index, hashes=tuple(inclusion.hashes), checkpoint=checkpoint.checkpoint
    )
    return serialize_tlog_proof(proof), entry


def _read_log_key(value: str) -> str:
    """The verifier key string of ``value``: the string itself, or @FILE's first line."""
    if not value.startswith("@"):
        return value.strip()
    text = _read_limited(Path(value[1:]), 4096, "log key").decode("utf-8", errors="replace")
    lines = text.strip().splitlines()
    if not lines:
        raise _CommandError(f"log key file {value[1:]} is empty")
    return lines[0].strip()


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise _CommandError(f"cannot read the {what} file {path}: {error.strerror}") from None
    if len(data) > limit:
        raise _CommandError(f"the {what} file {path} is over {limit} bytes")
    return data


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
