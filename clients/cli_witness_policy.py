"""The verifiers' ``--witness KEY ... --witness-threshold K`` options (docs/witness.md).

``audit verify``, ``audit watch``, ``proof verify`` and ``certificate verify`` add them here, and
check a checkpoint note with :func:`check_witnesses`: fewer than K valid cosignatures by the
named witnesses is refused, naming the witnesses that are missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clients.offline.witness_policy import Cosigned, WitnessPolicy, verify_cosignatures

__all__ = ["add_witness_arguments", "check_witnesses", "witness_policy"]


def add_witness_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--witness`` (repeatable) and ``--witness-threshold``."""
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VERIFIERKEY",
        help="a witness's cosignature/v1 verifier key, or @file (repeatable)",
    )
    parser.add_argument(
        "--witness-threshold",
        type=int,
        metavar="K",
        help="valid cosignatures required (default: every --witness)",
    )


def witness_policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """The policy the options describe; None without ``--witness`` (and a threshold of 0)."""
    # Callers that build their own Namespace (tests, scripts) may leave the options out.
    keys = [_read(text) for text in getattr(args, "witness", None) or []]
    threshold = getattr(args, "witness_threshold", None)
    if not keys and not threshold:
        return None
    return WitnessPolicy.parse(keys, threshold)


def check_witnesses(args: argparse.Namespace, note: bytes) -> tuple[Cosigned, ...]:
    """The verified cosignatures of ``note`` under the options' policy (none: no policy);
    WitnessPolicyError naming the missing witnesses when there are too few."""
    policy = witness_policy(args)
    return () if policy is None else verify_cosignatures(note, policy)


def _read(text: str) -> str:
    return Path(text[1:]).read_text(encoding="utf-8").strip() if text.startswith("@") else text
