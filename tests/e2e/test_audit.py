"""The auditor, trusting nothing but the log key: full audits, tamper evidence, rewritten
history, and watching a live server."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from clients.audit_cli import _verify, _watch
from clients.samples import sample_events
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.storage.append import Appender
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from tests.builders import copy_vault, tokens, use_vault
from tests.conftest import OPERATOR_SIGNER, ServerHandle, onboard, onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
INSURER = "gulf-health"
LOG_TABLES = {"log_entries", "checkpoints"}
PROJECTIONS = {
    "insurer_keys",
    "insurers",
    "policies",
    "coverages",
    "premiums",
    "premium_instalments",
    "fee_refunds",
    "insurer_change_notices",
    "transfer_gaps",
    "subject_entries",
}
VAULT = {"person_tokens", "person_identities", "beneficiary_resolutions"}
"""The identity vault: outside the log by design (erasure deletes from it) and not signed: a
damaged row there changes who a token is, which no log check can see (docs/privacy.md, Limits)."""
MUTATIONS = 220
METADATA = "checkpoints:created_at"
"""When a checkpoint was stored: not signed, not hashed, informational only."""


FIRST = 3
"""Leaf 0: the genesis entry (the operator's key); 1, 2: the insurer's key and licence."""


def _vault(folder: Path) -> Engine:
    """A scratch ledger whose identity vault the events' tokens come from (each ledger built
    by :func:`_build` gets a copy, so that one list of events can go into several)."""
    engine = create_ledger_engine(sqlite_url(folder / "vault.db"))
    upgrade(engine)
    use_vault(engine)
    return engine


def _build(path: Path, log_signer: Ed25519Signer, events: list[object]) -> None:
    """A ledger file with the operator, one licensed insurer and ``events`` in batches of 7
    (their tokens from :func:`_vault` of the same folder)."""
    engine = create_ledger_engine(sqlite_url(path))
    upgrade(engine)
    vault = create_ledger_engine(sqlite_url(path.parent / "vault.db"))
    copy_vault(vault, engine)
    vault.dispose()
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    operator = _OPERATOR_SIGNER
    insurer = _INSURER_SIGNER
    onboard_directly(engine, appender, operator, INSURER, insurer, NOW)
    _append(appender, insurer, events)
    engine.dispose()
    _self_contained(path)


def _append(appender: Appender, signer: Ed25519Signer, events: list[object]) -> None:
    for start in range(0, len(events), 7):
        items = [pending(signer, event) for event in events[start : start + 7]]  # type: ignore[arg-type]
        outcomes = appender.append_batch(items, NOW)
        assert all(not isinstance(o, Exception) for o in outcomes), outcomes


def _self_contained(path: Path) -> None:
    with sqlite3.connect(path) as connection:  # one self-contained file, no WAL beside it
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")


_INSURER_SIGNER = Ed25519Signer.generate(INSURER)
_OPERATOR_SIGNER = OPERATOR_SIGNER


def _audit(
    database: Path,
    verifier_key: str,
    state: Path | None = None,
    workers: int = 1,
    *,
    replay: bool = False,
) -> tuple[int, dict[str, object]]:
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(
        database=sqlite_url(database),
        server=None,
        log_verifier=verifier_key,
        state=str(state) if state else None,
        json=True,
        workers=workers,
        replay=replay,
    )
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _verify(args)
    assert out.getvalue(), f"exit {code} without a JSON report: {err.getvalue()}"
    return code, json.loads(out.getvalue())


def _logical(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        # Compared as multisets: a damaged rowid may reorder rows without changing them. A
        # checkpoint's created_at_us is unsigned bookkeeping, compared apart (see METADATA).
        columns = {"checkpoints": "tree_size, root_hash, note_bytes", METADATA: "created_at_us"}
        return {
            name: sorted(
                connection.execute(
                    f'SELECT {columns.get(name, "*")} FROM "{name.split(":")[0]}"'
                ).fetchall(),
                key=repr,
            )
            for name in [*tables, METADATA]
            if not name.startswith("sqlite_")
        }


def _integrity(path: Path) -> str:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.DatabaseError as error:
        return f"malformed: {error}"


def test_a_full_audit_of_a_database_file(tmp_path: Path, log_signer: Ed25519Signer) -> None:
    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(40, INSURER, NOW, tokens=tokens)))
    code, report = _audit(database, format_verifier_key(log_signer))
    assert code == 0, report
    assert report["entries_checked"] == report["tree_size"] == FIRST + 40
    assert report["signers"] == {"log": 1, "operator": 2, INSURER: 40}
    assert report["checkpoints_checked"] >= 7  # every stored checkpoint's root recomputed
    code, parallel = _audit(database, format_verifier_key(log_signer), workers=2)
    assert code == 0 and {**parallel, "seconds": 0} == {**report, "seconds": 0}
    code, replayed = _audit(database, format_verifier_key(log_signer), replay=True)
    assert code == 0, replayed
    with sqlite3.connect(database) as connection:  # a projection row nobody's log produced
        connection.execute("UPDATE policies SET plan = 'VIP' WHERE rowid = 1")
    code, replayed = _audit(database, format_verifier_key(log_signer), replay=True)
    assert code == 1 and "first diverging entry" in str(replayed["message"])
    code, plain = _audit(database, format_verifier_key(log_signer))
    assert code == 0 and plain["verdict"] == "ok"  # the log is intact: only projections changed
    with sqlite3.connect(database) as connection:  # the key table is a projection too
        connection.execute(
            "UPDATE insurer_keys SET revoked_at_us = 1 WHERE insurer_id = ?", [INSURER]
        )
    code, plain = _audit(database, format_verifier_key(log_signer))
    assert code == 0, plain  # the auditor never reads it: it learns the keys from the log
    other = Ed25519Signer.generate(log_signer.name)
    code, report = _audit(database, format_verifier_key(other))
    assert code == 1 and "signature" in str(report["message"])


def test_every_single_byte_mutation_of_the_file_is_reported_or_shown_harmless(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    """>= 200 seeded single-byte mutations of the SQLite file. Each one is either reported by
    `audit verify`, or the test shows why it does not matter to the log: the file reads the same
    (free space, page slack), SQLite itself reports the file malformed, the byte is in tree
    nodes (the server checks them against the signed root before every append, and the auditor
    never uses them), in the projections, the key table among them (`rebuild` reports them;
    the auditor learns the key history from the log itself), or in the identity vault (outside
    the log by design)."""
    from ledger.coverage.rebuild import rebuild_and_compare

    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(60, INSURER, NOW, tokens=tokens)))
    verifier_key = format_verifier_key(log_signer)
    original = database.read_bytes()
    baseline = _logical(database)
    rng = random.Random(20261123)
    outcomes: Counter[str] = Counter()
    for number in range(MUTATIONS):
        data = bytearray(original)
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        mutated = tmp_path / f"mutated-{number}.db"
        mutated.write_bytes(bytes(data))
        code, _ = _audit(mutated, verifier_key)
        if code == 1:
            outcomes["reported by audit verify"] += 1
            continue
        try:
            current = _logical(mutated)
        except sqlite3.DatabaseError:
            outcomes["file reported malformed by SQLite"] += 1
            continue
        changed = {table for table in baseline if current.get(table) != baseline[table]}
        assert not changed & LOG_TABLES, (offset, changed)  # the audit must have seen these
        if not changed:
            integrity = _integrity(mutated)
            outcomes[
                "same content (free space, slack)"
                if integrity == "ok"
                else "index damage reported by integrity_check"
            ] += 1
            continue
        engine = create_ledger_engine(sqlite_url(mutated))
        try:
            if "tree_nodes" in changed and _node_damage_detected(engine):
                outcomes["tree nodes: a proof or the next append fails"] += 1
            elif changed & PROJECTIONS and not rebuild_and_compare(engine).consistent:
                outcomes["projections: reported by rebuild"] += 1
            elif changed <= VAULT:
                outcomes["identity vault, outside the log (not signed)"] += 1
            elif changed <= {"alembic_version"}:
                outcomes["schema version, outside the log"] += 1
            elif changed == {METADATA}:
                outcomes["unsigned bookkeeping (a checkpoint's storage time)"] += 1
            else:
                # The damaged copy is one that queries do not read (the table row behind an
                # index that holds the right key): SQLite's own check reports the mismatch.
                assert _integrity(mutated) != "ok", (offset, changed)
                outcomes["table/index mismatch reported by integrity_check"] += 1
        finally:
            engine.dispose()
        mutated.unlink()
    assert sum(outcomes.values()) == MUTATIONS
    assert outcomes["reported by audit verify"] > 0
    print(dict(outcomes))


def _node_damage_detected(engine: object) -> bool:
    """Whether damaged tree nodes show: the server's pre-append check of the right edge, or an
    inclusion or consistency proof served from the nodes that no longer verifies."""
    from ledger.errors import LedgerError
    from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
    from ledger.storage.append import read_head
    from ledger.storage.log_store import LogStore

    store = LogStore(engine)  # type: ignore[arg-type]
    try:
        with engine.connect() as connection:  # type: ignore[attr-defined]
            read_head(connection)
        head = store.latest_checkpoint()
        _, entries = store.entries(0, head.tree_size)
        for index, data in enumerate(entries):
            _, proof = store.inclusion_proof(index, head.tree_size)
            verify_inclusion(index, head.tree_size, leaf_hash(data), proof, head.root_hash)
        with sqlite3.connect(engine.url.database) as raw:  # type: ignore[attr-defined]
            sizes = [
                (int(size), bytes(root))
                for size, root in raw.execute("SELECT tree_size, root_hash FROM checkpoints")
            ]
        for size, root in sizes:
            if 0 < size < head.tree_size:
                _, proof = store.consistency_proof(size, head.tree_size)
                verify_consistency(size, head.tree_size, proof, root, head.root_hash)
    except (LedgerError, ValueError):
        return True
    return False


def test_a_rewritten_history_is_detected_even_when_every_node_and_checkpoint_was_redone(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    _vault(tmp_path).dispose()
    events = list(sample_events(30, INSURER, NOW, tokens=tokens))
    honest = tmp_path / "honest.db"
    _build(honest, log_signer, events)
    state = tmp_path / "auditor.json"
    code, _ = _audit(honest, format_verifier_key(log_signer), state)
    assert code == 0 and len(json.loads(state.read_text())["checkpoints"]) == 1
    # The operator rewrites a premium (entry 6: leaves 0-2 are the onboarding) to another amount,
    # then recomputes every node and signs fresh checkpoints with the real log key: internally
    # consistent. (The insurer's signature is redone too: say its key leaked.)
    rewritten_events = [type(e)() for e in events]
    for copy, event in zip(rewritten_events, events, strict=True):
        copy.CopyFrom(event)
    assert rewritten_events[3].WhichOneof("body") == "premium_paid"
    rewritten_events[3].premium_paid.amount.amount_minor -= 1
    rewritten = tmp_path / "rewritten.db"
    _build(
        rewritten,
        log_signer,
        [*rewritten_events, *sample_events(5, INSURER, NOW, first_number=90, tokens=tokens)],
    )
    code, fresh = _audit(rewritten, format_verifier_key(log_signer))
    assert code == 0, fresh  # alone, the rewritten log looks fine
    code, report = _audit(rewritten, format_verifier_key(log_signer), state)
    assert code == 1
    assert "history was rewritten" in str(report["found"]), report
    # The same with signatures checked in worker processes.
    code, report = _audit(rewritten, format_verifier_key(log_signer), state, workers=2)
    assert code == 1 and "history was rewritten" in str(report["found"])


def _watch_args(server: ServerHandle, state: Path) -> argparse.Namespace:
    return argparse.Namespace(
        server=server.address,
        credentials=str(server.pki.directory),
        identity=f"auditor-{server.pki.client('auditor', 'auditor') and 'auditor'}",
        insecure_plaintext=False,
        log_verifier=server.log_verifier_key,
        state=str(state),
        interval=0.01,
        iterations=2,
    )


def test_audit_watch_follows_a_live_server_and_alerts_on_a_fork_or_rollback(
    server: ServerHandle,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:

    from clients.insurer import InsurerClient
    from clients.verify import TrustedLog

    onboard(server, operator_signer, INSURER, _INSURER_SIGNER)
    state = tmp_path / "watch.json"
    assert _watch(_watch_args(server, state)) == 0
    with server.channel("insurer", INSURER) as channel:
        client = InsurerClient(
            channel,
            signer=_INSURER_SIGNER,
            log=TrustedLog.from_verifier_key(server.log_verifier_key),
        )
        receipts = [client.submit(event) for event in sample_events(4, INSURER, NOW, tokens=tokens)]
    assert _watch(_watch_args(server, state)) == 0
    seen = json.loads(state.read_text())["checkpoints"]
    assert len(seen) >= 2
    size = receipts[-1].checkpoint.size
    # A checkpoint for the same size with another root, properly signed: a split view.
    forked = sign_checkpoint(Checkpoint(log_signer.name, size, bytes(32)), log_signer).decode()
    state.write_text(json.dumps({"checkpoints": [*seen, forked]}))
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert _watch(_watch_args(server, state)) == 1
    assert "FORK" in err.getvalue()
    # One from the future: the server now looks rolled back.
    future = sign_checkpoint(Checkpoint(log_signer.name, size + 10, bytes(32)), log_signer)
    state.write_text(json.dumps({"checkpoints": [*seen, future.decode()]}))
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert _watch(_watch_args(server, state)) == 1
    assert "ROLLBACK" in err.getvalue()
    # A server that does not answer is not "all is well": exit 3, no traceback.
    unreachable = argparse.Namespace(
        **{**vars(_watch_args(server, state)), "server": "127.0.0.1:1"}
    )
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert _watch(unreachable) == 3
    assert "did not answer" in err.getvalue() and "Traceback" not in err.getvalue()


def _watch_forever_args(server: ServerHandle, state: Path) -> argparse.Namespace:
    return argparse.Namespace(
        **{**vars(_watch_args(server, state)), "interval": 3600.0, "iterations": 0}
    )


def _raise_sigterm_here() -> None:
    """Send this process a SIGTERM and enter a Python function: the handler runs right here."""
    os.kill(os.getpid(), signal.SIGTERM)
    _handlers_run_on_entry()


def _handlers_run_on_entry() -> None:
    """Nothing: entering a Python function is where the interpreter runs pending handlers."""


@pytest.mark.timeout(120)  # a watch that ignored the signal would pause an hour
def test_a_sigterm_during_a_round_lets_the_round_finish_and_ends_the_watch(
    server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler used to raise KeyboardInterrupt wherever the signal landed: in the middle of
    a round, the checkpoint fetched and verified was never added to the state (and in its write,
    the file was left truncated). Now the round ends, its state is written whole, and the watch
    returns 0 without pausing."""
    import clients.audit_cli as audit_cli

    fetch = audit_cli.fetch_checkpoint_note

    def fetch_then_signal(*args: object, **kwargs: object) -> bytes:
        note = fetch(*args, **kwargs)  # type: ignore[arg-type]
        _raise_sigterm_here()
        return note

    monkeypatch.setattr(audit_cli, "fetch_checkpoint_note", fetch_then_signal)
    state = tmp_path / "watch.json"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert _watch(_watch_forever_args(server, state)) == 0
    finally:
        assert signal.getsignal(signal.SIGTERM) == previous  # the watch put it back
    [note] = json.loads(state.read_text(encoding="utf-8"))["checkpoints"]
    assert note.startswith(server.log_verifier_key.split("+")[0] + "\n")
    assert not (tmp_path / "watch.json.new").exists()


@pytest.mark.timeout(120)  # a watch that ignored the signal would pause an hour
def test_a_sigterm_during_the_pause_ends_the_watch_at_once(
    server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clients.audit_cli as audit_cli

    pauses: list[float] = []

    class SignalledClock:
        @staticmethod
        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            _raise_sigterm_here()
            time.sleep(seconds)  # not reached: the handler ends the pause

    monkeypatch.setattr(audit_cli, "time", SignalledClock)
    state = tmp_path / "watch.json"
    assert _watch(_watch_forever_args(server, state)) == 0
    assert pauses == [3600.0]
    assert len(json.loads(state.read_text(encoding="utf-8"))["checkpoints"]) == 1


def _ranges_of(database: Path, verifier_key: str, workers: int = 2) -> list[bytes]:
    """The leaf hashes the parallel path's workers send back, range by range (Fallback raised
    when it gives up)."""
    from clients.offline.audit import KeyHistory
    from clients.offline.audit_ranges import check_ranges
    from clients.offline.note import VerifierKey
    from clients.offline.sources import SqliteLedger

    ledger_file = SqliteLedger(database)
    size = ledger_file.checkpoint_rows()[-1][0]
    key = VerifierKey.parse(verifier_key)
    try:
        return [
            hashes
            for hashes, _ in check_ranges(
                ledger_file.entries(size), size, KeyHistory(key.public_key), workers
            )
        ]
    finally:
        ledger_file.close()


def _stored_leaves(database: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return [
            bytes(row[0])
            for row in connection.execute("SELECT leaf_hash FROM log_entries ORDER BY rowid")
        ]


# signable_max 1: the shapes' memory of signing times is emptied at every new time (its bound
# on a worker's memory), and the verdicts stay the same (the workers are forked: they see it).
@pytest.mark.parametrize("signable_max", [4096, 1])
def test_the_parallel_audit_reads_its_ranges_in_the_workers_and_agrees_with_the_in_order_one(
    tmp_path: Path, log_signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch, signable_max: int
) -> None:
    from clients.offline import audit_ranges

    monkeypatch.setattr(audit_ranges, "_SIGNABLE_TIMES_MAX", signable_max)
    monkeypatch.setattr(audit_ranges, "_CHUNK_MIN", 10)  # 63 entries: 7 ranges
    monkeypatch.setattr(audit_ranges, "_CHUNK_MAX", 10)
    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(60, INSURER, NOW, tokens=tokens)))
    verifier_key = format_verifier_key(log_signer)
    ranges = _ranges_of(database, verifier_key)
    assert [len(hashes) // 32 for hashes in ranges] == [10] * 6 + [3]
    leaves = b"".join(ranges)
    assert [leaves[i : i + 32] for i in range(0, len(leaves), 32)] == _stored_leaves(database)
    code, in_order = _audit(database, verifier_key)
    assert code == 0, in_order
    code, parallel = _audit(database, verifier_key, workers=2)
    assert code == 0 and {**parallel, "seconds": 0} == {**in_order, "seconds": 0}
    # The key table is only a hint: without it a worker meets a key event nobody named, the
    # parallel path gives up, and the in-order audit (which learns keys from the log) passes.
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM insurer_keys")
    with pytest.raises(audit_ranges.Fallback):
        _ranges_of(database, verifier_key)
    code, parallel = _audit(database, verifier_key, workers=2)
    assert code == 0 and {**parallel, "seconds": 0} == {**in_order, "seconds": 0}


@pytest.mark.parametrize("where", ["first range", "last range"])
def test_a_tampered_entry_in_any_worker_range_is_found_and_named_by_its_index(
    tmp_path: Path, log_signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A premium rewritten in the stored entry, with its stored leaf hash and payload digest
    redone to match: only the insurer's signature (and the root) can tell. The worker whose
    range holds it gives up, and the in-order audit names the entry."""
    from clients.offline import audit_ranges

    monkeypatch.setattr(audit_ranges, "_CHUNK_MIN", 10)
    monkeypatch.setattr(audit_ranges, "_CHUNK_MAX", 10)
    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(60, INSURER, NOW, tokens=tokens)))
    verifier_key = format_verifier_key(log_signer)
    size = FIRST + 60
    target = FIRST + 1 if where == "first range" else size - 1
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (data,) = connection.execute(
            "SELECT entry_bytes FROM log_entries WHERE leaf_index = ?", [target]
        ).fetchone()
        from clients.offline.merkle import leaf_hash
        from clients.offline.wire import decode_entry

        payload = decode_entry(bytes(data)).payload
        changed = bytearray(data)
        at = bytes(data).index(payload) + len(payload) - 1  # the payload's last byte
        changed[at] ^= 0x01
        forged = bytes(changed)
        with connection:  # whoever holds the file can drop the append-only trigger
            connection.execute("DROP TRIGGER log_entries_append_only_update")
            connection.execute(
                "UPDATE log_entries SET entry_bytes = ?, leaf_hash = ?, payload_sha256 = ? "
                "WHERE leaf_index = ?",
                [
                    forged,
                    leaf_hash(forged),
                    hashlib.sha256(decode_entry(forged).payload).digest(),
                    target,
                ],
            )
    with pytest.raises(audit_ranges.Fallback):
        _ranges_of(database, verifier_key)
    code, in_order = _audit(database, verifier_key)
    assert code == 1 and in_order["index"] == target, in_order
    assert "signature does not verify" in str(in_order["found"])
    code, parallel = _audit(database, verifier_key, workers=2)
    assert code == 1 and parallel == in_order


def test_the_fast_entry_decoder_agrees_with_the_strict_one_on_every_mutation(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    """The workers' decoder: on thousands of seeded byte mutations and truncations of real
    entries it returns what the strict decoder returns, or raises what it raises."""
    from clients.offline.audit_ranges import _common_entry, decode_entry_fast
    from clients.offline.wire import decode_entry

    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(10, INSURER, NOW, tokens=tokens)))
    with contextlib.closing(sqlite3.connect(database)) as connection:
        entries = [
            bytes(row[0]) for row in connection.execute("SELECT entry_bytes FROM log_entries")
        ]

    def outcome(decode: object, data: bytes) -> object:
        try:
            return decode(data)  # type: ignore[operator]
        except Exception as error:
            return (type(error), str(error))

    # Every entry but the genesis one has the common shape: the straight-through path reads it.
    assert [_common_entry(data) for data in entries[1:]] == [decode_entry(d) for d in entries[1:]]
    rng = random.Random(20261205)
    tried = Counter[str]()
    for _ in range(4000):
        data = bytearray(rng.choice(entries))
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data))]
        elif data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        strict = outcome(decode_entry, bytes(data))
        assert outcome(decode_entry_fast, bytes(data)) == strict
        tried["decoded" if not isinstance(strict, tuple) else "refused"] += 1
    assert tried["decoded"] > 100 and tried["refused"] > 100, tried


def test_the_workers_shaped_reading_agrees_with_the_strict_decoder_on_every_mutation(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    """The workers read most entries through the shape of an earlier one (payload type, one
    signature's keyid, the key record that may sign at the entry's time), without decoding them:
    on thousands of seeded byte mutations and truncations of real entries, what it reads is
    what the strict decoder reads, and it reads nothing it should not (another position, a key
    past its record's last position, a time the key may not sign at)."""
    from clients.offline.audit import KeyRecord
    from clients.offline.audit_ranges import _shape_of, _shaped, _Task
    from clients.offline.wire import decode_entry

    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(10, INSURER, NOW, tokens=tokens)))
    with contextlib.closing(sqlite3.connect(database)) as connection:
        entries = [
            bytes(row[0])
            for row in connection.execute("SELECT entry_bytes FROM log_entries ORDER BY rowid")
        ]
    keyid = decode_entry(entries[-1]).signatures[0].keyid
    earliest = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    record = KeyRecord(keyid, INSURER, bytes(_INSURER_SIGNER.public_key), earliest)
    last = len(entries) - 2  # the record stands for positions 1..last only
    task = _Task("", 0, len(entries), 0, 0, {}, {keyid: ([0, last], [record, record])}, record)
    shapes = {
        position: _shape_of(position, decode_entry(data), task)
        for position, data in enumerate(entries)
        if position >= FIRST
    }
    assert all(shape is not None for shape in shapes.values())

    def read(data: bytes, position: int) -> object:
        shape = shapes[position]
        assert shape is not None
        try:
            return _shaped(data, position, shape)
        except Exception:  # the worker reads such an entry through the general path
            return None

    for position in range(FIRST, last + 1):  # every ordinary entry is read through its shape
        strict = decode_entry(entries[position])
        assert read(entries[position], position) == (strict.payload, strict.signatures[0].sig)
        assert read(entries[position], position + 1) is None  # not its position
    before_last = shapes[last]
    assert before_last is not None and before_last.until == last
    assert _shaped(entries[last + 1], last + 1, before_last) is None  # past the record's last
    revoked = _shape_of(FIRST, decode_entry(entries[FIRST]), task)
    assert revoked is not None
    revoked.record = dataclasses.replace(record, revoked_at=NOW - dt.timedelta(days=1))
    assert _shaped(entries[FIRST], FIRST, revoked) is None  # a time the key may not sign at
    rng = random.Random(20261206)
    tried = Counter[str]()
    for _ in range(4000):
        position = rng.randrange(FIRST, last + 1)
        data = bytearray(entries[position])
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data))]
        else:
            data[rng.randrange(len(data))] = rng.randrange(256)
        shaped = read(bytes(data), position)
        if shaped is None:
            tried["general path"] += 1
            continue
        strict = decode_entry(bytes(data))  # what it read, the strict decoder reads the same
        assert strict.leaf_index == position
        assert len(strict.signatures) == 1 and strict.signatures[0].keyid == keyid
        assert strict.payload_type == decode_entry(entries[position]).payload_type
        assert shaped == (strict.payload, strict.signatures[0].sig)
        tried["shaped"] += 1
    assert tried["shaped"] > 1000 and tried["general path"] > 100, tried


def test_the_parallel_audit_gives_the_in_order_verdict_on_seeded_mutations(
    tmp_path: Path, log_signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-bit flips inside stored entries (any range) and anywhere in the file: `audit
    verify` with two workers reading ranges answers exactly what the in-order audit answers."""
    from clients.offline import audit_ranges

    monkeypatch.setattr(audit_ranges, "_CHUNK_MIN", 10)
    monkeypatch.setattr(audit_ranges, "_CHUNK_MAX", 10)
    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(40, INSURER, NOW, tokens=tokens)))
    verifier_key = format_verifier_key(log_signer)
    original = database.read_bytes()
    with contextlib.closing(sqlite3.connect(database)) as connection:
        stored = [
            bytes(row[0]) for row in connection.execute("SELECT entry_bytes FROM log_entries")
        ]
    rng = random.Random(20261205)
    verdicts: Counter[int] = Counter()
    for number in range(24):
        data = bytearray(original)
        if number % 2 == 0:  # inside an entry's bytes
            entry = rng.choice(stored)
            offset = original.index(entry) + rng.randrange(len(entry))
        else:
            offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        mutated = tmp_path / f"mutated-{number}.db"
        mutated.write_bytes(bytes(data))
        code, in_order = _audit(mutated, verifier_key)
        parallel_code, parallel = _audit(mutated, verifier_key, workers=2)
        assert (parallel_code, {**parallel, "seconds": 0}) == (
            code,
            {**in_order, "seconds": 0},
        ), offset
        verdicts[code] += 1
        mutated.unlink()
    assert verdicts[1] >= 10, verdicts  # the flips inside entries are all found


def test_a_worker_gives_up_when_a_key_event_is_not_the_bytes_the_keys_were_learned_from(
    tmp_path: Path, log_signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key history is learned by the auditing process, the entries are checked by the
    workers, each reading the file itself: a file rewritten between the two readings (here: the
    leaf hash the auditing process noted for the insurer's KeyRegistered, leaf 1, altered) makes
    the parallel path give up rather than check entries against keys from other bytes."""
    from clients.offline import audit_ranges

    database = tmp_path / "ledger.db"
    _vault(tmp_path).dispose()
    _build(database, log_signer, list(sample_events(5, INSURER, NOW, tokens=tokens)))
    verifier_key = format_verifier_key(log_signer)
    assert len(b"".join(_ranges_of(database, verifier_key))) == 32 * (FIRST + 5)
    learn = audit_ranges._timeline

    def other_bytes_at_leaf_1(*args: object) -> object:
        timeline, learned = learn(*args)  # type: ignore[arg-type]
        assert 1 in learned
        return timeline, {**learned, 1: bytes(32)}

    monkeypatch.setattr(audit_ranges, "_timeline", other_bytes_at_leaf_1)
    with pytest.raises(audit_ranges.Fallback):
        _ranges_of(database, verifier_key)


@pytest.mark.parametrize("follow", [False, True])
def test_ranges_of_leaf_hashes_are_checked_against_every_signed_root_inside_them(
    follow: bool,
) -> None:
    """The auditing process adds a range's leaf hashes in bulk but stops at each size it holds
    a signed root for: every root is checked (with or without someone following the progress),
    and a wrong one is named at its size, as the in-order audit names it."""
    from clients.offline.audit import AuditFailure, _audited
    from clients.offline.merkle import RootBuilder, leaf_hash

    leaves = [leaf_hash(b"%d" % number) for number in range(50)]
    roots = {}
    builder = RootBuilder()
    for leaf in leaves:
        builder.append(leaf)
        roots[builder.size] = builder.root()
    ranges = [
        (b"".join(leaves[start : start + 20]), {"insurer": len(leaves[start : start + 20])})
        for start in (0, 20, 40)
    ]
    signed = {size: roots[size] for size in (1, 7, 20, 21, 39, 50)}
    seen: list[int] = []
    report = _audited(ranges, 50, signed, seen.append if follow else None)
    assert (report.entries_checked, report.checkpoints_checked) == (50, 6)
    assert report.root_hash == roots[50] and report.signers == {"insurer": 50}
    assert seen == (list(range(1, 51)) if follow else [])
    with pytest.raises(AuditFailure) as failure:
        _audited(ranges, 50, {**signed, 33: roots[32]}, None)
    assert failure.value.index == 32 and "tree size 33" in failure.value.expected
