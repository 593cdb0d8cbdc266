"""`insurer submit`, `coverage check` and `renew`, run as the CLI runs them (in-process main)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path

from google.protobuf import json_format

from clients.samples import iqama, policy_issued, sample_events
from ledger.signing import Ed25519Signer, format_signer_key
from policy_ledger.cli import main
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"


def _run(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


def test_insurer_submit_then_coverage_check(
    server: ServerHandle,
    tmp_path: Path,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> None:
    onboard(server, operator_signer, INSURER, insurer_signer)
    key = tmp_path / "insurer.key"
    key.write_text(format_signer_key(insurer_signer) + "\n")
    now = test_clock.now()
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps(
            [json_format.MessageToDict(e) for e in sample_events(4, INSURER, now, tokens=tokens)]
        )
    )
    code, output = _run(
        "insurer",
        "submit",
        *server.cli_arguments("insurer", INSURER),
        "--log-verifier",
        server.log_verifier_key,
        "--key",
        str(key),
        str(events),
    )
    assert code == 0, output
    assert "4 accepted, 0 refused" in output and "receipt verified" in output
    # The same file again: every event is already in the log (idempotent), nothing refused.
    code, output = _run(
        "insurer",
        "submit",
        *server.cli_arguments("insurer", INSURER),
        "--log-verifier",
        server.log_verifier_key,
        "--key",
        str(key),
        str(events),
    )
    assert code == 0 and output.count("already in the log") == 4
    # An event of another insurer signed with this key is refused; exit 1.
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(json_format.MessageToDict(policy_issued(9, "najm-care", now, tokens=tokens)))
    )
    code, output = _run(
        "insurer",
        "submit",
        *server.cli_arguments("insurer", INSURER),
        "--log-verifier",
        server.log_verifier_key,
        "--key",
        str(key),
        str(other),
    )
    assert code == 3 and "REFUSED" in output
    sponsor = iqama(0).value
    base = [
        "coverage",
        "check",
        *server.cli_arguments("portal", "SA"),
        "--jurisdiction",
        "SA",
        "--log-verifier",
        server.log_verifier_key,
    ]
    through = (now.date() + dt.timedelta(days=200)).isoformat()
    code, output = _run(
        *base,
        "--sponsor",
        f"SA:RESIDENCE_ID:{sponsor}",
        "--member",
        f"SA:RESIDENCE_ID:{sponsor}/self",
        "--member",
        f"SA:RESIDENCE_ID:{iqama(1).value}/spouse",
        "--through",
        through,
    )
    assert code == 0 and output.startswith("RENEWABLE"), output
    # A receipt's tree size presented (x-min-tree-size): the answer is at least that fresh.
    size = int(output.split("answer at tree size ")[1].split(",")[0])
    code, output = _run(
        *base,
        "--sponsor",
        f"SA:RESIDENCE_ID:{sponsor}",
        "--through",
        through,
        "--min-tree-size",
        str(size),
    )
    assert code == 0 and f"answer at tree size {size}," in output, output
    # A size no receipt can name (beyond the log): the client refuses the older answer.
    code, output = _run(
        *base,
        "--sponsor",
        f"SA:RESIDENCE_ID:{sponsor}",
        "--through",
        through,
        "--min-tree-size",
        str(size + 1000),
    )
    assert code == 2 and f"older than the {size + 1000} asked for" in output, output
    assert "Traceback" not in output
    code, output = _run(
        *base,
        "--sponsor",
        f"SA:RESIDENCE_ID:{sponsor}",
        "--member",
        f"SA:RESIDENCE_ID:{iqama(15).value}/domestic_worker",
        "--through",
        through,
        "--json",
    )
    assert code == 1 and json.loads(output)["renewable"] is False
    import pytest

    with pytest.raises(SystemExit) as refused:  # argparse: a clear usage error, exit 2
        _run(*base, "--sponsor", "NOPE:SA:1", "--through", through)
    assert refused.value.code == 2
    with pytest.raises(SystemExit) as refused:
        _run(*base, "--sponsor", f"SA:RESIDENCE_ID:{sponsor}", "--through", through,
             "--min-tree-size", "-3")  # fmt: skip
    assert refused.value.code == 2
