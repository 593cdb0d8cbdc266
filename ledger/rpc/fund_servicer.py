"""ledger.v1.FundService (task D, issue 11): a thin servicer over
:class:`ledger.funds.reader.FundTotalsReader`.

Who may call it is the authorization table's: a funder only with its own name in
``funder_id`` (the interceptor checks it), the operator, auditors and regulators for any.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import grpc

from ledger import limits
from ledger.errors import FieldViolation, refuse_violations
from ledger.events import check_identifier
from ledger.fair import ReadPool
from ledger.funds.reader import FundTotals, FundTotalsReader
from ledger.funds.rules import months_between
from ledger.funds.states import sudan_states
from ledger.rpc.status import abort
from ledger.v1 import fund_service_pb2 as pb
from ledger.v1 import fund_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["FundServicer", "parse_totals_request"]

_Context = grpc.aio.ServicerContext[object, object]
_T = TypeVar("_T")


def _month(
    violations: list[FieldViolation], field: str, month: pb.YearMonth, *, present: bool
) -> dt.date | None:
    if not present:
        violations.append(FieldViolation(field, "required"))
        return None
    if not 1 <= month.month <= 12 or not 2000 <= month.year <= 9999:
        violations.append(FieldViolation(field, "a year from 2000 and a month 1..12"))
        return None
    return dt.date(month.year, month.month, 1)


def parse_totals_request(
    request: pb.GetFundTotalsRequest,
) -> tuple[str | None, dt.date, dt.date, str]:
    """(funder or None, first month, last month, state or "") of a request; INVALID_ARGUMENT
    naming every bad field."""
    violations: list[FieldViolation] = []
    if request.funder_id:
        check_identifier(violations, "funder_id", request.funder_id, limits.insurer_id_chars_max)
    first = _month(
        violations, "from_month", request.from_month, present=request.HasField("from_month")
    )
    last = _month(violations, "to_month", request.to_month, present=request.HasField("to_month"))
    if first is not None and last is not None:
        span = months_between(first, last)
        if last < first:
            violations.append(FieldViolation("to_month", "before from_month"))
        elif span > limits.fund_totals_months_max:
            violations.append(
                FieldViolation(
                    "to_month", f"{span} months, at most {limits.fund_totals_months_max}"
                )
            )
    if request.state_code and request.state_code not in sudan_states():
        violations.append(FieldViolation("state_code", "not an ISO 3166-2:SD state code"))
    refuse_violations(violations)
    assert first is not None and last is not None
    return request.funder_id or None, first, last, request.state_code


def _money(amount_minor: int, currency_code: str) -> types_pb2.Money:
    return types_pb2.Money(
        currency_code=currency_code or limits.fund_currency, amount_minor=amount_minor
    )


def totals_response(answer: FundTotals) -> pb.GetFundTotalsResponse:
    """The wire form of the totals."""
    return pb.GetFundTotalsResponse(
        totals=[
            pb.FundTotal(
                funder_id=total.funder_id,
                state_code=total.state_code,
                month=pb.YearMonth(year=total.month.year, month=total.month.month),
                beneficiaries_enrolled=total.enrolled,
                beneficiaries_covered=total.covered,
                paid=_money(total.paid_minor, total.currency_code),
                owed=_money(total.owed_minor, total.currency_code),
                leaf_indexes=list(total.leaf_indexes),
            )
            for total in answer.totals
        ],
        tree_size=answer.checkpoint.tree_size,
        checkpoint=answer.checkpoint.note_bytes,
    )


class FundServicer(pb_grpc.FundServiceServicer):
    """Per-funder, per-state totals by month."""

    def __init__(self, reader: FundTotalsReader, reads: ReadPool | None = None) -> None:
        self._reader = reader
        self._reads = reads or ReadPool()

    async def _run(self, context: _Context, function: Callable[[], _T]) -> _T:
        try:
            return await self._reads.run(function)
        except Exception as error:  # every failure becomes a status
            await abort(context, error)

    async def GetFundTotals(
        self, request: pb.GetFundTotalsRequest, context: _Context
    ) -> pb.GetFundTotalsResponse:
        """The totals of one funder, or of every funder."""
        try:
            funder, first, last, state = parse_totals_request(request)
        except Exception as error:
            await abort(context, error)
        answer = await self._run(context, lambda: self._reader.totals(funder, first, last, state))
        return totals_response(answer)
