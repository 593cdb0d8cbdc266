"""Key history in the log: the genesis entry, rotation and revocation, and an auditor that learns
every key from the log alone (docs/audit.md, "The key history")."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import Engine

from clients.operator import insurer_licensed, key_registered, key_revoked
from clients.samples import sample_events
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.clock import to_micros
from ledger.config import ServerConfig
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.dsse import sign_envelope
from ledger.entry import encode_entry
from ledger.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id
from ledger.merkle import leaf_hash
from ledger.rpc.server import start_server
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.append import Appender, Receipt, read_head
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.key_store import KeyStore
from ledger.storage.migrate import upgrade
from ledger.storage.nodes import node_key
from ledger.storage.tables import checkpoints, log_entries, tree_nodes
from ledger.v1 import events_pb2
from tests.builders import tokens, use_unvaulted_tokens, use_vault
from tests.conftest import KEYS_VALID_FROM, OPERATOR_SIGNER, onboard_directly, pending
from tests.e2e.test_audit import _audit, _self_contained

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
GULF, NAJM = "gulf-health", "najm-care"


@dataclasses.dataclass
class History:
    """A ledger file whose keys rotated and were revoked, and the signers involved."""

    path: Path
    gulf_old: Ed25519Signer
    gulf_new: Ed25519Signer
    najm: Ed25519Signer
    operator_new: Ed25519Signer
    revocation_index: int


def _append(appender: Appender, signer: Ed25519Signer, *events: events_pb2.Event) -> list[int]:
    outcomes = appender.append_batch([pending(signer, event) for event in events], NOW)
    assert all(isinstance(outcome, Receipt) for outcome in outcomes), outcomes
    return [outcome.leaf_index for outcome in outcomes if isinstance(outcome, Receipt)]


def _key(principal: str, signer: Ed25519Signer, role: SignerRole) -> events_pb2.Event:
    return key_registered(
        principal, signer.public_key, role=role, valid_from=KEYS_VALID_FROM, occurred_at=NOW
    )


def _build(path: Path, log_signer: Ed25519Signer) -> History:
    """Gulf rotates its key mid-log (the old one revoked), Najm's only key is revoked, and the
    operator rotates its own key (registered by the old, which the new one then revokes)."""
    engine = create_ledger_engine(sqlite_url(path))
    upgrade(engine)
    use_vault(engine)
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    history = History(
        path,
        *(Ed25519Signer.generate(name) for name in ("gulf-1", "gulf-2", "najm", "operator-2")),
        revocation_index=-1,
    )
    onboard_directly(engine, appender, OPERATOR_SIGNER, GULF, history.gulf_old, NOW)
    onboard_directly(engine, appender, OPERATOR_SIGNER, NAJM, history.najm, NOW)
    _append(appender, history.gulf_old, *sample_events(5, GULF, NOW, tokens=tokens))
    _append(appender, history.najm, *sample_events(3, NAJM, NOW, tokens=tokens))
    old_key = insurer_key_id(history.gulf_old.public_key)
    _, [history.revocation_index] = (
        _append(appender, OPERATOR_SIGNER, _key(GULF, history.gulf_new, SignerRole.INSURER)),
        _append(appender, OPERATOR_SIGNER, key_revoked(old_key, reason="rotated", occurred_at=NOW)),
    )
    _append(
        appender, history.gulf_new, *sample_events(5, GULF, NOW, first_number=50, tokens=tokens)
    )
    najm_key = insurer_key_id(history.najm.public_key)
    _append(appender, OPERATOR_SIGNER, key_revoked(najm_key, reason="left", occurred_at=NOW))
    # The operator's own rotation: the old key registers the new, the new revokes the old.
    _append(appender, OPERATOR_SIGNER, _key("operator", history.operator_new, SignerRole.OPERATOR))
    operator_key = insurer_key_id(OPERATOR_SIGNER.public_key)
    _append(
        appender,
        history.operator_new,
        key_revoked(operator_key, reason="rotated", occurred_at=NOW),
        insurer_licensed(
            "third", name="Third", licence_number="L3", effective=NOW.date(), occurred_at=NOW
        ),
    )
    # What the revocations refuse, at commit time (admission is bypassed here).
    for signer, event in (
        (history.gulf_old, next(sample_events(1, GULF, NOW, first_number=90, tokens=tokens))),
        (
            OPERATOR_SIGNER,
            insurer_licensed(
                "fourth", name="4", licence_number="L4", effective=NOW.date(), occurred_at=NOW
            ),
        ),
    ):
        [refused] = appender.append_batch([pending(signer, event)], NOW)
        assert isinstance(refused, PermissionDenied) and refused.reason == "KEY_REVOKED"
    assert rebuild_and_compare(engine).consistent  # the key table is a projection too
    keys = {key.key_id: key for key in KeyStore(engine).list()}
    assert keys[old_key].revoked_at == NOW and keys[najm_key].revoked_at == NOW
    engine.dispose()
    # Events forged into the file later bypass admission (no vault check): random tokens do.
    use_unvaulted_tokens()
    _self_contained(path)
    return history


def _insert_bypassing_admission(
    path: Path, log_signer: Ed25519Signer, signer: Ed25519Signer, event: events_pb2.Event
) -> int:
    """Append ``event`` signed by ``signer`` straight into the database, recomputing the nodes
    and signing a checkpoint with the real log key (an operator that controls the server)."""
    engine = create_ledger_engine(sqlite_url(path))
    payload = event.SerializeToString(deterministic=True)
    envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, signer, insurer_key_id(signer.public_key))
    with engine.begin() as connection:
        _, tree = read_head(connection)
        leaf_index = tree.size
        data = encode_entry(leaf_index, NOW + dt.timedelta(minutes=1), envelope)
        nodes = tree.append(leaf_hash(data))
        connection.execute(
            log_entries.insert().values(
                leaf_index=leaf_index,
                insurer_id=event.insurer_id,
                event_id=event.event_id,
                leaf_hash=leaf_hash(data),
                payload_sha256=hashlib.sha256(payload).digest(),
                entry_bytes=data,
            )
        )
        connection.execute(
            tree_nodes.insert(), [{"node_key": node_key(n), "hash": h} for n, h in nodes]
        )
        note = sign_checkpoint(Checkpoint(log_signer.name, tree.size, tree.root()), log_signer)
        connection.execute(
            checkpoints.insert().values(
                tree_size=tree.size,
                root_hash=tree.root(),
                note_bytes=note,
                created_at_us=to_micros(NOW),
            )
        )
    engine.dispose()
    _self_contained(path)
    return leaf_index


def test_a_rotated_and_a_revoked_key_audit_clean_from_the_log_alone(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    history = _build(tmp_path / "ledger.db", log_signer)
    for workers in (1, 2):
        code, report = _audit(history.path, format_verifier_key(log_signer), workers=workers)
        assert code == 0, report
        assert report["signers"] == {"log": 1, "operator": 10, GULF: 10, NAJM: 3}


@pytest.mark.parametrize("workers", [1, 2])
def test_an_entry_signed_by_a_revoked_key_inserted_in_the_database_is_named(
    tmp_path: Path, log_signer: Ed25519Signer, workers: int
) -> None:
    history = _build(tmp_path / "ledger.db", log_signer)
    forged = next(sample_events(1, GULF, NOW, first_number=70, tokens=tokens))
    index = _insert_bypassing_admission(history.path, log_signer, history.gulf_old, forged)
    code, report = _audit(history.path, format_verifier_key(log_signer), workers=workers)
    assert code == 1 and report["index"] == index, report
    assert f"revoked by entry {history.revocation_index}" in str(report["found"]), report


def test_an_entry_signed_by_an_unregistered_key_or_a_key_event_not_by_the_operator_is_named(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    history = _build(tmp_path / "ledger.db", log_signer)
    stranger = Ed25519Signer.generate("stranger")
    index = _insert_bypassing_admission(
        history.path,
        log_signer,
        stranger,
        next(sample_events(1, GULF, NOW, first_number=80, tokens=tokens)),
    )
    code, report = _audit(history.path, format_verifier_key(log_signer))
    assert code == 1 and report["index"] == index
    assert "not registered in the log before this entry" in str(report["found"])
    other = _build(tmp_path / "other.db", log_signer)
    self_registered = _key(GULF, stranger, SignerRole.INSURER)
    self_registered.insurer_id = GULF
    index = _insert_bypassing_admission(other.path, log_signer, other.gulf_new, self_registered)
    code, report = _audit(other.path, format_verifier_key(log_signer))
    assert code == 1 and report["index"] == index
    assert "signed by an operator key" in str(report["expected"])


def test_the_operator_key_is_anchored_once(
    engine: Engine, log_signer: Ed25519Signer, tmp_path: Path, database_url: str
) -> None:
    # An empty log cannot start without the operator's key: nothing could ever be signed in it.
    key_path = tmp_path / "log.key"
    key_path.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    config = dataclasses.replace(
        ServerConfig(),
        database_url=database_url,
        listen="127.0.0.1:0",
        log_key_path=key_path,
        insecure_plaintext=True,  # TLS settings are checked first; this test is about the key
    )
    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(start_server(config))
    assert raised.value.reason == "OPERATOR_KEY_REQUIRED"
    assert "--operator-verifier" in raised.value.message
    # The genesis entry names it; the same key again is fine, another is refused at start.
    Appender(engine, log_signer, log_signer.name, OPERATOR_SIGNER.public_key).initialize(NOW)
    Appender(engine, log_signer, log_signer.name, OPERATOR_SIGNER.public_key).initialize(NOW)
    other = Ed25519Signer.generate("operator")
    with pytest.raises(FailedPrecondition) as mismatch:
        Appender(engine, log_signer, log_signer.name, other.public_key).initialize(NOW)
    assert mismatch.value.reason == "OPERATOR_KEY_MISMATCH"
    [genesis] = KeyStore(engine).list()
    assert (genesis.insurer_id, genesis.role, genesis.registered_leaf_index) == (
        "operator",
        SignerRole.OPERATOR,
        0,
    )
    assert rebuild_and_compare(engine).consistent
