"""The full audit of a database file in parallel: each worker process reads its own range.

:func:`clients.offline.audit.audit` with ``workers`` > 1 over a file source
(:class:`RangeSource`, what :meth:`clients.offline.sources.SqliteLedger.entries` returns) comes
here. The auditing process reads only the rowids (to cut the table into ranges of positions) and
the few entries that change the key history; each worker process opens the file itself, reads
its range of rows and checks every entry in it (decoding, position, stored copies, signature
against the key history as it stood before the entry), and sends back only the 32-byte leaf
hashes and how many entries each principal signed. The auditing process rebuilds the tree from
the leaf hashes and checks the roots, as the in-order audit does.

This path only ever *passes* an audit. At the first thing it does not expect (an entry that does
not check, a key event the hint did not name, a root that does not match, a file that changed
under it) it gives up (:class:`Fallback`) and the audit runs again in order, which finds the
first problem and names it, with the same verdict and message as always. So a damaged log costs
a second pass; an intact one is checked at the rate of the workers' signature checks.

Which entries change the key history is learned from the file's key table (``insurer_keys``: the
entries that registered and revoked keys) as a hint only: the hinted entries are decoded and
learned like any other, and a worker that meets a key event the hint did not name gives up.

Part of the offline verifier: imports nothing from the server's ``ledger`` package.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline.audit import (
    KeyHistory,
    KeyRecord,
    _instant,
    _with_keys,
    pae,
)
from clients.offline.merkle import leaf_hash
from clients.offline.wire import Entry, Signature, _varint, decode_entry

__all__ = ["Fallback", "RangeSource", "check_ranges"]

_ROW_COLUMNS = "rowid, leaf_index, entry_bytes, leaf_hash, payload_sha256, insurer_id, event_id"
_CHUNK_MIN = 1000
_CHUNK_MAX = 20_000
"""Positions per task: whole thousands (the command's progress bar moves every 1,000), about
eight tasks per worker so that a worker slowed by the rest of the machine does not hold up the
end, at most 20,000 (640 kB of leaf hashes back)."""


class Fallback(Exception):
    """The parallel path met something it does not expect: run the in-order audit instead."""


@runtime_checkable
class RangeSource(Protocol):
    """Entries a worker process can read by range straight from a SQLite file."""

    path: Path
    tree_size: int

    def key_event_hints(self) -> set[int]:
        """Positions that may hold key events (a hint, checked)."""
        ...


_Timeline = dict[str, tuple[list[int], list[KeyRecord]]]
"""key id -> (positions of the entries that made each version, the KeyRecord versions): the
version valid for entry p is the last one made by an entry before p."""


@dataclass(frozen=True)
class _Task:
    path: str
    first: int
    last_exclusive: int
    first_rowid: int
    last_rowid: int
    key_events: dict[int, bytes]
    """The hinted positions, each with the leaf hash of the bytes the key history was learned
    from: the worker checks it reads the same bytes there."""
    timeline: _Timeline
    log_key: KeyRecord


# -- the faster entry decoder -----------------------------------------------------------------


class _Unusual(Exception):
    """The fast decoder saw something outside its common case: use the strict one."""


def _length(data: bytes, position: int, end: int) -> tuple[int, int]:
    byte = data[position]
    if byte < 0x80:
        position += 1
        length = byte
    else:
        length, position = _varint(data, position)
    if position + length > end:
        raise _Unusual
    return length, position


def _delimited(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Each (one-byte key, value) of a message whose fields are all length-delimited."""
    position, end = 0, len(data)
    while position < end:
        key = data[position]
        length, position = _length(data, position + 1, end)
        yield key, data[position : position + length]
        position += length


def _signature(data: bytes) -> Signature:
    sig, keyid = b"", ""
    for key, value in _delimited(data):
        if key == 0x0A:
            sig = value
        elif key == 0x12:
            keyid = value.decode("utf-8")
        else:
            raise _Unusual
    return Signature(sig, keyid)


def _fast_entry(data: bytes) -> Entry:
    """:func:`clients.offline.wire.decode_entry` for the shape every entry has, without the
    general field list: the same Entry, or :class:`_Unusual` (or an index/decoding error) for
    anything else (repeated or unknown fields, multi-byte keys, a wrong wire type), whereupon
    the strict decoder decides."""
    leaf_index = seconds = nanos = 0
    payload, payload_type = b"", ""
    signatures: tuple[Signature, ...] = ()
    position, end = 0, len(data)
    seen = 0
    while position < end:
        key = data[position]
        if key == 0x08 and not seen & 1:
            leaf_index, position = _varint(data, position + 1)
            seen |= 1
            continue
        length, position = _length(data, position + 1, end)
        value = data[position : position + length]
        position += length
        if key == 0x12 and not seen & 2:
            seconds, nanos = _time(value)
            seen |= 2
        elif key == 0x1A and not seen & 4:
            payload, payload_type, signatures = _envelope(value)
            seen |= 4
        else:
            raise _Unusual
    return Entry(leaf_index, seconds, nanos, payload, payload_type, signatures)


def _time(data: bytes) -> tuple[int, int]:
    seconds = nanos = 0
    position, end = 0, len(data)
    while position < end:
        key = data[position]
        if key == 0x08:
            seconds, position = _varint(data, position + 1)
        elif key == 0x10:
            nanos, position = _varint(data, position + 1)
        else:
            raise _Unusual
    return seconds, nanos


def _envelope(data: bytes) -> tuple[bytes, str, tuple[Signature, ...]]:
    payload, payload_type = b"", ""
    signatures: list[Signature] = []
    for key, value in _delimited(data):
        if key == 0x0A:
            payload = value
        elif key == 0x12:
            payload_type = value.decode("utf-8")
        elif key == 0x1A:
            signatures.append(_signature(value))
        else:
            raise _Unusual
    return payload, payload_type, tuple(signatures)


_stamps: dict[bytes, tuple[int, int]] = {}
"""Integration times by their encoded bytes (as :func:`_common_entry` decoded them)."""
_STAMPS_MAX = 10_000


def _integrated(data: bytes, position: int, end: int) -> tuple[int, int]:
    """(seconds, nanos) of the time message from ``position`` to ``end``: seconds, then nanos
    unless zero."""
    stamp = data[position:end]
    time = _stamps.get(stamp)
    if time is None:  # a batch's entries share one time: most are found
        if data[position] != 0x08:
            raise _Unusual
        seconds, position = _varint(data, position + 1)
        nanos = 0  # absent when zero
        if position != end:
            if data[position] != 0x10:
                raise _Unusual
            nanos, position = _varint(data, position + 1)
            if position != end:
                raise _Unusual
        if len(_stamps) > _STAMPS_MAX:
            _stamps.clear()
        time = _stamps[stamp] = (seconds, nanos)
    return time


def _short(data: bytes, position: int, key: int) -> tuple[bytes, int]:
    """The value of the field at ``position`` if its key is the byte ``key`` and its length
    one byte, and the position after it; :class:`_Unusual` otherwise."""
    if data[position] != key or data[position + 1] >= 0x80:
        raise _Unusual
    after = position + 2 + data[position + 1]
    return data[position + 2 : after], after


def _common_entry(data: bytes) -> Entry:
    """The shape nearly every entry has, read straight through with no field loop: leaf index,
    time (seconds, nanos), and an envelope of payload, payload type and one signature, each
    field once, in field order, every length ending where its message ends; :class:`_Unusual`
    (or an index/decoding error) for anything else, whereupon :func:`_fast_entry` decides."""
    end = len(data)
    if data[0] != 0x08:
        raise _Unusual
    leaf_index, position = _varint(data, 1)
    if data[position] != 0x12 or data[position + 1] >= 0x80:
        raise _Unusual
    position += 2
    time_end = position + data[position - 1]
    seconds, nanos = _integrated(data, position, time_end)
    position = time_end
    if data[position] != 0x1A:
        raise _Unusual
    length, position = _varint(data, position + 1)
    if position + length != end or data[position] != 0x0A:
        raise _Unusual
    length, position = _varint(data, position + 1)
    payload = data[position : position + length]
    position += length
    payload_type, position = _short(data, position, 0x12)
    if data[position] != 0x1A or position + 2 + data[position + 1] != end:
        raise _Unusual  # not exactly one signature, ending the entry
    sig, position = _short(data, position + 2, 0x0A)
    keyid, position = _short(data, position, 0x12)
    if position != end:
        raise _Unusual
    return Entry(
        leaf_index,
        seconds,
        nanos,
        payload,
        payload_type.decode("utf-8"),
        (Signature(sig, keyid.decode("utf-8")),),
    )


def decode_entry_fast(data: bytes) -> Entry:
    """The entry ``data`` decodes to, exactly as :func:`clients.offline.wire.decode_entry`
    (which also raises its errors): the fast decoder first, the strict one when it declines."""
    with contextlib.suppress(Exception):  # entry 0, a time with no nanos, two signatures...
        return _common_entry(data)
    try:
        return _fast_entry(data)
    except Exception:  # anything unusual: the strict decoder gives the verdict
        return decode_entry(data)


def _event_names(payload: bytes) -> tuple[str | None, str | None, bool]:
    """(event id, insurer id, carries a key body) of a ledger.v1.Event payload, as
    ``audit._check_copies`` and ``wire.decode_key_event`` read them; :class:`_Unusual` where
    either would raise or the fast reading is unsure."""
    event_id: str | None = None
    insurer_id: str | None = None
    key_body = False
    position, end = 0, len(payload)
    while position < end:
        key = payload[position]
        if key < 0x80:
            position += 1
        else:
            key, position = _varint(payload, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            if number in (2, 22, 23):
                raise _Unusual
            _, position = _varint(payload, position)
            continue
        if wire_type != 2:
            raise _Unusual
        length = payload[position]
        if length < 0x80:
            position += 1
        else:
            length, position = _varint(payload, position)
        if position + length > end:
            raise _Unusual
        if number == 1:
            event_id = payload[position : position + length].decode("utf-8", errors="replace")
        elif number == 2:  # strict, as the key-event reader decodes it
            insurer_id = payload[position : position + length].decode("utf-8")
        elif number in (22, 23):
            key_body = True
        position += length
    return event_id, insurer_id, key_body


# -- a worker's range -------------------------------------------------------------------------

_connections: dict[str, sqlite3.Connection] = {}
_public_keys: dict[bytes, Ed25519PublicKey] = {}


def _connection(path: str) -> sqlite3.Connection:
    connection = _connections.get(path)
    if connection is None:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        _connections[path] = connection
    return connection


_instants: dict[tuple[int, int], dt.datetime] = {}
"""Integration times as datetimes: a batch's entries share one, so most are found here."""


def _principal(position: int, entry: Entry, task: _Task) -> str:
    """The principal whose signature verifies, as ``audit._signer`` accepts it, or _Unusual."""
    stamp = (entry.integrated_seconds, entry.integrated_nanos)
    instant = _instants.get(stamp)
    if instant is None:
        if len(_instants) > 10_000:
            _instants.clear()
        instant = _instants[stamp] = _instant(stamp)
    message = pae(entry.payload_type, entry.payload)
    for signature in entry.signatures:
        if position == 0:
            record = task.log_key if signature.keyid == task.log_key.key_id else None
        else:
            versions = task.timeline.get(signature.keyid)
            record = None
            if versions is not None:
                at = bisect.bisect_left(versions[0], position) - 1
                record = versions[1][at] if at >= 0 else None
        if record is None:
            continue
        if record.revoked_at is not None and instant >= record.revoked_at:
            continue
        if not record.valid_at(instant):
            continue
        try:
            _public_key(record.public_key).verify(signature.sig, message)
        except InvalidSignature:
            continue
        return record.principal
    raise _Unusual


def _uvarint(data: bytes, position: int) -> tuple[int, int]:
    """:func:`clients.offline.wire._varint`, values of up to three bytes read inline."""
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    second = data[position + 1]
    if second < 0x80:
        return byte & 0x7F | second << 7, position + 2
    third = data[position + 2]
    if third < 0x80:
        return byte & 0x7F | (second & 0x7F) << 7 | third << 14, position + 3
    return _varint(data, position)


_SIGNABLE_TIMES_MAX = 4096
"""Time messages a shape remembers the verdict of (entries of one batch share one; a log of
single-entry batches would otherwise keep one per entry)."""


@dataclass(slots=True)
class _Shape:
    """What the entries one key signs share, cut from one the general path read: the bytes after
    the payload but for the signature (payload type, the one signature's keyid), the start of
    the signed message, and the key record that verifies them up to position ``until``."""

    tail_head: bytes
    """Payload type field, the signature field's key and length, the sig's key and length."""
    tail_rest: bytes
    """The keyid field, which ends the entry."""
    tail_length: int
    pae_prefix: bytes
    record: KeyRecord
    public_key: Ed25519PublicKey
    until: int
    """The last position the record stands for (the key's next event is checked against it)."""
    signable: dict[bytes, bool]
    """Time message bytes -> whether the record may sign at that time."""
    count: int = 0


def _shape_of(position: int, entry: Entry, task: _Task) -> _Shape | None:
    """The shape of ``entry`` (checked, at ``position``), or None if it has not the common one
    (one signature, every length after the payload in one byte) or no key record."""
    if position == 0 or len(entry.signatures) != 1:
        return None
    signature = entry.signatures[0]
    kind, keyid = entry.payload_type.encode(), signature.keyid.encode()
    signature_length = 4 + len(signature.sig) + len(keyid)
    if max(len(kind), len(signature.sig), len(keyid), signature_length) >= 0x80:
        return None
    versions = task.timeline.get(signature.keyid)
    if versions is None:
        return None
    at = bisect.bisect_left(versions[0], position) - 1
    if at < 0:
        return None
    record = versions[1][at]
    tail_head = bytes([0x12, len(kind), *kind, 0x1A, signature_length, 0x0A, len(signature.sig)])
    tail_rest = bytes([0x12, len(keyid), *keyid])
    return _Shape(
        tail_head,
        tail_rest,
        len(tail_head) + len(signature.sig) + len(tail_rest),
        b"DSSEv1 %d %s " % (len(kind), kind),
        record,
        _public_key(record.public_key),
        versions[0][at + 1] if at + 1 < len(versions[0]) else task.last_exclusive,
        {},
    )


def _shaped(data: bytes, position: int, shape: _Shape) -> tuple[bytes, bytes] | None:  # noqa: PLR0911 (each return: not the shape)
    """(payload, sig) of an entry at ``position`` that has ``shape`` and a time its key may sign
    at, read without building an Entry (what :func:`_common_entry` reads, and the key checks of
    :func:`_principal`); None (or an error) for anything else, which the general path then
    reads."""
    if position > shape.until or data[0] != 0x08:
        return None
    leaf_index, at = _uvarint(data, 1)
    if leaf_index != position or data[at] != 0x12 or data[at + 1] >= 0x80:
        return None
    time_end = at + 2 + data[at + 1]
    stamp = data[at + 2 : time_end]
    signable = shape.signable.get(stamp)
    if signable is None:
        try:
            instant = _instant(_integrated(data, at + 2, time_end))
        except Exception:  # not the common time message: the general path decides
            return None
        record = shape.record
        if len(shape.signable) >= _SIGNABLE_TIMES_MAX:  # a bound on a worker's memory
            shape.signable.clear()
        signable = shape.signable[stamp] = not (
            record.revoked_at is not None and instant >= record.revoked_at
        ) and record.valid_at(instant)
    if not signable or data[time_end] != 0x1A:
        return None
    end = len(data)
    length, at = _uvarint(data, time_end + 1)
    if at + length != end or data[at] != 0x0A:
        return None
    length, at = _uvarint(data, at + 1)
    payload_end = at + length
    if (
        payload_end + shape.tail_length != end
        or not data.startswith(shape.tail_head, payload_end)
        or not data.endswith(shape.tail_rest)
    ):
        return None
    return data[at:payload_end], data[
        payload_end + len(shape.tail_head) : end - len(shape.tail_rest)
    ]


def _public_key(public_bytes: bytes) -> Ed25519PublicKey:
    public_key = _public_keys.get(public_bytes)
    if public_key is None:
        public_key = _public_keys[public_bytes] = Ed25519PublicKey.from_public_bytes(public_bytes)
    return public_key


def _check_range(task: _Task) -> tuple[bytes, Counter[str]] | None:  # noqa: PLR0911, PLR0912 (each return: a reason to fall back)
    """Check every entry of the task's range; its leaf hashes and signers, or None when anything
    is not as expected (the in-order audit then finds and names it).

    Most entries are read through the shape of the last entry their keyid's signature ended
    (:func:`_shaped`); the first of each shape, and any entry the shape does not fit, through
    the general decoder and :func:`_principal`."""
    sha256 = hashlib.sha256
    try:
        rows = (
            _connection(task.path)
            .execute(
                f"SELECT {_ROW_COLUMNS} FROM log_entries WHERE rowid >= ? AND rowid <= ? "
                "ORDER BY rowid",
                (task.first_rowid, task.last_rowid),
            )
            .fetchall()
        )
        if len(rows) != task.last_exclusive - task.first:
            return None  # the file changed since the rowids were read
        hashes = bytearray()
        signers: Counter[str] = Counter()
        shapes: dict[bytes, _Shape] = {}  # by their keyid field
        every_shape: list[_Shape] = []
        rest_lengths: list[int] = []
        key_events = task.key_events
        for position, (_, index, data, stored_leaf, digest, insurer_id, event_id) in enumerate(
            rows, task.first
        ):
            if index != position:
                return None
            shaped = shape = None
            for rest_length in rest_lengths:
                shape = shapes.get(data[-rest_length:])
                if shape is not None:
                    try:
                        shaped = _shaped(data, position, shape)
                    except Exception:  # a short entry: the general path reads it
                        shaped = None
                    break
            if shaped is not None:
                payload, sig = shaped
            else:
                entry = decode_entry_fast(bytes(data))
                if entry.leaf_index != position:
                    return None
                payload = entry.payload
            names = _event_names(payload)
            learned = key_events.get(position)
            if names[2] and learned is None:
                return None  # a key event the hint did not name
            digest_leaf = sha256(b"\x00" + data).digest()
            if (
                (learned is not None and learned != digest_leaf)  # not what the keys came from
                or digest_leaf != stored_leaf
                or sha256(payload).digest() != digest
                or names[1] != insurer_id
                or names[0] != event_id
            ):
                return None
            if shape is not None and shaped is not None:
                try:
                    shape.public_key.verify(
                        sig, b"%s%d %s" % (shape.pae_prefix, len(payload), payload)
                    )
                except InvalidSignature:
                    return None  # as _principal: no other signature to try
                shape.count += 1
            else:
                signers[_principal(position, entry, task)] += 1
                shape = _shape_of(position, entry, task)
                if shape is not None:
                    shapes[shape.tail_rest] = shape
                    every_shape.append(shape)
                    if len(shape.tail_rest) not in rest_lengths:
                        rest_lengths.append(len(shape.tail_rest))
            hashes += digest_leaf
        for shape in every_shape:
            if shape.count:
                signers[shape.record.principal] += shape.count
        return bytes(hashes), signers
    except Exception:  # whatever it is, the in-order audit names it
        return None


# -- the auditing process ---------------------------------------------------------------------


def _rowid_ranges(
    connection: sqlite3.Connection, size: int, chunk: int, hinted: set[int]
) -> tuple[list[tuple[int, int, int, int]], dict[int, int]]:
    """(first position, end position, first rowid, last rowid) of each range of ``chunk`` rows
    in stored order (from the table's rowids alone), and the rowid of each ``hinted`` position."""
    ranges: list[tuple[int, int, int, int]] = []
    rowid_of: dict[int, int] = {}
    first_rowid = last_rowid = count = 0
    cursor = connection.execute("SELECT rowid FROM log_entries ORDER BY rowid LIMIT ?", (size,))
    for count, (rowid,) in enumerate(cursor, 1):
        position = count - 1
        if position % chunk == 0:
            first_rowid = rowid
        if position in hinted:
            rowid_of[position] = rowid
        last_rowid = rowid
        if count % chunk == 0:
            ranges.append((count - chunk, count, first_rowid, last_rowid))
    if count % chunk:
        ranges.append((count - count % chunk, count, first_rowid, last_rowid))
    return ranges, rowid_of


def _timeline(
    connection: sqlite3.Connection, rowid_of: dict[int, int], history: KeyHistory
) -> tuple[_Timeline, dict[int, bytes]]:
    """Learn the entries at the hinted positions in order into ``history``; the versions of
    every key record, by the position of the entry that made each, and the leaf hash of each
    entry learned."""
    learned: dict[int, bytes] = {}
    timeline: _Timeline = {}
    before: dict[str, KeyRecord] = {}
    for position, rowid in sorted(rowid_of.items()):
        row = connection.execute(
            "SELECT leaf_index, entry_bytes FROM log_entries WHERE rowid = ?", (rowid,)
        ).fetchone()
        if row is None or row[0] != position:
            raise Fallback
        _with_keys(position, bytes(row[1]), history)
        learned[position] = leaf_hash(bytes(row[1]))
        for record in history.records():
            if before.get(record.key_id) is not record:
                versions = timeline.setdefault(record.key_id, ([], []))
                versions[0].append(position)
                versions[1].append(record)
                before[record.key_id] = record
    return timeline, learned


def check_ranges(
    source: RangeSource, size: int, history: KeyHistory, workers: int
) -> Generator[tuple[bytes, Counter[str]], None, None]:
    """The leaf hashes and signer counts of ``source``'s first ``size`` entries, range by range
    in order, every entry checked in ``workers`` processes; :class:`Fallback` at anything
    unexpected. ``history``: a fresh KeyHistory, learned into from the key events."""
    path = str(source.path)
    chunk = max(_CHUNK_MIN, min(_CHUNK_MAX, size // (8 * workers) // 1000 * 1000))
    try:
        hinted = {0} | {position for position in source.key_event_hints() if position < size}
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ranges, rowid_of = _rowid_ranges(connection, size, chunk, hinted)
            if len(rowid_of) != len(hinted):
                raise Fallback  # fewer entries than the checkpoint or the hint says
            timeline, learned = _timeline(connection, rowid_of, history)
        finally:
            connection.close()
    except Exception:  # a damaged file or key event: the in-order audit names it
        raise Fallback from None
    tasks = [
        _Task(path, first, end, first_rowid, last, learned, timeline, history.log_key)
        for first, end, first_rowid, last in ranges
    ]
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        for checked in pool.map(_check_range, tasks):
            if checked is None:
                raise Fallback
            yield checked
    finally:  # a fallback or a failed root: the ranges not started are not checked
        pool.shutdown(wait=True, cancel_futures=True)
