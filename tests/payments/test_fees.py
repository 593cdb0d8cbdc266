"""Tests of the fee engine (payments.fees) and the packaged Kuwait schedules (docs/fees.md)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.fees import (
    FeeError,
    FeeLine,
    FeeQuote,
    FeeScheduleError,
    MemberFacts,
    MemberFactsError,
    Relationship,
    ResidenceCategory,
    ScheduleBook,
    UnpricedMemberError,
    add_months,
    default_schedules,
    format_minor,
    load_packaged_schedules,
    months_in_period,
    parse_schedule,
    parse_schedule_json,
    prorate_yearly,
    quote_fees,
)

R = Relationship
C = ResidenceCategory
NEW = date(2025, 12, 23)
OLD = date(2025, 12, 22)
YEAR = (date(2026, 1, 1), date(2026, 12, 31))
SCHEDULES = Path(__file__).resolve().parents[2] / "payments" / "schedules"


def member(
    key: str,
    relationship: Relationship,
    category: ResidenceCategory,
    birth: date | None = date(1990, 1, 1),
    *,
    kuwaiti: bool = False,
    ordinal: int | None = None,
) -> MemberFacts:
    return MemberFacts(key, relationship, category, birth, kuwaiti, ordinal)


def quote(renewal: date, *members: MemberFacts, period: tuple[date, date] = YEAR) -> FeeQuote:
    return quote_fees("KW", renewal, period[0], period[1], members)


def single(renewal: date, m: MemberFacts, period: tuple[date, date] = YEAR) -> FeeLine:
    q = quote(renewal, m, period=period)
    assert len(q.lines) == 1
    return q.lines[0]


HOUSEHOLD = (
    member("worker", R.SELF, C.PRIVATE_SECTOR_WORKER, date(1985, 3, 1)),
    member("wife", R.SPOUSE, C.DEPENDENT, date(1990, 6, 1)),
    member("child-10", R.CHILD, C.DEPENDENT, date(2015, 5, 1)),
    member("child-20", R.CHILD, C.DEPENDENT, date(2005, 5, 1)),
    member("parent", R.PARENT, C.DEPENDENT, date(1955, 1, 1)),
    member("maid", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, date(1995, 1, 1), ordinal=1),
)


# --- packaged files -------------------------------------------------------------------------


def test_packaged_schedules_load_and_do_not_overlap() -> None:
    book = load_packaged_schedules()
    legacy, current = book.schedules("KW")
    assert (legacy.version, current.version) == ("kw-legacy", "kw-2025-12-23")
    assert legacy.effective_until == OLD and current.effective_from == NEW
    assert current.effective_until is None
    assert {s.currency for s in (legacy, current)} == {"KWD"}
    assert {s.minor_units for s in (legacy, current)} == {3}
    assert default_schedules() is default_schedules()


def test_boundary_date_picks_the_schedule() -> None:
    assert quote(OLD, HOUSEHOLD[0]).schedule_version == "kw-legacy"
    assert quote(NEW, HOUSEHOLD[0]).schedule_version == "kw-2025-12-23"
    assert quote(date(2030, 1, 1), HOUSEHOLD[0]).schedule_version == "kw-2025-12-23"


def test_unknown_jurisdiction_and_uncovered_date() -> None:
    with pytest.raises(FeeScheduleError, match="no fee schedule for jurisdiction 'SA'"):
        quote_fees("SA", NEW, *YEAR, HOUSEHOLD[:1])
    with pytest.raises(FeeScheduleError, match="no KW fee schedule is effective on 1999-12-31"):
        quote_fees("KW", date(1999, 12, 31), *YEAR, HOUSEHOLD[:1])


# --- the worked example ---------------------------------------------------------------------


def test_worked_example_new_schedule() -> None:
    q = quote(NEW, *HOUSEHOLD)
    assert [(line.person_key, line.rule_id, line.amount_minor) for line in q.lines] == [
        ("worker", "KW25-RESIDENCE", 100_000),
        ("wife", "KW25-DEPENDENT", 100_000),
        ("child-10", "KW25-DEPENDENT", 100_000),
        ("child-20", "KW25-DEPENDENT", 100_000),
        ("parent", "KW25-DEPENDENT", 100_000),
        ("maid", "KW25-EXPATRIATE-DOMESTIC-WORKER", 100_000),
    ]
    assert q.total_minor == 600_000  # KWD 600.000
    assert format_minor(q.total_minor, 3) == "600.000"
    assert {line.months for line in q.lines} == {12}
    assert {line.currency for line in q.lines} == {"KWD"}
    assert {line.schedule_version for line in q.lines} == {"kw-2025-12-23"}


def test_worked_example_legacy_schedule() -> None:
    q = quote(OLD, *HOUSEHOLD)
    assert [(line.person_key, line.rule_id, line.amount_minor) for line in q.lines] == [
        ("worker", "KWL-WORKER", 50_000),
        ("wife", "KWL-SPOUSE", 40_000),
        ("child-10", "KWL-CHILD-UNDER-18", 30_000),
        ("child-20", "KWL-ADULT-CHILD", 50_000),
        ("parent", "KWL-PARENT", 50_000),
        ("maid", "KWL-EXPATRIATE-DOMESTIC-WORKER", 50_000),
    ]
    assert q.total_minor == 270_000  # KWD 270.000


# --- every rule of the new schedule ---------------------------------------------------------


@pytest.mark.parametrize(
    "category",
    [
        C.GOVERNMENT_WORKER,
        C.PRIVATE_SECTOR_WORKER,
        C.INVESTOR_OR_PARTNER,
        C.STUDENT,
        C.SELF_SPONSORED,
        C.PROPERTY_OWNER,
    ],
)
def test_kw25_residence_categories_pay_100(category: ResidenceCategory) -> None:
    line = single(NEW, member("p", R.SELF, category))
    assert (line.rule_id, line.amount_minor) == ("KW25-RESIDENCE", 100_000)


@pytest.mark.parametrize(
    "category", [C.AGRICULTURAL_WORKER, C.FISHING_WORKER, C.HERDING_WORKER, C.DAIRY_WORKER]
)
def test_kw25_reduced_rate_workers_pay_10(category: ResidenceCategory) -> None:
    line = single(NEW, member("p", R.SELF, category))
    assert (line.rule_id, line.amount_minor) == ("KW25-REDUCED-RATE-WORKER", 10_000)


def test_kw25_kuwaiti_family_domestic_workers() -> None:
    maids = [
        member(f"maid-{n}", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, kuwaiti=True, ordinal=n)
        for n in (1, 2, 3, 4, 5)
    ]
    q = quote(NEW, *maids)
    assert [(line.rule_id, line.amount_minor) for line in q.lines] == [
        ("KW25-KUWAITI-DOMESTIC-WORKER-1-3", 0),
        ("KW25-KUWAITI-DOMESTIC-WORKER-1-3", 0),
        ("KW25-KUWAITI-DOMESTIC-WORKER-1-3", 0),
        ("KW25-KUWAITI-DOMESTIC-WORKER-4PLUS", 10_000),
        ("KW25-KUWAITI-DOMESTIC-WORKER-4PLUS", 10_000),
    ]
    assert q.total_minor == 20_000


def test_kw25_kuwaiti_domestic_worker_needs_the_ordinal() -> None:
    with pytest.raises(MemberFactsError, match="needs domestic_worker_ordinal"):
        quote(NEW, member("maid", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, kuwaiti=True))


def test_kw25_expatriates_domestic_worker_pays_100_whatever_the_ordinal() -> None:
    for ordinal in (None, 1, 4):
        m = member("maid", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, ordinal=ordinal)
        line = single(NEW, m)
        assert (line.rule_id, line.amount_minor) == ("KW25-EXPATRIATE-DOMESTIC-WORKER", 100_000)


def test_kw25_temporary_entry_visa_three_months_is_15() -> None:
    m = member("visitor", R.SELF, C.TEMPORARY_ENTRY_VISA)
    line = single(NEW, m, period=(date(2026, 1, 1), date(2026, 3, 31)))
    assert (line.rule_id, line.months, line.amount_minor) == (
        "KW25-TEMPORARY-ENTRY-VISA",
        3,
        15_000,
    )
    # a started month counts whole
    line = single(NEW, m, period=(date(2026, 1, 1), date(2026, 4, 1)))
    assert (line.months, line.amount_minor) == (4, 20_000)


@pytest.mark.parametrize("relationship", [R.SPOUSE, R.CHILD, R.PARENT])
def test_kw25_dependents_of_kuwaitis_are_exempt(relationship: Relationship) -> None:
    line = single(NEW, member("d", relationship, C.DEPENDENT, None, kuwaiti=True))
    assert (line.rule_id, line.amount_minor) == ("KW25-KUWAITI-DEPENDENT", 0)


def test_kw25_newborn_within_four_months() -> None:
    # born 10 Nov 2025: exempt until 9 Mar 2026 (1 Jan..9 Mar = 3 started months); 9 charged
    q = quote(NEW, member("baby", R.CHILD, C.DEPENDENT, date(2025, 11, 10)))
    assert [(line.rule_id, line.months, line.amount_minor) for line in q.lines] == [
        ("KW25-NEWBORN", 3, 0),
        ("KW25-DEPENDENT", 9, 75_000),
    ]
    assert q.total_minor == 75_000


def test_kw25_newborn_whole_short_permit_exempt() -> None:
    baby = member("baby", R.CHILD, C.DEPENDENT, date(2025, 12, 15))
    q = quote(NEW, baby, period=(date(2026, 1, 1), date(2026, 3, 31)))
    assert [(line.rule_id, line.months, line.amount_minor) for line in q.lines] == [
        ("KW25-NEWBORN", 3, 0)
    ]


def test_kw25_newborn_window_boundary() -> None:
    start = date(2026, 1, 1)
    # born 2 Sep 2025: 2 Sep + 4 months = 2 Jan 2026 > 1 Jan: still in the window (1 month exempt)
    inside = quote(NEW, member("b", R.CHILD, C.DEPENDENT, date(2025, 9, 2)))
    assert [(line.rule_id, line.months) for line in inside.lines] == [
        ("KW25-NEWBORN", 1),
        ("KW25-DEPENDENT", 11),
    ]
    # born 1 Sep 2025: 1 Sep + 4 months = 1 Jan 2026, not after period_start: fully charged
    after = single(NEW, member("b", R.CHILD, C.DEPENDENT, date(2025, 9, 1)))
    assert (after.rule_id, after.amount_minor) == ("KW25-DEPENDENT", 100_000)
    assert add_months(date(2025, 9, 1), 4) == start


def test_kw25_child_needs_a_birth_date() -> None:
    with pytest.raises(MemberFactsError, match="needs birth_date"):
        quote(NEW, member("c", R.CHILD, C.DEPENDENT, None))


def test_other_category_is_unpriced_never_zero() -> None:
    with pytest.raises(UnpricedMemberError, match="no rule of fee schedule kw-2025-12-23"):
        quote(NEW, member("x", R.OTHER, C.OTHER))


# --- every rule of the legacy schedule ------------------------------------------------------


def test_legacy_child_under_18_vs_adult_on_the_renewal_date() -> None:
    renewal = date(2024, 6, 1)
    young = single(renewal, member("c", R.CHILD, C.DEPENDENT, date(2006, 6, 2)))
    adult = single(renewal, member("c", R.CHILD, C.DEPENDENT, date(2006, 6, 1)))
    assert (young.rule_id, young.amount_minor) == ("KWL-CHILD-UNDER-18", 30_000)
    assert (adult.rule_id, adult.amount_minor) == ("KWL-ADULT-CHILD", 50_000)


@pytest.mark.parametrize(
    ("m", "rule_id", "amount"),
    [
        (member("w", R.SELF, C.GOVERNMENT_WORKER), "KWL-WORKER", 50_000),
        (member("w", R.SELF, C.FISHING_WORKER), "KWL-WORKER", 50_000),
        (member("s", R.SPOUSE, C.DEPENDENT), "KWL-SPOUSE", 40_000),
        (member("p", R.PARENT, C.DEPENDENT), "KWL-PARENT", 50_000),
        (
            member("m", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER),
            "KWL-EXPATRIATE-DOMESTIC-WORKER",
            50_000,
        ),
    ],
)
def test_legacy_rules(m: MemberFacts, rule_id: str, amount: int) -> None:
    line = single(OLD, m)
    assert (line.rule_id, line.amount_minor, line.schedule_version) == (
        rule_id,
        amount,
        "kw-legacy",
    )


@pytest.mark.parametrize(
    "m",
    [
        member("v", R.SELF, C.TEMPORARY_ENTRY_VISA),
        member("s", R.SPOUSE, C.DEPENDENT, kuwaiti=True),
        member("m", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, kuwaiti=True, ordinal=1),
    ],
)
def test_legacy_refuses_what_it_does_not_price(m: MemberFacts) -> None:
    with pytest.raises(UnpricedMemberError, match="kw-legacy"):
        quote(OLD, m)


def test_legacy_child_needs_a_birth_date() -> None:
    with pytest.raises(MemberFactsError, match="KWL-CHILD-UNDER-18 needs birth_date"):
        quote(OLD, member("c", R.CHILD, C.DEPENDENT, None))


# --- proration and periods ------------------------------------------------------------------


def test_proration_by_started_month_round_half_up() -> None:
    worker = member("w", R.SELF, C.PRIVATE_SECTOR_WORKER)
    two_years = single(NEW, worker, period=(date(2026, 1, 1), date(2027, 12, 31)))
    assert (two_years.months, two_years.amount_minor) == (24, 200_000)
    seven = single(NEW, worker, period=(date(2026, 1, 1), date(2026, 7, 15)))
    assert (seven.months, seven.amount_minor) == (7, 58_333)  # 58 333.33 -> 58 333
    assert prorate_yearly(100_000, 1) == 8_333
    assert prorate_yearly(100_000, 5) == 41_667  # 41 666.67 -> 41 667
    assert prorate_yearly(6, 1) == 1  # 0.5 -> 1: half up
    assert prorate_yearly(18, 1) == 2  # 1.5 -> 2


def test_months_in_period() -> None:
    assert months_in_period(date(2025, 12, 23), date(2026, 12, 22)) == 12
    assert months_in_period(date(2025, 12, 23), date(2026, 12, 23)) == 13
    assert months_in_period(date(2026, 1, 1), date(2026, 1, 1)) == 1
    assert months_in_period(date(2026, 1, 31), date(2026, 2, 27)) == 1
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)


def test_period_limits() -> None:
    worker = (member("w", R.SELF, C.PRIVATE_SECTOR_WORKER),)
    assert quote_fees("KW", NEW, date(2026, 1, 1), date(2028, 12, 31), worker).total_minor == (
        300_000
    )
    with pytest.raises(FeeError, match="at most 36"):
        quote_fees("KW", NEW, date(2026, 1, 1), date(2029, 1, 1), worker)
    with pytest.raises(FeeError, match="before period_start"):
        quote_fees("KW", NEW, date(2026, 1, 2), date(2026, 1, 1), worker)


def test_bad_facts_are_refused() -> None:
    w = member("w", R.SELF, C.PRIVATE_SECTOR_WORKER)
    with pytest.raises(MemberFactsError, match="appears twice"):
        quote(NEW, w, w)
    with pytest.raises(MemberFactsError, match="at least one member"):
        quote(NEW)
    with pytest.raises(MemberFactsError, match="domestic_worker_ordinal must be"):
        quote(NEW, member("m", R.DOMESTIC_WORKER, C.DOMESTIC_WORKER, ordinal=0))
    with pytest.raises(MemberFactsError, match="sponsor_is_kuwaiti must be a bool"):
        quote(NEW, dataclasses.replace(w, sponsor_is_kuwaiti=1))  # type: ignore[arg-type]
    with pytest.raises(MemberFactsError, match="after the permit period"):
        quote(NEW, member("c", R.CHILD, C.DEPENDENT, date(2027, 1, 1)))


# --- file validation ------------------------------------------------------------------------


def _current() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEDULES / "kw-2025-12-23.json").read_text())
    return data


def test_float_amount_refused_in_json_text() -> None:
    text = (SCHEDULES / "kw-2025-12-23.json").read_text().replace("100000", "100000.0", 1)
    with pytest.raises(FeeScheduleError, match=r"float literal 100000\.0 is not allowed"):
        parse_schedule_json(text, source="tmp")


def test_float_amount_refused_in_dict_and_file(tmp_path: Path) -> None:
    data = _current()
    data["rules"][2]["amount_minor_per_month"] = 5000.0
    with pytest.raises(FeeScheduleError, match="must be a JSON integer, got float"):
        parse_schedule(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FeeScheduleError, match="float literal"):
        parse_schedule_json(path.read_bytes(), source=str(path))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(surcharge=1), r"unknown key\(s\) \['surcharge'\]"),
        (lambda d: d["rules"][0].update(priority=1), r"unknown key\(s\) \['priority'\]"),
        (lambda d: d["rules"][0]["match"].update(nationality="IN"), "unknown key"),
        (lambda d: d.pop("currency"), r"missing key\(s\) \['currency'\]"),
        (lambda d: d["rules"][5].update(amount_minor=True), "got bool"),
        (lambda d: d["rules"][5].update(amount_minor="100000"), "got str"),
        (lambda d: d["rules"][5].update(amount_minor=0), "must be >= 1"),
        (lambda d: d["rules"][0].update(exempt=False), "must be true"),
        (lambda d: d["rules"][5].update(exempt=True), "exactly one of"),
        (lambda d: d["rules"][1].update(id="KW25-KUWAITI-DEPENDENT"), "duplicate rule id"),
        (lambda d: d["rules"][0]["match"].update(relationship=["COUSIN"]), "not a Relationship"),
        (lambda d: d.update(effective_from="23/12/2025"), "ISO date"),
        (lambda d: d.update(effective_until="2025-01-01"), "before effective_from"),
        (lambda d: d.update(minor_units=3.0), "got float"),
        (lambda d: d.update(rules=[]), "non-empty list"),
        (lambda d: d["rules"][2].update(continue_after_window=True), "only allowed"),
    ],
)
def test_schedule_validation_refusals(mutate: Any, message: str) -> None:
    data = _current()
    mutate(data)
    with pytest.raises(FeeScheduleError, match=message):
        parse_schedule(data, source="tmp")


def test_duplicate_json_keys_refused() -> None:
    text = '{"jurisdiction": "KW", "jurisdiction": "KW"}'
    with pytest.raises(FeeScheduleError, match="duplicate key 'jurisdiction'"):
        parse_schedule_json(text)


def test_overlapping_ranges_refused() -> None:
    current = parse_schedule(_current())
    legacy_data = json.loads((SCHEDULES / "kw-legacy.json").read_text())
    legacy_data["effective_until"] = "2025-12-23"
    with pytest.raises(FeeScheduleError, match="overlap for jurisdiction KW"):
        ScheduleBook([parse_schedule(legacy_data), current])
    del legacy_data["effective_until"]  # an open-ended older schedule overlaps too
    with pytest.raises(FeeScheduleError, match="overlap"):
        ScheduleBook([current, parse_schedule(legacy_data)])
    other = copy.deepcopy(_current())
    other["version"] = "kw-2026-01-01"
    other["effective_from"] = "2026-01-01"
    with pytest.raises(FeeScheduleError, match="overlap"):
        ScheduleBook([current, parse_schedule(other)])


# --- property: no float anywhere on the money path ------------------------------------------


def _walk(value: object) -> list[object]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [value] + [
            x for f in dataclasses.fields(value) for x in _walk(getattr(value, f.name))
        ]
    if isinstance(value, tuple | list):
        return [x for item in value for x in _walk(item)]
    return [value]


_facts = st.builds(
    MemberFacts,
    person_key=st.just(""),
    relationship=st.sampled_from([R.SELF, R.SPOUSE, R.CHILD, R.PARENT, R.DOMESTIC_WORKER]),
    residence_category=st.sampled_from([c for c in C if c is not C.OTHER]),
    birth_date=st.dates(date(1940, 1, 1), date(2025, 12, 31)),
    sponsor_is_kuwaiti=st.booleans(),
    domestic_worker_ordinal=st.integers(1, 8),
)


@settings(max_examples=200, deadline=None)
@given(
    members=st.lists(_facts, min_size=1, max_size=8),
    renewal=st.dates(date(2024, 1, 1), date(2027, 12, 31)),
    start_offset=st.integers(0, 60),
    months=st.integers(1, 36),
    end_shift=st.integers(-27, 0),
)
def test_property_money_is_int_everywhere(
    members: list[MemberFacts], renewal: date, start_offset: int, months: int, end_shift: int
) -> None:
    start = date.fromordinal(renewal.toordinal() + start_offset)
    # Nobody is renewed before being born: such facts are refused (MemberFactsError), not priced.
    household = [
        dataclasses.replace(
            m, person_key=f"p{i}", birth_date=min(m.birth_date, start) if m.birth_date else None
        )
        for i, m in enumerate(members)
    ]
    end = date.fromordinal(add_months(start, months).toordinal() - 1 + end_shift)
    end = max(end, start)
    try:
        q = quote_fees("KW", renewal, start, end, household)
    except UnpricedMemberError:
        return  # e.g. a Kuwaiti's domestic worker under the legacy schedule: refused, not zero
    for value in _walk(q):
        assert type(value) is not float
    assert type(q.total_minor) is int
    assert all(type(line.amount_minor) is int and line.amount_minor >= 0 for line in q.lines)
    assert all(type(line.months) is int for line in q.lines)
    assert q.total_minor == sum(line.amount_minor for line in q.lines)
    assert {line.person_key for line in q.lines} == {m.person_key for m in household}
    for key in {line.person_key for line in q.lines}:
        assert sum(line.months for line in q.lines if line.person_key == key) == (
            months_in_period(start, end)
        )


_amount_paths = [
    (i, key)
    for i, rule in enumerate(_current()["rules"])
    for key in ("amount_minor", "amount_minor_per_month")
    if key in rule
]


@settings(max_examples=100, deadline=None)
@given(
    path=st.sampled_from(_amount_paths),
    amount=st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e9),
)
def test_property_any_float_amount_is_refused(path: tuple[int, str], amount: float) -> None:
    index, key = path
    data = _current()
    data["rules"][index][key] = amount
    with pytest.raises(FeeScheduleError):
        parse_schedule(data)
    text = json.dumps(data)  # json writes floats with a '.' or an exponent: a float literal
    with pytest.raises(FeeScheduleError, match="float literal"):
        parse_schedule_json(text)
