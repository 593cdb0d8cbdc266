"""Run ``policy-ledger witness serve`` as its own process (``make run`` starts one this way)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clients.witness.keys import WitnessKey

__all__ = ["running_witness"]

_START_TIMEOUT_SECONDS = 30.0


@contextmanager
def running_witness(workdir: Path, name: str, log_verifier_key: str) -> Iterator[tuple[str, str]]:
    """A witness of the log ``log_verifier_key``, with a new key and its state in ``workdir``;
    yields ``(url, witness verifier key)`` and stops it on exit."""
    key = WitnessKey.generate(name)
    key_file = workdir / "witness.key"
    key_file.write_text(key.private_text(), encoding="utf-8")
    key_file.chmod(0o600)
    port_file = workdir / "witness.port"
    port_file.unlink(missing_ok=True)  # a previous run's port is not this one's
    command = [sys.executable, "-m", "policy_ledger.cli", "witness", "serve"]
    command += ["--key-file", str(key_file)]
    command += ["--state", str(workdir / "witness.db"), "--log", log_verifier_key]
    command += ["--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    with (workdir / "witness.log").open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            port = _wait_for_port(process, port_file)
            yield f"http://127.0.0.1:{port}", key.verifier_key.encode()
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path) -> int:
    # A process start-up: the port file appears once it listens.
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"witness exited early with code {process.returncode}")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        time.sleep(0.05)
    raise RuntimeError("witness did not start in time")
