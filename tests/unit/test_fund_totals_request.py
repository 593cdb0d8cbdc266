"""FundService/GetFundTotals requests (ledger/rpc/fund_servicer.py, task D): each bad field is
refused INVALID_ARGUMENT naming it; the well-formed twin parses."""

from __future__ import annotations

import datetime as dt

import pytest

from ledger import limits
from ledger.errors import InvalidArgument
from ledger.rpc.fund_servicer import parse_totals_request
from ledger.v1 import fund_service_pb2 as pb


def _request(**changes: object) -> pb.GetFundTotalsRequest:
    request = pb.GetFundTotalsRequest(
        funder_id="zakat-chamber",
        from_month=pb.YearMonth(year=2026, month=1),
        to_month=pb.YearMonth(year=2026, month=12),
    )
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)
        elif isinstance(value, pb.YearMonth):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def _fields(request: pb.GetFundTotalsRequest) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        parse_totals_request(request)
    return [v.field for v in raised.value.details.field_violations]


def test_a_well_formed_request_parses() -> None:
    assert parse_totals_request(_request(state_code="SD-KH")) == (
        "zakat-chamber",
        dt.date(2026, 1, 1),
        dt.date(2026, 12, 1),
        "SD-KH",
    )
    assert parse_totals_request(_request(funder_id=""))[0] is None


def test_bad_fields_are_named() -> None:
    assert _fields(_request(from_month=None)) == ["from_month"]
    assert _fields(_request(to_month=pb.YearMonth(year=2026, month=13))) == ["to_month"]
    assert _fields(_request(to_month=pb.YearMonth(year=2025, month=12))) == ["to_month"]
    assert _fields(_request(state_code="SD-XX")) == ["state_code"]
    assert _fields(_request(funder_id="bad id")) == ["funder_id"]
    longest = limits.fund_totals_months_max
    last = dt.date(2026, 1, 1) + dt.timedelta(days=31 * longest)
    assert _fields(_request(to_month=pb.YearMonth(year=last.year, month=last.month))) == [
        "to_month"
    ]
