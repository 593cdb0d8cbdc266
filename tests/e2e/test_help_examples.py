"""The examples in every ``--help`` are valid as printed (issue 15, item 8): each parses with
the command's own parser, its values checked by the same argument types (a person's check digit,
the log verifier key), in a folder holding the files the examples name."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.signing import Ed25519Signer, format_verifier_key
from policy_ledger.cli import _parser

VERIFIER_FILES = ("log.pub", "log.key.pub", "var/log.key.pub")


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}".strip())


def _examples(help_text: str) -> list[str]:
    """Every ``policy-ledger ...`` line of the help, with its ``\\`` continuations joined."""
    examples: list[str] = []
    lines = help_text.splitlines()
    for number, line in enumerate(lines):
        if not line.strip().startswith("policy-ledger "):
            continue
        text = line.strip()
        following = number + 1
        while text.endswith("\\") and following < len(lines):
            text = text[:-1] + " " + lines[following].strip()
            following += 1
        examples.append(text)
    return examples


EXAMPLES = sorted(
    {
        example
        for _, parser in _parsers(_parser(), "")
        for example in _examples(parser.format_help())
    }
)


def test_every_command_prints_examples() -> None:
    assert len(EXAMPLES) >= 15, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_help_example_parses_as_printed(
    example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = format_verifier_key(Ed25519Signer.generate("policy-ledger.example/log"))
    for name in VERIFIER_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(verifier + "\n")
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(example)[1:]
    args = _parser().parse_args(argv)  # a usage error exits 2 and fails the test
    assert callable(args.handler)
    assert os.getcwd() == str(tmp_path)
