"""Arrears and fines (ledger/compliance/penalties.py): integer minor units, every figure
explained, checked against exact rational arithmetic over generated inputs."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.compliance import penalties as p
from ledger.errors import FailedPrecondition, InvalidArgument

SCHEDULES = p.load_penalty_schedules()
SCHEDULE = p.schedule_for(SCHEDULES, dt.date(2026, 1, 1))
ACTIVITIES = sorted(SCHEDULE.activity_weights_permille)
REGIONS = sorted(SCHEDULE.region_weights_permille)

establishments = st.builds(
    p.Establishment,
    st.just("7001234567"),
    st.integers(1, 5000),
    st.sampled_from(ACTIVITIES),
    st.sampled_from(REGIONS),
)
premiums = st.lists(st.integers(1, 10**8), max_size=20)


@given(premiums, st.integers(1, 10**8) | st.none(), st.integers(0, 3 * 366))
def test_arrears_are_the_average_premium_times_days_over_365_rounded_down(
    employer: list[int], market: int | None, days: int
) -> None:
    if not employer and market is None:
        with pytest.raises(FailedPrecondition):
            p.average_annual_premium(employer, market, "SAR")
        return
    average = p.average_annual_premium(employer, market, "SAR")
    expected = Fraction(sum(employer), len(employer)) if employer else Fraction(market or 0)
    assert average.amount_minor == int(expected)  # floor: every premium is positive
    assert average.basis == ("EMPLOYER_POLICIES" if employer else "MARKET")
    assert str(average.amount_minor) in average.explanation
    arrears = p.arrears_minor(average, days)
    assert isinstance(arrears, int)
    assert arrears == int(Fraction(average.amount_minor * days, 365))
    assert arrears <= average.amount_minor * (days // 365 + 1)


@given(establishments, st.integers(1, 10**7))
def test_the_fine_is_the_weighted_base_capped_at_one_year_s_premium(
    establishment: p.Establishment, premium: int
) -> None:
    uncapped, fine, explanation = p.fine_minor(SCHEDULE, establishment, premium)
    band = p.size_band(SCHEDULE, establishment.workers)
    exact = (
        Fraction(SCHEDULE.base_fine_minor_per_person)
        * Fraction(band.weight_permille, 1000)
        * Fraction(SCHEDULE.activity_weights_permille[establishment.activity], 1000)
        * Fraction(SCHEDULE.region_weights_permille[establishment.region], 1000)
    )
    assert uncapped == int(exact)
    assert fine == min(uncapped, premium) and fine <= premium
    assert band.workers_min <= establishment.workers
    assert band.workers_max is None or establishment.workers <= band.workers_max
    assert SCHEDULE.version in explanation and band.band_id in explanation


@given(
    establishments,
    st.integers(1, 10**7),
    st.lists(st.integers(-5, 800), max_size=10),
)
def test_an_assessment_explains_each_person_and_skips_the_insured(
    establishment: p.Establishment, premium: int, days: list[int]
) -> None:
    average = p.average_annual_premium([premium], None, "SAR")
    people = [p.UninsuredPerson(f"token-{n}", d) for n, d in enumerate(days)]
    lines = p.assess(SCHEDULE, establishment, average, people)
    assert [line.person for line in lines] == [x.person for x in people if x.uninsured_days > 0]
    for line in lines:
        assert line.arrears_minor == premium * line.uninsured_days // 365
        assert line.fine_minor <= premium and line.capped == (
            line.fine_minor < line.fine_uncapped_minor
        )
        assert len(line.explanation) == 3 and str(line.arrears_minor) in line.explanation[1]


def test_a_worked_example() -> None:
    """A small retailer in Riyadh (20 workers), one worker uninsured 73 days, policies averaging
    SAR 4,500: arrears 4,500 x 73/365 = SAR 900; fine 5,000 x 0.6 x 0.9 x 1.0 = SAR 2,700,
    under the cap of SAR 4,500 (illustrative schedule)."""
    average = p.average_annual_premium([400_000, 500_000], None, "SAR")
    shop = p.Establishment("7001234567", 20, "RETAIL", "RIYADH")
    [line] = p.assess(SCHEDULE, shop, average, [p.UninsuredPerson("tok", 73)])
    assert (average.amount_minor, line.arrears_minor, line.fine_minor) == (450_000, 90_000, 270_000)
    assert not line.capped
    cheap = p.average_annual_premium([], 100_000, "SAR")
    [capped] = p.assess(SCHEDULE, shop, cheap, [p.UninsuredPerson("tok", 365)])
    assert (capped.fine_uncapped_minor, capped.fine_minor, capped.capped) == (
        270_000,
        100_000,
        True,
    )
    assert "market average" in capped.explanation[0]


def test_unknown_names_and_sizes_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        p.fine_minor(SCHEDULE, p.Establishment("1", 3, "MINING", "RIYADH"), 1000)
    assert raised.value.details.field_violations[0].field == "establishment.activity"
    with pytest.raises(InvalidArgument):
        p.fine_minor(SCHEDULE, p.Establishment("1", 0, "RETAIL", "RIYADH"), 1000)
    with pytest.raises(FailedPrecondition):
        p.schedule_for(SCHEDULES, dt.date(2024, 12, 31))


GOOD = (
    '{"version": "v", "jurisdiction": "SA", "effective_from": "2025-01-01", "currency": "SAR",'
    ' "minor_units": 2, "source": "s", "base_fine_minor_per_person": 100,'
    ' "size_bands": [{"id": "A", "workers_min": 1, "workers_max": 9, "weight_permille": 500},'
    ' {"id": "B", "workers_min": 10, "weight_permille": 1000}],'
    ' "activity_weights_permille": {"X": 1000}, "region_weights_permille": {"Y": 1000}}'
)


@pytest.mark.parametrize(
    "bad",
    [
        GOOD.replace('"base_fine_minor_per_person": 100', '"base_fine_minor_per_person": 100.0'),
        GOOD.replace('"minor_units": 2,', '"minor_units": 2, "minor_units": 2,'),
        GOOD.replace('"source": "s",', '"source": "s", "extra": 1,'),
        GOOD.replace('"source": "s",', ""),
        GOOD.replace('"workers_min": 10', '"workers_min": 11'),
        GOOD.replace('"workers_max": 9, ', ""),
        GOOD.replace('{"X": 1000}', '{"X": true}'),
        GOOD.replace('"2025-01-01"', '"2025-13-01"'),
    ],
)
def test_a_bad_schedule_file_fails_loading(bad: str) -> None:
    assert p.parse_penalty_schedule_json(GOOD).version == "v"
    with pytest.raises(p.ScheduleError):
        p.parse_penalty_schedule_json(bad)
