"""The log submits its checkpoints to witnesses in the background and serves the cosignatures;
verifiers apply a K-of-N witness policy. Witnesses run in-process (clients/witness)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.audit_cli import register as register_audit
from clients.cli_proof import register as register_proof
from clients.offline.note import VerifierKey, verify_checkpoint
from clients.offline.witness_policy import WitnessPolicy, WitnessPolicyError, verify_cosignatures
from clients.witness.keys import WitnessKey
from clients.witness.server import WitnessServer
from clients.witness.store import WitnessStore
from clients.witness.witness import Witness
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.ports import free_port


@pytest.fixture
def witnesses(tmp_path: Path, log_signer: Ed25519Signer) -> Iterator[list[WitnessServer]]:
    log_key = VerifierKey.parse(format_verifier_key(log_signer))
    servers = []
    for number in range(2):
        key = WitnessKey(f"witness.example/w{number}", bytes([number + 40]) * 32)
        store = WitnessStore(tmp_path / f"witness-{number}.db")
        server = WitnessServer(Witness(key, {log_signer.name: [log_key]}, store))
        server.start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()


def _option(server: WitnessServer) -> str:
    return f"{server.url}={server_key(server).encode()}"


def server_key(server: WitnessServer) -> VerifierKey:
    return server._server.RequestHandlerClass.witness.key.verifier_key  # type: ignore[attr-defined]


def _latest_note(server: ServerHandle) -> bytes:
    with server.channel("auditor", "witness-test") as channel:
        response = pb_grpc.LedgerServiceStub(channel).GetCheckpoint(pb.GetCheckpointRequest())
    return bytes(response.checkpoint)


def _wait_cosigned(server: ServerHandle, tree_size: int, count: int) -> None:
    witnessing = server.running.witnessing
    assert witnessing is not None
    waiting = witnessing.wait_cosigned(tree_size, count)
    asyncio.run_coroutine_threadsafe(waiting, server.loop).result(timeout=120)


def test_two_of_three_witnesses_cosign_with_one_down(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    witnesses: list[WitnessServer],
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> None:
    down = WitnessKey("witness.example/down", bytes([99]) * 32).verifier_key
    options = (*(_option(w) for w in witnesses), f"http://127.0.0.1:{free_port()}={down.encode()}")
    server = start_server_thread(database_url, log_signer, tmp_path, witnesses=options)
    try:
        onboard(server, operator_signer, "acme-health", insurer_signer)  # appends: not blocked
        log_key = VerifierKey.parse(server.log_verifier_key)
        tree_size = verify_checkpoint(_latest_note(server), log_key).size
        assert tree_size > 0
        _wait_cosigned(server, tree_size, 2)
        note = _latest_note(server)
        # Served = the stored signed note + the cosignature lines; the log key still verifies it.
        assert verify_checkpoint(note, log_key).size == tree_size
        keys = [server_key(w).encode() for w in witnesses] + [down.encode()]
        cosigned = verify_cosignatures(note, WitnessPolicy.parse(keys, 2))
        assert {c.witness for c in cosigned} == {server_key(w).label for w in witnesses}
        with pytest.raises(WitnessPolicyError, match=r"requires 3; missing: witness\.example/down"):
            verify_cosignatures(note, WitnessPolicy.parse(keys, 3))
        witnessing = server.running.witnessing
        assert witnessing is not None
        lagging = [p for p in witnessing.progress if p.lag > 0]
        assert [p.name for p in lagging] == ["witness.example/down"]
        assert lagging[0].failures > 0 and lagging[0].last_error
    finally:
        server.stop()


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="policy-ledger")
    commands = parser.add_subparsers(dest="command", required=True)
    register_proof(commands)
    register_audit(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_verifiers_apply_a_witness_policy_to_served_checkpoints(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    witnesses: list[WitnessServer],
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = (_option(witnesses[0]),)
    server = start_server_thread(database_url, log_signer, tmp_path, witnesses=options)
    try:
        onboard(server, operator_signer, "acme-health", insurer_signer)
        log_key = VerifierKey.parse(server.log_verifier_key)
        tree_size = verify_checkpoint(_latest_note(server), log_key).size
        _wait_cosigned(server, tree_size, 1)
        bundle = tmp_path / "leaf.tlog-proof"
        export = ["proof", "export", *server.cli_arguments("auditor", "auditor")]
        export += ["--leaf-index", "0"]
        assert _run(*export, "--out", str(bundle)) == 0
        verify = ["proof", "verify", "--bundle", str(bundle), "--entry", f"{bundle}.entry"]
        verify += ["--log-verifier", server.log_verifier_key]
        cosigner, other = server_key(witnesses[0]).encode(), server_key(witnesses[1]).encode()
        capsys.readouterr()
        assert _run(*verify, "--witness", cosigner, "--witness-threshold", "1") == 0
        assert f"cosigned by  {server_key(witnesses[0]).label}" in capsys.readouterr().out
        # A witness that never saw the log: the policy is not met, and the message says who.
        assert _run(*verify, "--witness", cosigner, "--witness", other) == 1
        assert f"missing: {server_key(witnesses[1]).label}" in capsys.readouterr().err
        # audit watch refuses the served checkpoint under the unmet policy (an alert).
        watch = ["audit", "watch", *server.cli_arguments("auditor", "auditor"), "--log-verifier"]
        watch += [server.log_verifier_key, "--state", str(tmp_path / "state.json")]
        assert _run(*watch, "--iterations", "1", "--witness", cosigner) == 0
        assert _run(*watch, "--iterations", "1", "--witness", other) == 1
        assert "missing" in capsys.readouterr().err
        if database_url.startswith("sqlite"):  # audit verify of the file: the same cosignatures
            audit = ["audit", "verify", "--database", database_url]
            audit += ["--log-verifier", server.log_verifier_key, "--workers", "1"]
            assert _run(*audit, "--witness", cosigner) == 0
            assert (
                f"cosigned by witness {server_key(witnesses[0]).label}" in capsys.readouterr().out
            )
            assert _run(*audit, "--witness", other) == 1
            assert "missing" in capsys.readouterr().err
    finally:
        server.stop()


def test_a_restarted_log_learns_the_witness_size_from_a_409(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    witnesses: list[WitnessServer],
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> None:
    options = (_option(witnesses[0]),)
    server = start_server_thread(database_url, log_signer, tmp_path, witnesses=options)
    try:
        onboard(server, operator_signer, "acme-health", insurer_signer)
        tree_size = verify_checkpoint(
            _latest_note(server), VerifierKey.parse(server.log_verifier_key)
        ).size
        _wait_cosigned(server, tree_size, 1)
    finally:
        server.stop()
    # A new process knows nothing of the witness: it sends old 0, is told the size, and retries.
    restarted = start_server_thread(database_url, log_signer, tmp_path, witnesses=options)
    try:
        _wait_cosigned(restarted, tree_size, 1)
        witnessing = restarted.running.witnessing
        assert witnessing is not None and witnessing.progress[0].failures == 0
        policy = WitnessPolicy.parse([server_key(witnesses[0]).encode()], 1)
        assert len(verify_cosignatures(_latest_note(restarted), policy)) == 1
    finally:
        restarted.stop()


def test_the_witness_process_keeps_its_state_across_a_restart(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    import urllib.error
    import urllib.request

    from clients.witness.process import running_witness
    from clients.witness.protocol import format_add_checkpoint
    from tests.unit.test_witness import _checkpoint

    log_key = format_verifier_key(Ed25519Signer("example.com/log", bytes(range(32))))

    def post(url: str, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{url}/add-checkpoint", body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return int(reply.status), reply.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    with running_witness(tmp_path, "witness.example/p", log_key) as (url, _):
        assert post(url, format_add_checkpoint(0, [], _checkpoint(3)))[0] == 200
    with running_witness(tmp_path, "witness.example/p", log_key) as (url, _):
        assert post(url, format_add_checkpoint(0, [], _checkpoint(4))) == (409, b"3\n")


def test_an_answer_that_does_not_verify_is_not_stored(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    witnesses: list[WitnessServer],
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> None:
    # The log expects witness 1's key at witness 0's address: the line it gets back is by
    # another key, so it is refused, counted as a failure, and never served.
    expected = server_key(witnesses[1]).encode()
    options = (f"{witnesses[0].url}={expected}",)
    server = start_server_thread(database_url, log_signer, tmp_path, witnesses=options)
    try:
        onboard(server, operator_signer, "acme-health", insurer_signer)
        witnessing = server.running.witnessing
        assert witnessing is not None
        waiting = witnessing.wait_until(lambda progress: progress[0].failures >= 1)
        asyncio.run_coroutine_threadsafe(waiting, server.loop).result(timeout=120)
        assert "no cosignature by witness.example/w1" in witnessing.progress[0].last_error
        note = _latest_note(server)
        assert note.count("\u2014 ".encode()) == 1  # the log's own signature only
    finally:
        server.stop()


def test_certificate_verify_applies_the_policy_to_the_bundles_checkpoint(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    witnesses: list[WitnessServer],
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    capsys: pytest.CaptureFixture[str],
) -> None:

    from clients import samples
    from clients.cli_certificate import register as register_certificate
    from clients.insurer import InsurerClient
    from clients.offline.certificate import load_bundle
    from clients.verify import TrustedLog

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="policy-ledger")
        register_certificate(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return int(args.handler(args))

    server = start_server_thread(
        database_url, log_signer, tmp_path, witnesses=(_option(witnesses[0]),)
    )
    try:
        onboard(server, operator_signer, "gulf-health", insurer_signer)
        now = test_clock.now()
        log = TrustedLog.from_verifier_key(server.log_verifier_key)
        with server.channel("insurer", "gulf-health") as channel:
            receipt = InsurerClient(channel, signer=insurer_signer, log=log).submit(
                samples.policy_issued(1, "gulf-health", now, tokens=tokens)
            )
        _wait_cosigned(server, receipt.leaf_index + 1, 1)
        out = tmp_path / "card.json"
        person = f"SA:RESIDENCE_ID:{samples.iqama(16).value}"
        get = ["certificate", "get", *server.cli_arguments("operator", "operator")]
        get += ["--person", person]
        assert run(*get, "--date", now.date().isoformat(), "--out", str(out)) == 0
        cosigner, other = server_key(witnesses[0]).encode(), server_key(witnesses[1]).encode()
        verify = ["certificate", "verify", "--certificate", str(out)]
        verify += ["--log-verifier", server.log_verifier_key]
        capsys.readouterr()
        assert run(*verify, "--witness", cosigner) == 0
        assert f"cosigned by {server_key(witnesses[0]).label}" in capsys.readouterr().out
        assert run(*verify, "--witness", cosigner, "--witness", other) == 1
        assert f"missing: {server_key(witnesses[1]).label}" in capsys.readouterr().err
        bare = tmp_path / "card.note"  # the certificate alone: no checkpoint to hold the policy to
        bare.write_bytes(load_bundle(out.read_bytes()).certificate)
        assert run("certificate", "verify", "--certificate", str(bare), "--log-verifier",
                   server.log_verifier_key, "--witness", cosigner) == 1  # fmt: skip
        assert "needs the bundle's checkpoint" in capsys.readouterr().err
    finally:
        server.stop()
