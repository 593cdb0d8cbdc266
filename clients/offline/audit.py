"""The full audit: every entry re-hashed, every signature re-verified, every checkpoint checked.

Trusting nothing but the log's verifier key (and the key history of the signers), an auditor
streams every entry of a checkpoint's tree and checks, failing at the first problem with the
entry, what was expected and what was found:

* each entry decodes, and says it is at its position;
* it carries a DSSE signature (Ed25519 over PAE(payloadType, payload)) by a key of the key
  history that was valid at the entry's integrated time;
* the root recomputed from all leaves equals the checkpoint's, whose signature verifies;
* at every size the auditor saw a checkpoint before (its trusted state), the recomputed root
  equals that checkpoint's: a rewritten history is detected even when the server recomputed
  every node and signed new checkpoints consistently, and a checkpoint older than one already
  seen is a rollback.

Part of the offline verifier: imports nothing from the server's ``ledger`` package.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline.merkle import RootBuilder, VerificationFailure, leaf_hash
from clients.offline.note import Checkpoint
from clients.offline.wire import Entry, decode_entry, fields

__all__ = [
    "AuditFailure",
    "AuditItem",
    "AuditReport",
    "KeyRecord",
    "StoredCopies",
    "audit",
    "load_key_history",
    "pae",
]


class AuditFailure(VerificationFailure):
    """The audit found a problem: where, what was expected, what was found."""

    def __init__(self, index: int | None, expected: str, found: str) -> None:
        where = "the log" if index is None else f"entry {index}"
        super().__init__(f"{where}: expected {expected}; found {found}")
        self.index = index
        self.expected = expected
        self.found = found

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (parallel audit)
        return (AuditFailure, (self.index, self.expected, self.found))


@dataclass(frozen=True)
class KeyRecord:
    """One signing key of the key history."""

    key_id: str
    principal: str
    public_key: bytes
    valid_from: dt.datetime
    valid_until: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    def valid_at(self, instant: dt.datetime) -> bool:
        """Whether the key could sign at ``instant``."""
        if instant < self.valid_from:
            return False
        if self.valid_until is not None and instant >= self.valid_until:
            return False
        return self.revoked_at is None or instant < self.revoked_at


def _instant(value: str | None) -> dt.datetime | None:
    return None if not value else dt.datetime.fromisoformat(value)


def load_key_history(path: Path) -> dict[str, KeyRecord]:
    """Keys from a JSON list of {key_id, principal, public_key (base64), valid_from,
    valid_until, revoked_at} (ISO 8601 instants), by key id."""
    records = json.loads(path.read_text(encoding="utf-8"))
    keys: dict[str, KeyRecord] = {}
    for record in records:
        valid_from = _instant(record["valid_from"])
        if valid_from is None:
            raise VerificationFailure(f"key {record['key_id']}: valid_from is required")
        keys[record["key_id"]] = KeyRecord(
            key_id=record["key_id"],
            principal=record["principal"],
            public_key=base64.b64decode(record["public_key"], validate=True),
            valid_from=valid_from,
            valid_until=_instant(record.get("valid_until")),
            revoked_at=_instant(record.get("revoked_at")),
        )
    return keys


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass
class AuditReport:
    """What the audit checked."""

    tree_size: int
    root_hash: bytes = b""
    entries_checked: int = 0
    signatures_checked: int = 0
    checkpoints_checked: int = 0
    signers: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A machine-readable report."""
        return {
            "verdict": "ok",
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "entries_checked": self.entries_checked,
            "signatures_checked": self.signatures_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "signers": self.signers,
        }


def _signer(index: int, entry: Entry, keys: Mapping[str, KeyRecord]) -> str:
    instant = dt.datetime.fromtimestamp(entry.integrated_seconds, dt.UTC) + dt.timedelta(
        microseconds=entry.integrated_nanos // 1000
    )
    message = pae(entry.payload_type, entry.payload)
    seen = []
    for signature in entry.signatures:
        key = keys.get(signature.keyid)
        if key is None:
            seen.append(f"{signature.keyid} (not in the key history)")
            continue
        if not key.valid_at(instant):
            seen.append(f"{signature.keyid} (not valid at {instant.isoformat()})")
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature.sig, message)
        except (InvalidSignature, ValueError):
            seen.append(f"{signature.keyid} (signature does not verify)")
            continue
        return key.principal
    raise AuditFailure(
        index,
        "a signature by a key of the history, valid at the entry's time",
        ", ".join(seen) or "no signature",
    )


@dataclass(frozen=True)
class StoredCopies:
    """What a database stores beside an entry, derived from it (checked against it)."""

    leaf_hash: bytes
    payload_sha256: bytes
    insurer_id: str
    event_id: str


AuditItem = tuple[int, bytes] | tuple[int, bytes, StoredCopies]
"""(index, entry bytes), or with the stored copies a database file keeps beside the entry."""


def _check_copies(position: int, data: bytes, entry: Entry, copies: StoredCopies) -> None:
    """The server's stored copies of what an entry says must agree with the entry bytes."""
    expected = {
        "leaf_hash": (leaf_hash(data), copies.leaf_hash),
        "payload_sha256": (hashlib.sha256(entry.payload).digest(), copies.payload_sha256),
    }
    for column, (wanted, found) in expected.items():
        if wanted != found:
            raise AuditFailure(position, f"stored {column} {wanted.hex()}", found.hex())
    names: dict[int, str] = {}
    for number, value in fields(entry.payload):
        if number in (1, 2) and isinstance(value, bytes):
            names[number] = value.decode("utf-8", errors="replace")
    if (names.get(2), names.get(1)) != (copies.insurer_id, copies.event_id):
        raise AuditFailure(
            position,
            f"stored insurer/event id {names.get(2)}/{names.get(1)} (from the signed payload)",
            f"{copies.insurer_id}/{copies.event_id}",
        )


def _check_one(
    position: int, data: bytes, copies: StoredCopies | None, keys: Mapping[str, KeyRecord]
) -> str:
    try:
        entry = decode_entry(data)
    except (VerificationFailure, UnicodeDecodeError) as error:
        raise AuditFailure(position, "a well-formed LedgerEntry", str(error)) from None
    if entry.leaf_index != position:
        raise AuditFailure(position, f"leaf_index {position}", f"{entry.leaf_index}")
    if copies is not None:
        _check_copies(position, data, entry, copies)
    return _signer(position, entry, keys)


_WORKER_KEYS: Mapping[str, KeyRecord] = {}


def _init_worker(keys: Mapping[str, KeyRecord]) -> None:
    global _WORKER_KEYS  # noqa: PLW0603 (one key history per worker process)
    _WORKER_KEYS = keys


def _check_chunk(chunk: list[tuple[int, bytes, StoredCopies | None]]) -> list[str]:
    return [_check_one(position, data, copies, _WORKER_KEYS) for position, data, copies in chunk]


def _checked(
    entries: Iterable[AuditItem], size: int, keys: Mapping[str, KeyRecord], workers: int
) -> Iterator[tuple[int, bytes, str]]:
    """(position, entry bytes, signer) in order, each entry checked; in ``workers`` processes
    when more than one, with a bounded number of chunks in flight."""

    def positioned() -> Iterator[tuple[int, bytes, StoredCopies | None]]:
        for position, item in enumerate(entries):
            index, data = item[0], item[1]
            if index != position:
                raise AuditFailure(position, f"entry {position} next", f"entry {index}")
            if position >= size:
                raise AuditFailure(position, f"{size} entries", "more")
            yield position, data, (item[2] if len(item) > 2 else None)

    if workers <= 1:
        for position, data, copies in positioned():
            yield position, data, _check_one(position, data, copies, keys)
        return
    chunk_size = 2000
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(dict(keys),)
    ) as pool:
        pending: deque[tuple[list[tuple[int, bytes, StoredCopies | None]], Future[list[str]]]] = (
            deque()
        )
        stream = positioned()
        while True:
            chunk = list(itertools.islice(stream, chunk_size))
            if chunk:
                pending.append((chunk, pool.submit(_check_chunk, chunk)))
            if pending and (not chunk or len(pending) >= 2 * workers):
                done, future = pending.popleft()
                for (position, data, _), principal in zip(done, future.result(), strict=True):
                    yield position, data, principal
            if not chunk and not pending:
                return


def audit(
    entries: Iterable[AuditItem],
    checkpoint: Checkpoint,
    keys: Mapping[str, KeyRecord],
    *,
    trusted: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> AuditReport:
    """Audit ``entries`` (index, bytes) of ``checkpoint``'s tree; raise AuditFailure at the
    first problem. ``trusted``: checkpoints seen before (already verified). ``workers`` > 1
    verifies signatures in that many processes (the audit is bound by Ed25519 checks)."""
    newer = [seen for seen in trusted if seen.size > checkpoint.size]
    if newer:
        raise AuditFailure(
            None,
            f"a checkpoint at least as large as one seen before (size {newer[0].size})",
            f"size {checkpoint.size}: the log was rolled back",
        )
    by_size: dict[int, bytes] = {}
    for seen in [*trusted, checkpoint]:
        if by_size.setdefault(seen.size, seen.root_hash) != seen.root_hash:
            raise AuditFailure(
                None,
                f"one root for tree size {seen.size}",
                "two different signed roots: the log forked (split view)",
            )
    report = AuditReport(tree_size=checkpoint.size)
    builder = RootBuilder()

    def check_root_at(size: int) -> None:
        expected = by_size.get(size)
        if expected is None:
            return
        root = builder.root()
        if root != expected:
            raise AuditFailure(
                None if size == 0 else size - 1,
                f"the root signed at tree size {size}: {base64.b64encode(expected).decode()}",
                f"{base64.b64encode(root).decode()} recomputed from the entries "
                "(history was rewritten)",
            )
        report.checkpoints_checked += 1

    check_root_at(0)
    for position, data, principal in _checked(entries, checkpoint.size, keys, workers):
        report.signers[principal] = report.signers.get(principal, 0) + 1
        report.signatures_checked += 1
        builder.append(leaf_hash(data))
        report.entries_checked += 1
        check_root_at(builder.size)
        if progress is not None:
            progress(position + 1)
    if builder.size != checkpoint.size:
        raise AuditFailure(None, f"{checkpoint.size} entries", f"{builder.size}")
    report.root_hash = builder.root()
    return report
