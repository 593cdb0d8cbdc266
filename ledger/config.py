"""Server configuration: embedded defaults (SQLite under ./var), overridable by environment/flags.

Environment variables (flags of ``policy-ledger serve`` take precedence):
  POLICY_LEDGER_DATABASE_URL   SQLAlchemy URL; default sqlite file var/ledger.db
  POLICY_LEDGER_LISTEN         host:port to listen on; default 127.0.0.1:50051
  POLICY_LEDGER_LOG_KEY        file holding the log's signer key (see ``policy-ledger keygen``)
  POLICY_LEDGER_ORIGIN         checkpoint origin; default: the log key's name
  POLICY_LEDGER_ADMIN_TOKEN    bearer token of the AdminService; empty disables it
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument
from ledger.sequencer import SequencerOptions
from ledger.signing import Ed25519Signer, parse_signer_key
from ledger.storage.db import sqlite_url

__all__ = ["DEFAULT_DATA_DIR", "ServerConfig", "load_signer"]

DEFAULT_DATA_DIR = Path("var")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start."""

    database_url: str = sqlite_url(DEFAULT_DATA_DIR / "ledger.db")
    listen: str = "127.0.0.1:50051"
    log_key_path: Path = DEFAULT_DATA_DIR / "log.key"
    origin: str = ""
    admin_token: str = ""
    migrate: bool = True
    grace_seconds: float = 5.0
    sequencer: SequencerOptions = field(default_factory=SequencerOptions)
    connection_idle_ms: int = limits.connection_idle_ms_max
    """A connection with no call for this long is closed (tests shorten it)."""
    caller_calls_in_flight_max: int = limits.caller_calls_in_flight_max
    """Calls one caller may have under way (tests lower it)."""

    @classmethod
    def from_environment(cls, environment: dict[str, str] | None = None) -> ServerConfig:
        """Defaults overridden by POLICY_LEDGER_* variables."""
        env = dict(os.environ if environment is None else environment)
        defaults = cls()
        return cls(
            database_url=env.get("POLICY_LEDGER_DATABASE_URL", defaults.database_url),
            listen=env.get("POLICY_LEDGER_LISTEN", defaults.listen),
            log_key_path=Path(env.get("POLICY_LEDGER_LOG_KEY", str(defaults.log_key_path))),
            origin=env.get("POLICY_LEDGER_ORIGIN", defaults.origin),
            admin_token=env.get("POLICY_LEDGER_ADMIN_TOKEN", defaults.admin_token),
        )


def load_signer(path: Path) -> Ed25519Signer:
    """Read the log's signer key (``PRIVATE+KEY+...``) from ``path``, with a clear error."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InvalidArgument(
            f"no log key at {path}: create one with `policy-ledger keygen --name <origin> "
            f"--out {path}`",
            reason="LOG_KEY_MISSING",
        ) from None
    return parse_signer_key(text)


def check_origin(origin: str) -> None:
    """Raise InvalidArgument unless ``origin`` is a valid checkpoint origin line."""
    if not origin or len(origin) > limits.origin_chars_max or not origin.isprintable():
        raise InvalidArgument(
            "origin must be 1..256 printable characters",
            reason="ORIGIN_INVALID",
            field_violations=[FieldViolation("origin", "invalid")],
        )
