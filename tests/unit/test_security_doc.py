"""docs/security.md shows the authorization table exactly as the code has it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from ledger.rpc.authorization import (
    AuthorizationTable,
    beneficiary_rules,
    enrolment_rules,
    ledger_rules,
    render_markdown,
)
from payments.authorization import jurisdiction_resolver, renewal_rules
from payments.contribution_service import contribution_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
START, END = "<!-- authorization-table:start -->\n", "<!-- authorization-table:end -->"


def test_the_security_doc_shows_the_table_the_server_enforces() -> None:
    table = AuthorizationTable(ledger_rules())
    engine = create_engine("sqlite://")
    table.add(renewal_rules(jurisdiction_resolver(engine)))
    table.add(enrolment_rules())  # the enrolment port's table, shown in the same one
    table.add(beneficiary_rules(lambda _caller: frozenset()))  # Task F (issue 11)
    table.add(contribution_rules(engine))
    engine.dispose()
    text = DOC.read_text(encoding="utf-8")
    shown = text.split(START, 1)[1].split(END, 1)[0]
    expected = render_markdown(table)
    assert shown == expected, f"replace the table in docs/security.md with:\n{expected}"


def test_a_second_row_for_one_method_is_refused() -> None:
    table = AuthorizationTable(ledger_rules())
    try:
        table.add(ledger_rules()[:1])
    except ValueError as error:
        assert "two authorization rows" in str(error)
    else:
        raise AssertionError("a duplicate row was accepted")
