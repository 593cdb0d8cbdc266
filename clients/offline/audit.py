"""The full audit: every entry re-hashed, every signature re-verified, every checkpoint checked.

Trusting nothing but the log's verifier key, an auditor streams every entry of a checkpoint's
tree and checks, failing at the first problem with the entry, what was expected and what was
found:

* each entry decodes, and says it is at its position;
* it carries a DSSE signature (Ed25519 over PAE(payloadType, payload)) by a key valid at the
  entry's integrated time, in the key history the log itself wrote before that entry
  (:class:`KeyHistory`): leaf 0 is the genesis entry, a KeyRegistered of the operator's first key
  signed by the log's key; every later KeyRegistered / KeyRevoked must be signed by an operator
  key; a key not registered before an entry, or revoked before it, cannot sign it;
* the root recomputed from all leaves equals the checkpoint's, whose signature verifies;
* at every size the auditor saw a checkpoint before (its trusted state), the recomputed root
  equals that checkpoint's: a rewritten history is detected even when the server recomputed
  every node and signed new checkpoints consistently, and a checkpoint older than one already
  seen is a rollback.

Part of the offline verifier: imports nothing from the server's ``ledger`` package.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline.merkle import HASH_BYTES, RootBuilder, VerificationFailure, leaf_hash
from clients.offline.note import Checkpoint
from clients.offline.wire import Entry, KeyEvent, decode_entry, decode_key_event, fields

__all__ = [
    "AuditFailure",
    "AuditItem",
    "AuditReport",
    "KeyHistory",
    "KeyRecord",
    "StoredCopies",
    "audit",
    "key_id_of",
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
    role: str = ""
    registered_index: int = -1
    """The entry that registered the key (-1: the log's own key, which signs only leaf 0)."""
    revoked_index: int | None = None

    def valid_at(self, instant: dt.datetime) -> bool:
        """Whether the key could sign at ``instant``."""
        if instant < self.valid_from:
            return False
        if self.valid_until is not None and instant >= self.valid_until:
            return False
        return self.revoked_at is None or instant < self.revoked_at


def key_id_of(public_key: bytes) -> str:
    """``ed25519:`` + hex of the first 8 bytes of SHA-256(public key): how the log names keys."""
    return "ed25519:" + hashlib.sha256(public_key).digest()[:8].hex()


def _instant(stamp: tuple[int, int]) -> dt.datetime:
    seconds, nanos = stamp
    return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)


def _integrated_at(entry: Entry) -> dt.datetime:
    return _instant((entry.integrated_seconds, entry.integrated_nanos))


class KeyHistory:
    """The signing keys as the log registered and revoked them, learned entry by entry.

    :meth:`keys_for` gives the records an entry's signatures name *as they stood before it*;
    :meth:`learn` then applies the entry if it is a key event. Only the genesis entry (leaf 0)
    may be signed by the log's own key; a key event must be signed by an operator key valid then.
    """

    def __init__(self, log_public_key: bytes) -> None:
        earliest = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        log_key_id = key_id_of(log_public_key)
        self._log_key = KeyRecord(log_key_id, "log", log_public_key, earliest, role="log")
        self._keys: dict[str, KeyRecord] = {}

    @property
    def log_key(self) -> KeyRecord:
        """The log's own key: it signs only the genesis entry (leaf 0)."""
        return self._log_key

    def keys_for(self, position: int, entry: Entry) -> dict[str, KeyRecord]:
        """The records of the keys ``entry`` names, before ``entry`` is applied."""
        if position == 0:
            return {self._log_key.key_id: self._log_key}
        return {
            signature.keyid: self._keys[signature.keyid]
            for signature in entry.signatures
            if signature.keyid in self._keys
        }

    def learn(self, position: int, entry: Entry) -> None:
        """Apply ``entry`` (already checked to be at ``position``) if it is a key event."""
        try:
            event = decode_key_event(entry.payload)
        except (VerificationFailure, UnicodeDecodeError) as error:
            raise AuditFailure(position, "a well-formed key event", str(error)) from None
        if position == 0:
            if event is None or event.role != "operator" or event.principal != "operator":
                raise AuditFailure(0, "the genesis entry: a KeyRegistered of the operator", "not")
        elif event is not None:
            self._check_operator_signed(position, entry)
        if event is None:
            return
        if event.public_key:
            self._register(position, entry, event)
        else:
            self._revoke(position, entry, event)

    def _check_operator_signed(self, position: int, entry: Entry) -> None:
        instant = _integrated_at(entry)
        for signature in entry.signatures:
            key = self._keys.get(signature.keyid)
            if key is not None and key.role == "operator" and key.valid_at(instant):
                return  # the signature itself is verified with the entry's other checks
        raise AuditFailure(
            position,
            "a key event signed by an operator key valid at its time",
            ", ".join(signature.keyid for signature in entry.signatures) or "no signature",
        )

    def _register(self, position: int, entry: Entry, event: KeyEvent) -> None:
        key_id = key_id_of(event.public_key)
        if key_id in self._keys:
            raise AuditFailure(position, f"key {key_id} registered once", "registered again")
        self._keys[key_id] = KeyRecord(
            key_id=key_id,
            principal=event.principal,
            public_key=event.public_key,
            valid_from=_instant(event.valid_from or (0, 0)),
            valid_until=None if event.valid_until is None else _instant(event.valid_until),
            role=event.role,
            registered_index=position,
        )

    def _revoke(self, position: int, entry: Entry, event: KeyEvent) -> None:
        record = self._keys.get(event.key_id)
        if record is None or record.revoked_at is not None:
            state = "unknown" if record is None else "already revoked"
            raise AuditFailure(position, f"a revocation of a usable key {event.key_id}", state)
        # As the ledger does: a revocation never reaches back before its own entry.
        integrated_at = _integrated_at(entry)
        wanted = integrated_at if event.revoked_from is None else _instant(event.revoked_from)
        self._keys[event.key_id] = replace(
            record, revoked_at=max(wanted, integrated_at), revoked_index=position
        )

    def records(self) -> list[KeyRecord]:
        """Every key learned so far, in registration order."""
        return sorted(self._keys.values(), key=lambda record: record.registered_index)


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
    instant = _integrated_at(entry)
    message = pae(entry.payload_type, entry.payload)
    seen = []
    for signature in entry.signatures:
        key = keys.get(signature.keyid)
        if key is None:
            seen.append(f"{signature.keyid} (not registered in the log before this entry)")
            continue
        if key.revoked_at is not None and instant >= key.revoked_at:
            seen.append(
                f"{signature.keyid} (revoked by entry {key.revoked_index} from "
                f"{key.revoked_at.isoformat()}, before this entry at {instant.isoformat()})"
            )
            continue
        if not key.valid_at(instant):
            seen.append(f"{signature.keyid} (outside its validity at {instant.isoformat()})")
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature.sig, message)
        except (InvalidSignature, ValueError):
            seen.append(f"{signature.keyid} (signature does not verify)")
            continue
        return key.principal
    raise AuditFailure(
        index,
        "a signature by a key the log registered before it, valid at the entry's time",
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


_Checkable = tuple[int, bytes, StoredCopies | None, dict[str, KeyRecord]]
"""(position, entry bytes, stored copies, the records of the keys it names as of before it)."""


def _check_chunk(chunk: list[_Checkable]) -> list[str]:
    return [_check_one(position, data, copies, keys) for position, data, copies, keys in chunk]


def _with_keys(position: int, data: bytes, history: KeyHistory) -> dict[str, KeyRecord]:
    """The key records ``data``'s signatures name, before it; then learn from it. Key history
    is sequential, so this runs in order in the auditing process; the (costly) signature checks
    then run anywhere, each with the records its entry needs."""
    try:
        entry = decode_entry(data)
    except (VerificationFailure, UnicodeDecodeError) as error:
        raise AuditFailure(position, "a well-formed LedgerEntry", str(error)) from None
    if entry.leaf_index != position:
        raise AuditFailure(position, f"leaf_index {position}", f"{entry.leaf_index}")
    keys = history.keys_for(position, entry)
    history.learn(position, entry)
    return keys


def _checked(
    entries: Iterable[AuditItem], size: int, history: KeyHistory, workers: int
) -> Iterator[tuple[int, bytes, str]]:
    """(position, entry bytes, signer) in order, each entry checked; in ``workers`` processes
    when more than one, with a bounded number of chunks in flight."""

    def positioned() -> Iterator[_Checkable]:
        for position, item in enumerate(entries):
            index, data = item[0], item[1]
            if index != position:
                raise AuditFailure(position, f"entry {position} next", f"entry {index}")
            if position >= size:
                raise AuditFailure(position, f"{size} entries", "more")
            keys = _with_keys(position, data, history)
            yield position, data, (item[2] if len(item) > 2 else None), keys

    if workers <= 1:
        for position, data, copies, keys in positioned():
            yield position, data, _check_one(position, data, copies, keys)
        return
    chunk_size = 2000
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[list[_Checkable], Future[list[str]]]] = deque()
        stream = positioned()
        while True:
            chunk = list(itertools.islice(stream, chunk_size))
            if chunk:
                pending.append((chunk, pool.submit(_check_chunk, chunk)))
            if pending and (not chunk or len(pending) >= 2 * workers):
                done, future = pending.popleft()
                for (position, data, _, _), principal in zip(done, future.result(), strict=True):
                    yield position, data, principal
            if not chunk and not pending:
                return


def audit(
    entries: Iterable[AuditItem],
    checkpoint: Checkpoint,
    log_public_key: bytes,
    *,
    trusted: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    history: KeyHistory | None = None,
) -> AuditReport:
    """Audit ``entries`` (index, bytes) of ``checkpoint``'s tree; raise AuditFailure at the
    first problem. ``log_public_key``: the log's key (it signs the checkpoints and the genesis
    entry); every other key is learned from the log. ``trusted``: checkpoints seen before
    (already verified). ``workers`` > 1 verifies signatures in that many processes (the audit is
    bound by Ed25519 checks). ``history``, when given, is the one to learn into (to read after)."""
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
    # The workers read a file source by range themselves (it imports this module).
    from clients.offline.audit_ranges import Fallback, RangeSource, check_ranges  # noqa: PLC0415

    if workers > 1 and history is None and isinstance(entries, RangeSource):
        ranges = check_ranges(entries, checkpoint.size, KeyHistory(log_public_key), workers)
        try:
            return _audited(ranges, checkpoint.size, by_size, progress)
        except (Fallback, AuditFailure):
            pass  # the in-order audit below finds the first problem and names it
        finally:
            ranges.close()
    learned = history if history is not None else KeyHistory(log_public_key)
    checked = (
        (data, principal)
        for _, data, principal in _checked(entries, checkpoint.size, learned, workers)
    )
    return _audited(checked, checkpoint.size, by_size, progress)


def _audited(
    checked: Iterable[tuple[bytes, str]] | Iterable[tuple[bytes, Mapping[str, int]]],
    size: int,
    by_size: Mapping[int, bytes],
    progress: Callable[[int], None] | None,
) -> AuditReport:
    """The report of entries checked in order, each (entry bytes, its signer), or by range,
    each (the range's leaf hashes, how many entries each principal signed): the root recomputed
    and compared with every signed root the auditor holds."""
    report = AuditReport(tree_size=size)
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
    signed_sizes = sorted(by_size)
    for data, signed in checked:
        if isinstance(signed, str):  # one entry
            report.signers[signed] = report.signers.get(signed, 0) + 1
            report.signatures_checked += 1
            builder.append(leaf_hash(data))
            report.entries_checked += 1
            check_root_at(builder.size)
            if progress is not None:
                progress(builder.size)
            continue
        # A range: its leaf hashes, added in bulk up to each size with a signed root (and one
        # at a time when someone follows the progress).
        for principal, count in signed.items():
            report.signers[principal] = report.signers.get(principal, 0) + count
        start = 0
        while start < len(data):
            stop = len(data) if progress is None else start + HASH_BYTES
            following = bisect.bisect_right(signed_sizes, builder.size)
            if following < len(signed_sizes):
                stop = min(stop, start + (signed_sizes[following] - builder.size) * HASH_BYTES)
            leaves = -(-(stop - start) // HASH_BYTES)
            builder.extend(data[start:stop])
            report.signatures_checked += leaves
            report.entries_checked += leaves
            check_root_at(builder.size)
            if progress is not None:
                progress(builder.size)
            start = stop
    if builder.size != size:
        raise AuditFailure(None, f"{size} entries", f"{builder.size}")
    report.root_hash = builder.root()
    return report
