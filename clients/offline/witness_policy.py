"""Witness policies: "K of these N witnesses must have cosigned the checkpoint".

A cosignature (https://c2sp.org/tlog-cosignature, ``cosignature/v1``) is a signature line on the
checkpoint note by a witness's key (signature type 0x04): the witness states that this is the
largest tree it has seen for the log, consistent with every earlier one it cosigned. Requiring
K cosignatures defeats a split view: the log cannot show two histories unless K witnesses help.

:func:`verify_cosignatures` (1) parses the note with the one note library; (2) for each witness
of the policy, verifies its line(s), a failing line from a policy witness rejecting the note
(C2SP: a known key's signature that fails rejects the note); (3) requires K distinct witnesses,
and otherwise raises :class:`WitnessPolicyError` naming the witnesses that are missing. The log's
own signature is checked separately (:func:`clients.offline.note.verify_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clients.offline.note import (
    COSIGNATURE_V1_TYPE,
    MalformedVerifierKeyError,
    NoteVerificationError,
    VerifierKey,
    parse_note,
)

__all__ = [
    "WITNESSES_MAX",
    "Cosigned",
    "WitnessPolicy",
    "WitnessPolicyError",
    "verify_cosignatures",
]

WITNESSES_MAX = 16
"""Most witnesses a policy names (a note carries at most 32 signature lines, the log's included)."""


class WitnessPolicyError(NoteVerificationError):
    """Fewer valid cosignatures than the policy requires; ``missing`` names the others."""

    def __init__(self, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Cosigned:
    """A verified cosignature: the witness (``<name>+<hex key id>``) and its POSIX timestamp."""

    witness: str
    timestamp: int


@dataclass(frozen=True)
class WitnessPolicy:
    """``threshold`` of ``witnesses`` (cosignature/v1 verifier keys) must cosign."""

    witnesses: tuple[VerifierKey, ...]
    threshold: int

    def __post_init__(self) -> None:
        if len(self.witnesses) > WITNESSES_MAX:
            raise MalformedVerifierKeyError(
                f"{len(self.witnesses)} witnesses, over {WITNESSES_MAX}"
            )
        for key in self.witnesses:
            if key.signature_type != COSIGNATURE_V1_TYPE:
                raise MalformedVerifierKeyError(
                    f"witness key {key.label} is not a cosignature/v1 key (type 0x04)"
                )
        if len({(key.name, key.key_id) for key in self.witnesses}) != len(self.witnesses):
            raise MalformedVerifierKeyError("a witness is named twice in the policy")
        if not 0 <= self.threshold <= len(self.witnesses):
            raise MalformedVerifierKeyError(
                f"witness threshold {self.threshold} is not in 0..{len(self.witnesses)}"
            )

    @classmethod
    def parse(cls, keys: Sequence[str], threshold: int | None = None) -> WitnessPolicy:
        """The policy of verifier key strings; the threshold defaults to every witness."""
        witnesses = tuple(VerifierKey.parse(text) for text in keys)
        return cls(witnesses, len(witnesses) if threshold is None else threshold)


def verify_cosignatures(note: bytes, policy: WitnessPolicy) -> tuple[Cosigned, ...]:
    """The policy witnesses' verified cosignatures of ``note`` (steps in the module docstring)."""
    if policy.threshold == 0:
        return ()
    # (1)
    parsed = parse_note(note)
    text = parsed.text.encode("utf-8")
    by_key = {(key.name, key.key_id): key for key in policy.witnesses}
    cosigned: dict[str, Cosigned] = {}
    for line in parsed.signatures:
        key = by_key.get((line.name, line.key_id))
        if key is None:
            continue
        # (2)
        key.verify(text, line.signature)
        cosigned.setdefault(key.label, Cosigned(key.label, line.timestamp()))
    # (3)
    if len(cosigned) < policy.threshold:
        missing = tuple(key.label for key in policy.witnesses if key.label not in cosigned)
        raise WitnessPolicyError(
            f"checkpoint has {len(cosigned)} valid witness cosignature(s), the policy requires "
            f"{policy.threshold}; missing: {', '.join(missing)}",
            missing,
        )
    return tuple(cosigned.values())
