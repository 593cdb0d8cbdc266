"""docs/identifiers.md matches the code: every row of its "Examples" table is checked."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from ledger.identifiers import validate_person_id
from ledger.v1 import types_pb2

DOC = Path(__file__).resolve().parents[2] / "docs" / "identifiers.md"
_ROW = re.compile(r"^\| ([A-Z_]+) \| ([A-Z]{2}) \| `([A-Z0-9]+)` \| (.+) \|$")


def _examples() -> list[tuple[str, str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Examples", 1)[1]
    rows = [match.groups() for line in table.splitlines() if (match := _ROW.match(line))]
    assert len(rows) >= 10, "the Examples table of docs/identifiers.md did not parse"
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize(("kind", "country", "value", "result"), _examples())
def test_every_documented_example_gives_the_documented_result(
    kind: str, country: str, value: str, result: str
) -> None:
    person = types_pb2.PersonId(
        type=types_pb2.PersonIdType.Value(f"PERSON_ID_TYPE_{kind}"),
        value=value,
        country_code=country,
    )
    violations = validate_person_id(person, "person", today=dt.date(2026, 11, 22))
    if result == "accepted":
        assert violations == []
    else:
        assert [v.description for v in violations] == [result]


def test_the_summary_names_every_rule_country() -> None:
    text = DOC.read_text(encoding="utf-8")
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    for country in ("SA", "KW", "MA"):
        assert f"| {country} |" in summary or f"| {country} only |" in summary, country
