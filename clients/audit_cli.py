"""``policy-ledger audit verify`` and ``audit watch``: the auditor's commands.

Both trust nothing but the log's verifier key (``--log-verifier``) and the key history of the
signers. The checks themselves are :mod:`clients.offline` (no server code); this module only
fetches what they need, over gRPC (``--server``) or from a database file (``--database``), and
keeps the auditor's trusted state: every checkpoint it has verified, in a JSON file (``--state``),
so a later rollback, fork or rewritten history is caught.

Exit codes (as every command's, see docs/operations.md): 0 verified; 1 the audit failed or
(watch) an inconsistency alert (the message names the entry, what was expected and what was
found); 2 bad command line or unreadable input; 3 the server is unreachable or refused a call.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from clients.channel import (
    Connection,
    add_connection_arguments,
    add_identity_arguments,
    connection_from_arguments,
)
from ledger.cli_flags import add_log_verifier

__all__ = ["fetch_checkpoint_note", "fetch_entries", "register"]


def _log_key(text: str) -> Any:
    from clients.offline.note import VerifierKey

    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return VerifierKey.parse(text)


class TrustedState:
    """The auditor's memory: every checkpoint note it verified, oldest first (JSON file)."""

    def __init__(self, path: Path | None, key: Any) -> None:
        from clients.offline.note import verify_checkpoint

        self.path = path
        self.notes: list[str] = []
        if path is not None and path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            self.notes = list(stored.get("checkpoints", []))
        # Re-verified on load: the state file is not trusted more than the log key.
        self.checkpoints = [verify_checkpoint(note.encode(), key) for note in self.notes]

    def add(self, note: bytes, checkpoint: Any) -> None:
        if any(seen.size == checkpoint.size for seen in self.checkpoints):
            return
        self.notes.append(note.decode())
        self.checkpoints.append(checkpoint)
        if self.path is not None:
            _replace_file(self.path, json.dumps({"checkpoints": self.notes}, indent=1) + "\n")


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a new file, flushed to disk, renamed over
    the old one. Written in place, a watch stopped or a machine failing mid-write left a
    truncated state file, and the auditor's memory of the checkpoints it verified with it."""
    new = path.with_name(path.name + ".new")
    with new.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(new, path)


def fetch_entries(server: Connection, tree_size: int) -> Iterator[tuple[int, bytes]]:
    """(index, entry bytes) of the first ``tree_size`` entries, streamed from a server."""

    from ledger.v1 import ledger_service_pb2 as pb
    from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

    with server.open() as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        start = 0
        while start < tree_size:
            got = 0
            for chunk in stub.GetEntries(
                pb.GetEntriesRequest(start_index=start, end_index=tree_size), timeout=120
            ):
                for offset, data in enumerate(chunk.entries):
                    yield chunk.start_index + offset, bytes(data)
                    got += 1
            if got == 0:
                return
            start += got


def fetch_checkpoint_note(server: Connection, tree_size: int = 0, min_tree_size: int = 0) -> bytes:
    """The signed checkpoint note (latest, or of exactly ``tree_size``) from a server;
    ``min_tree_size``: never one smaller (``x-min-tree-size``: a server reading from a standby
    that is behind asks its primary, so a watcher never sees a stale size as a rollback)."""

    from clients.auditor import MIN_TREE_SIZE_METADATA
    from ledger.v1 import ledger_service_pb2 as pb
    from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

    metadata = ((MIN_TREE_SIZE_METADATA, str(min_tree_size)),) if min_tree_size > 0 else ()
    with server.open() as channel:
        response = pb_grpc.LedgerServiceStub(channel).GetCheckpoint(
            pb.GetCheckpointRequest(tree_size=tree_size), timeout=30, metadata=metadata
        )
    return bytes(response.checkpoint)


def sqlite_path(url: str) -> Path:
    """The file of a SQLite ``--database`` URL (a URL, as every command's ``--database``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hint = f"--database is a SQLAlchemy URL, e.g. sqlite+pysqlite:///{url}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"{url!r} is not a URL; {hint}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise UsageError(f"audit verify --database reads a SQLite file; {hint}")
    return Path(parsed.database)


def _sources(args: argparse.Namespace, key: Any, state: TrustedState) -> tuple[Any, ...]:
    """(checkpoint note, checkpoint, trusted checkpoints, entries). The key history is not a
    source: the audit learns it from the entries themselves."""
    from clients.offline.audit import AuditFailure
    from clients.offline.merkle import VerificationFailure
    from clients.offline.note import verify_checkpoint
    from clients.offline.sources import SqliteLedger

    if args.database:
        database = SqliteLedger(sqlite_path(args.database))
        rows = database.checkpoint_rows()
        if not rows:
            raise VerificationFailure("the database holds no checkpoint")
        stored = [verify_checkpoint(note, key) for _, _, note in rows]
        for (size, root, _), checkpoint in zip(rows, stored, strict=True):
            if (size, root) != (checkpoint.size, checkpoint.root_hash):
                raise AuditFailure(
                    None,
                    f"stored size and root of checkpoint {checkpoint.size} to match its note",
                    f"size {size}, root {root.hex()}",
                )
        notes = [note for _, _, note in rows]
        trusted = [*state.checkpoints, *stored[:-1]]
        return notes[-1], stored[-1], trusted, database.entries(stored[-1].size)
    server = connection_from_arguments(args)
    note = fetch_checkpoint_note(server)
    checkpoint = verify_checkpoint(note, key)
    return note, checkpoint, state.checkpoints, fetch_entries(server, checkpoint.size)


def _fail(args: argparse.Namespace, error: Exception) -> int:
    from clients.offline.audit import AuditFailure

    if args.json:
        detail: dict[str, Any] = {"verdict": "failed", "message": str(error), "index": None}
        if isinstance(error, AuditFailure):
            detail.update(index=error.index, expected=error.expected, found=error.found)
        print(json.dumps(detail))
    print(f"audit FAILED: {error}", file=sys.stderr)
    return 1


def _replay(args: argparse.Namespace) -> str:
    """Re-run the policy rules over the log and compare with the stored projections (this part
    uses the ledger's own rules code, by design: it checks the server's answers, not the log).
    Returns the first difference, or "" when they agree."""
    if not args.database:
        return "--replay needs --database (a copy of the ledger's file)"
    from ledger.coverage.rebuild import rebuild_and_compare
    from ledger.storage.db import create_ledger_engine

    engine = create_ledger_engine(args.database)
    try:
        report = rebuild_and_compare(engine)
    finally:
        engine.dispose()
    if report.consistent:
        if not args.json:
            print(f"replayed the rules over {report.entries_replayed:,} entries: projections agree")
        return ""
    first = report.divergences[0].describe() if report.divergences else report.refused[0][1]
    return f"first diverging entry {report.first_diverging_leaf_index}: {first}"


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _unreachable(server: str, error: Any) -> int:
    details = error.details() if hasattr(error, "details") else ""
    print(
        f"error: the server at {server} did not answer or refused: {error.code().name} {details}",
        file=sys.stderr,
    )
    return 3


def _verify(args: argparse.Namespace) -> int:
    import grpc

    from clients.cli_witness_policy import check_witnesses
    from clients.offline.merkle import VerificationFailure

    started = time.monotonic()
    try:
        key = _log_key(args.log_verifier)
    except VerificationFailure as error:  # a malformed key is a usage mistake, not a verdict
        return _usage(f"--log-verifier: {error}")
    try:
        state = TrustedState(Path(args.state) if args.state else None, key)
        note, checkpoint, trusted, entries = _sources(args, key, state)
        cosigned = check_witnesses(args, note)
        report = _audit_with_progress(args, entries, checkpoint, trusted, key.public_key, started)
    except (VerificationFailure, grpc.RpcError, OSError, ValueError, KeyError) as error:
        return _error_exit(args, error)
    state.add(note, checkpoint)
    replay = _replay(args) if args.replay else None
    if replay:
        return _fail(args, VerificationFailure(f"replaying the rules: {replay}"))
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps({**report.to_json(), "seconds": round(elapsed, 3)}))
        return 0
    print(
        f"verified: {report.entries_checked:,} entries re-hashed, "
        f"{report.signatures_checked:,} signatures verified against the key history in the log, "
        f"{report.checkpoints_checked} checkpoint(s) matched, root "
        f"{base64.b64encode(report.root_hash).decode()} equals the signed checkpoint of "
        f"size {report.tree_size:,} ({elapsed:.1f} s)"
    )
    for principal, count in sorted(report.signers.items()):
        print(f"  {principal}: {count:,} entries")
    for witness in cosigned:
        print(f"  cosigned by witness {witness.witness} at {witness.timestamp}")
    return 0


class UsageError(ValueError):
    """A command-line value that cannot be used (exit 2), as opposed to data that is damaged."""


def _error_exit(args: argparse.Namespace, error: Exception) -> int:
    """An unreachable or refusing server exits 3, a usage mistake (a bad value, a file that
    cannot be opened) 2; anything else, including data that cannot even be decoded, is a failed
    verdict (1): a damaged database must never pass for a typing mistake."""
    import grpc

    if isinstance(error, grpc.RpcError):
        return _unreachable(args.server, error)
    if isinstance(error, UsageError | OSError):
        return _usage(str(error))
    return _fail(args, error)


def _audit_with_progress(  # noqa: PLR0917 (the audit's inputs, passed through)
    args: argparse.Namespace,
    entries: Any,
    checkpoint: Any,
    trusted: Any,
    log_public_key: bytes,
    started: float,
) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from clients.offline.audit import audit

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} entries"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        transient=True,
        disable=args.json or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("audit", total=checkpoint.size, rate="")

        def advance(done: int) -> None:
            if done % 1000 == 0 or done == checkpoint.size:
                rate = done / max(time.monotonic() - started, 1e-6)
                progress.update(task, completed=done, rate=f"{rate:,.0f}/s")

        return audit(
            entries,
            checkpoint,
            log_public_key,
            trusted=trusted,
            progress=advance,
            workers=args.workers,
        )


class _StopSignals:
    """SIGTERM and SIGINT end a watch between rounds. The handler only sets a flag, and raises
    only out of the pause between rounds: raised anywhere else, an exception lands where the
    signal does (inside the state file's write, or in a garbage-collector callback that prints
    and drops it, so the watch went on)."""

    def __init__(self) -> None:
        self.stopping = False
        self._pausing = False

    def __enter__(self) -> _StopSignals:
        self._previous = {
            signum: signal.signal(signum, self._handle)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self._pausing:
            raise _Stopped

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a stop signal comes."""
        try:
            self._pausing = True
            if not self.stopping:
                time.sleep(seconds)
        except _Stopped:
            pass
        finally:
            self._pausing = False


class _Stopped(Exception):
    """Raised by the stop handler out of :meth:`_StopSignals.pause` only."""


def _watch(args: argparse.Namespace) -> int:
    import grpc

    from clients.cli_witness_policy import check_witnesses
    from clients.offline.merkle import VerificationFailure, verify_consistency
    from clients.offline.note import verify_checkpoint
    from ledger.v1 import ledger_service_pb2 as pb
    from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

    try:
        key = _log_key(args.log_verifier)
        state = TrustedState(Path(args.state), key)
    except (VerificationFailure, OSError, ValueError) as error:
        return _usage(str(error))
    server = connection_from_arguments(args)
    with _StopSignals() as signals:  # SIGTERM or Ctrl-C ends the watch between rounds: exit 0
        rounds = 0
        while (args.iterations == 0 or rounds < args.iterations) and not signals.stopping:
            rounds += 1
            try:
                last = state.checkpoints[-1] if state.checkpoints else None
                note = fetch_checkpoint_note(server, min_tree_size=last.size if last else 0)
                checkpoint = verify_checkpoint(note, key)
                check_witnesses(args, note)
                if last is not None:
                    if checkpoint.size < last.size:
                        raise VerificationFailure(
                            f"ROLLBACK: the log now says size {checkpoint.size}, "
                            f"we saw {last.size} before"
                        )
                    if checkpoint.size == last.size and checkpoint.root_hash != last.root_hash:
                        raise VerificationFailure(
                            f"FORK: two signed roots for size {checkpoint.size} (split view)"
                        )
                    if checkpoint.size > last.size:
                        with server.open() as channel:
                            proof = pb_grpc.LedgerServiceStub(channel).GetConsistencyProof(
                                pb.GetConsistencyProofRequest(
                                    from_tree_size=last.size, to_tree_size=checkpoint.size
                                ),
                                timeout=30,
                            )
                        if last.size > 0:
                            verify_consistency(
                                last.size,
                                checkpoint.size,
                                [bytes(h) for h in proof.hashes],
                                last.root_hash,
                                checkpoint.root_hash,
                            )
                state.add(note, checkpoint)
                print(f"checkpoint size {checkpoint.size:,}: signature and consistency verified")
            except VerificationFailure as alert:
                print(f"ALERT: {alert}", file=sys.stderr)
                return 1
            except grpc.RpcError as error:
                # A watcher that cannot see the log must say so (a supervisor restarts it and
                # pages someone), not exit 0 as if all were well.
                return _unreachable(args.server, error)
            if args.iterations == 0 or rounds < args.iterations:
                signals.pause(args.interval)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` command group."""
    from clients.cli_witness_policy import add_witness_arguments

    audit = commands.add_parser("audit", help="verify the ledger without trusting the server")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser(
        "verify",
        help="stream every entry, re-hash, re-verify every signature and the root",
        description=(
            "Full audit against the log's verifier key alone: every entry re-hashed, every\n"
            "signature verified against the key valid at that entry in the key history the log\n"
            "itself records (genesis entry, KeyRegistered, KeyRevoked), the root recomputed and\n"
            "compared with the signed checkpoint and with every checkpoint in --state (rewrites,\n"
            "rollbacks, forks).\n"
            "Exit 0 verified, 1 failed (with the entry, what was expected and found),\n"
            "2 usage mistake, 3 server unreachable or refused.\n\n"
            "Examples:\n"
            "  policy-ledger audit verify --server 127.0.0.1:50051 --credentials var/pki \\\n"
            "      --as auditor-auditor --log-verifier @log.pub --state auditor.json\n"
            "  policy-ledger audit verify --database sqlite+pysqlite:///var/ledger.db \\\n"
            "      --log-verifier @log.pub --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--server", help="host:port of a policy-ledger server")
    source.add_argument(
        "--database", help="URL of a ledger SQLite file (read-only): sqlite+pysqlite:///PATH"
    )
    add_log_verifier(verify, required=True)
    add_identity_arguments(verify)
    verify.add_argument("--state", help="JSON file of checkpoints verified before (updated)")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--replay",
        action="store_true",
        help="with --database: also re-run the policy rules and compare the projections",
    )
    verify.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes verifying signatures (default: one per core)",
    )
    add_witness_arguments(verify)
    verify.set_defaults(handler=_verify)
    watch = sub.add_parser(
        "watch",
        help="follow new checkpoints; alert on any inconsistency",
        description=(
            "Polls the latest checkpoint, verifies its signature and its consistency with the\n"
            "last one in --state (kept on disk), and alerts (exit 1) on a rollback, a fork or a\n"
            "failed consistency proof; exit 3 when the server does not answer.\n\n"
            "Example:\n"
            "  policy-ledger audit watch --server 127.0.0.1:50051 --credentials var/pki \\\n"
            "      --as auditor-auditor --log-verifier @log.pub --state auditor.json --interval 30"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(watch)
    add_log_verifier(watch, required=True)
    watch.add_argument("--state", required=True, help="JSON file of verified checkpoints")
    watch.add_argument("--interval", type=float, default=30.0, help="seconds between polls")
    watch.add_argument("--iterations", type=int, default=0, help="stop after N polls (0: never)")
    add_witness_arguments(watch)
    watch.set_defaults(handler=_watch)
