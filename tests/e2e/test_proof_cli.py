"""``policy-ledger proof export|verify`` end to end: a real server, a bundle, offline checks.

The commands are run through the parser :func:`clients.cli_proof.register` builds (the ledger's
CLI wires ``register`` in separately), so exactly what the console script would call is tested.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clients.cli_proof import register
from clients.insurer import InsurerClient
from clients.offline.tlog_proof import parse_tlog_proof, verify_tlog_proof
from clients.samples import sample_events
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.signing import Ed25519Signer, format_verifier_key
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="policy-ledger")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def receipts(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> list[VerifiedReceipt]:
    onboard(server, operator_signer, INSURER, insurer_signer)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=insurer_signer, log=log)
        results = list(
            insurer.submit_stream(sample_events(12, INSURER, test_clock.now(), tokens=tokens))
        )
    assert all(isinstance(result, VerifiedReceipt) for result in results), results
    return [result for result in results if isinstance(result, VerifiedReceipt)]


def test_export_then_verify_offline(
    server: ServerHandle,
    receipts: list[VerifiedReceipt],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receipt = receipts[5]
    out = tmp_path / "leaf.tlog-proof"
    assert _run(
        "proof", "export", *server.cli_arguments("auditor", "auditor"),
        "--leaf-index", str(receipt.leaf_index),
        "--out", str(out),
    ) == 0  # fmt: skip
    entry_file = tmp_path / "leaf.tlog-proof.entry"
    assert out.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\n")
    assert entry_file.exists()
    capsys.readouterr()

    key_file = tmp_path / "log.pub"
    key_file.write_text(server.log_verifier_key + "\n", encoding="utf-8")
    for log_key in (server.log_verifier_key, f"@{key_file}"):
        assert _run(
            "proof", "verify", "--bundle", str(out), "--entry", str(entry_file),
            "--log-verifier", log_key,
        ) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert f"verified: the entry is leaf {receipt.leaf_index} of the log" in printed
        assert receipt.leaf_hash.hex() in printed

    # The library agrees, and the proof is of the leaf the server's receipt named.
    verified = verify_tlog_proof(out.read_bytes(), entry_file.read_bytes(), server.log_verifier_key)
    assert verified.leaf_hash == receipt.leaf_hash
    assert verified.tree_size >= receipts[-1].leaf_index + 1


def test_export_at_a_tree_size_and_check_with_the_log_key(
    server: ServerHandle,
    receipts: list[VerifiedReceipt],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receipt = receipts[0]
    size = receipt.checkpoint.size
    out = tmp_path / "at-size.tlog-proof"
    assert _run(
        "proof", "export", *server.cli_arguments("auditor", "auditor"),
        "--leaf-index", str(receipt.leaf_index),
        "--tree-size", str(size), "--out", str(out), "--log-verifier", server.log_verifier_key,
    ) == 0  # fmt: skip
    assert "checked: checkpoint signed by" in capsys.readouterr().out
    bundle = out.read_bytes()
    assert parse_tlog_proof(bundle).index == receipt.leaf_index
    verified = verify_tlog_proof(
        bundle, (tmp_path / "at-size.tlog-proof.entry").read_bytes(), server.log_verifier_key
    )
    assert (verified.tree_size, verified.root_hash) == (size, receipt.checkpoint.root_hash)


def test_a_changed_entry_or_another_key_fails_with_exit_1(
    server: ServerHandle,
    receipts: list[VerifiedReceipt],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "leaf.tlog-proof"
    leaf_index = receipts[3].leaf_index
    assert _run(
        "proof", "export", *server.cli_arguments("auditor", "auditor"),
        "--leaf-index", str(leaf_index),
        "--out", str(out),
    ) == 0  # fmt: skip
    entry = (tmp_path / "leaf.tlog-proof.entry").read_bytes()
    capsys.readouterr()

    mutated = bytearray(entry)
    mutated[len(mutated) // 2] ^= 0x01
    changed = tmp_path / "changed.entry"
    changed.write_bytes(bytes(mutated))
    assert _run(
        "proof", "verify", "--bundle", str(out), "--entry", str(changed),
        "--log-verifier", server.log_verifier_key,
    ) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "does not lead to the checkpoint's root hash" in captured.err

    stranger = format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    assert _run(
        "proof", "verify", "--bundle", str(out), "--entry", str(tmp_path / "leaf.tlog-proof.entry"),
        "--log-verifier", stranger,
    ) == 1  # fmt: skip
    assert "not signed by the log key" in capsys.readouterr().err

    assert _run(
        "proof", "verify", "--bundle", str(tmp_path / "missing"), "--entry", str(changed),
        "--log-verifier", server.log_verifier_key,
    ) == 1  # fmt: skip
    assert "cannot read the bundle file" in capsys.readouterr().err


def test_export_of_a_leaf_beyond_the_log_fails_with_exit_1(
    server: ServerHandle,
    receipts: list[VerifiedReceipt],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "none.tlog-proof"
    assert _run(
        "proof", "export", *server.cli_arguments("auditor", "auditor"),
        "--leaf-index", "100000",
        "--out", str(out),
    ) == 1  # fmt: skip
    assert "leaf 100000 is not in" in capsys.readouterr().err
    assert not out.exists()


def test_every_command_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["proof"], ["proof", "export"], ["proof", "verify"]):
        with pytest.raises(SystemExit) as exited:
            _run(*command, "--help")
        assert exited.value.code == 0
        assert "Example:\n  policy-ledger proof " in capsys.readouterr().out
