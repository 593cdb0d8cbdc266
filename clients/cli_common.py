"""What the client commands (``clients/cli_*.py``) share beyond the connection
(:mod:`clients.channel`): the log a command trusts, from its ``--log-verifier`` value."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clients.verify import TrustedLog

__all__ = ["trusted_log"]


def trusted_log(verifier: str) -> TrustedLog:
    """The log a command verifies answers against, from its ``--log-verifier`` value: the
    log's verifier key, or ``@FILE`` holding it (``ledger.cli_flags.add_log_verifier`` reads the
    file as the flag is parsed; a value that did not come through it may still name one)."""
    from clients.verify import TrustedLog  # lazily: a command's --help needs none of it

    if verifier.startswith("@"):
        verifier = Path(verifier[1:]).read_text(encoding="utf-8").strip()
    return TrustedLog.from_verifier_key(verifier)
