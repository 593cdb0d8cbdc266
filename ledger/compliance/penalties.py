"""Arrears and fines of an employer that did not insure its workers and their dependents.

Pure functions (no SQL, no gRPC) over plain values: the caller gives the uninsured days per
person (from the coverage projections), the annual premiums of the employer's own policies in
force and the market average for the category, and the establishment's size, activity and
region. Every figure is integer minor units and comes with its explanation: the inputs, the
schedule version, and which average was used.

The rules (Council of Health Insurance employer-compliance policy, 2025; docs/compliance.md):

* **arrears** per person = average annual premium x uninsured days / 365, rounded down to the
  minor unit; the average is that of the employer's own policies in force, else the market
  average for the same category;
* **fine** per person = the schedule's base fine x size-band weight x activity weight x region
  weight (integer per-mille weights), rounded down, capped at one year's premium (the same
  average).

Schedules are versioned, dated data files in ``ledger/compliance/schedules/`` (their figures are
illustrative: the file says so in ``source``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import NoReturn

from ledger.errors import FailedPrecondition, FieldViolation, InvalidArgument

__all__ = [
    "DAYS_PER_YEAR",
    "Average",
    "Establishment",
    "PenaltySchedule",
    "PersonAssessment",
    "ScheduleError",
    "SizeBand",
    "UninsuredPerson",
    "arrears_minor",
    "assess",
    "average_annual_premium",
    "fine_minor",
    "load_penalty_schedules",
    "parse_penalty_schedule_json",
    "schedule_for",
    "size_band",
]

DAYS_PER_YEAR = 365
"""The arrears formula divides by 365 days (the council's policy), leap years included."""
PERMILLE = 1000


class ScheduleError(ValueError):
    """A penalty schedule file is invalid (loading fails; nothing falls back to a default)."""


@dataclass(frozen=True)
class SizeBand:
    """Establishments with ``workers_min``..``workers_max`` workers (None: no upper bound)."""

    band_id: str
    workers_min: int
    workers_max: int | None
    weight_permille: int


@dataclass(frozen=True)
class PenaltySchedule:
    """One version of the penalty schedule."""

    version: str
    jurisdiction: str
    effective_from: dt.date
    effective_until: dt.date | None
    currency: str
    minor_units: int
    source: str
    base_fine_minor_per_person: int
    size_bands: tuple[SizeBand, ...]
    activity_weights_permille: Mapping[str, int]
    region_weights_permille: Mapping[str, int]


@dataclass(frozen=True)
class Establishment:
    """The employer, as the schedule weighs it."""

    establishment_number: str
    workers: int
    activity: str
    region: str


@dataclass(frozen=True)
class Average:
    """The average annual premium arrears and caps use, and where it came from."""

    amount_minor: int
    basis: str
    """``EMPLOYER_POLICIES`` (the employer's own policies in force) or ``MARKET``."""
    policies: int
    """How many of the employer's policies were averaged (0 for the market average)."""
    explanation: str


@dataclass(frozen=True)
class UninsuredPerson:
    """A person the employer was responsible for, and the days without valid coverage."""

    person: str
    """An opaque reference (a person token): this module never sees an identifier."""
    uninsured_days: int


@dataclass(frozen=True)
class PersonAssessment:
    """The figures for one person, each explained."""

    person: str
    uninsured_days: int
    arrears_minor: int
    fine_uncapped_minor: int
    fine_minor: int
    capped: bool
    explanation: tuple[str, ...]


def average_annual_premium(
    employer_premiums_minor: Sequence[int], market_average_minor: int | None, currency: str
) -> Average:
    """The average of the employer's policies in force, else the market average."""
    if employer_premiums_minor:
        if any(amount <= 0 for amount in employer_premiums_minor):
            raise InvalidArgument(
                "an annual premium must be positive",
                reason="PREMIUM_INVALID",
                field_violations=[FieldViolation("employer_premiums", "must be positive")],
            )
        count = len(employer_premiums_minor)
        amount = sum(employer_premiums_minor) // count
        return Average(
            amount,
            "EMPLOYER_POLICIES",
            count,
            f"average annual premium of the employer's {count} policies in force: "
            f"{sum(employer_premiums_minor)} / {count} = {amount} {currency} minor units "
            "(rounded down)",
        )
    if market_average_minor is None or market_average_minor <= 0:
        raise FailedPrecondition(
            "the employer has no policy in force and no market average was given",
            reason="NO_AVERAGE_PREMIUM",
            field_violations=[FieldViolation("market_average", "required without policies")],
        )
    return Average(
        market_average_minor,
        "MARKET",
        0,
        f"the employer has no policy in force: market average annual premium for the category, "
        f"{market_average_minor} {currency} minor units",
    )


def arrears_minor(average: Average, uninsured_days: int) -> int:
    """Average annual premium x uninsured days / 365, rounded down to the minor unit."""
    if uninsured_days < 0:
        raise ValueError("uninsured days cannot be negative")
    return average.amount_minor * uninsured_days // DAYS_PER_YEAR


def size_band(schedule: PenaltySchedule, workers: int) -> SizeBand:
    """The schedule's band for an establishment of ``workers`` workers."""
    for band in schedule.size_bands:
        if workers >= band.workers_min and (
            band.workers_max is None or workers <= band.workers_max
        ):
            return band
    raise InvalidArgument(
        f"no size band of {schedule.version} holds {workers} workers",
        reason="SIZE_BAND_UNKNOWN",
        field_violations=[FieldViolation("establishment.workers", "at least 1")],
    )


def _weight(table: Mapping[str, int], name: str, field: str, version: str) -> int:
    if name not in table:
        raise InvalidArgument(
            f"{field.rsplit('.', maxsplit=1)[-1]} {name!r} is not in penalty schedule {version} "
            f"({', '.join(sorted(table))})",
            reason="SCHEDULE_NAME_UNKNOWN",
            field_violations=[FieldViolation(field, f"one of {', '.join(sorted(table))}")],
        )
    return table[name]


def fine_minor(
    schedule: PenaltySchedule, establishment: Establishment, annual_premium_minor: int
) -> tuple[int, int, str]:
    """(uncapped fine, fine, explanation) for one uninsured person."""
    band = size_band(schedule, establishment.workers)
    activity = _weight(
        schedule.activity_weights_permille,
        establishment.activity,
        "establishment.activity",
        schedule.version,
    )
    region = _weight(
        schedule.region_weights_permille,
        establishment.region,
        "establishment.region",
        schedule.version,
    )
    uncapped = (
        schedule.base_fine_minor_per_person
        * band.weight_permille
        * activity
        * region
        // PERMILLE**3
    )
    fine = min(uncapped, annual_premium_minor)
    explanation = (
        f"fine: base {schedule.base_fine_minor_per_person} x size {band.band_id} "
        f"{band.weight_permille}/1000 x activity {establishment.activity} {activity}/1000 "
        f"x region {establishment.region} {region}/1000 = {uncapped} (rounded down)"
        + (
            f", capped at one year's premium {annual_premium_minor}"
            if fine < uncapped
            else f", under the cap of one year's premium {annual_premium_minor}"
        )
        + f" (schedule {schedule.version})"
    )
    return uncapped, fine, explanation


def assess(
    schedule: PenaltySchedule,
    establishment: Establishment,
    average: Average,
    people: Sequence[UninsuredPerson],
) -> tuple[PersonAssessment, ...]:
    """Arrears and fine for each person with uninsured days (people with none owe nothing)."""
    assessed = []
    for person in people:
        if person.uninsured_days <= 0:
            continue
        arrears = arrears_minor(average, person.uninsured_days)
        uncapped, fine, fine_text = fine_minor(schedule, establishment, average.amount_minor)
        assessed.append(
            PersonAssessment(
                person=person.person,
                uninsured_days=person.uninsured_days,
                arrears_minor=arrears,
                fine_uncapped_minor=uncapped,
                fine_minor=fine,
                capped=fine < uncapped,
                explanation=(
                    average.explanation,
                    f"arrears: {average.amount_minor} x {person.uninsured_days} days / "
                    f"{DAYS_PER_YEAR} = {arrears} {schedule.currency} minor units (rounded down)",
                    fine_text,
                ),
            )
        )
    return tuple(assessed)


# Schedules as data.


def schedule_for(schedules: Sequence[PenaltySchedule], day: dt.date) -> PenaltySchedule:
    """The schedule in force on ``day``."""
    for schedule in schedules:
        if schedule.effective_from <= day and (
            schedule.effective_until is None or day <= schedule.effective_until
        ):
            return schedule
    raise FailedPrecondition(
        f"no penalty schedule is in force on {day}",
        reason="NO_PENALTY_SCHEDULE",
        field_violations=[FieldViolation("period", f"no schedule covers {day}")],
    )


def load_penalty_schedules() -> tuple[PenaltySchedule, ...]:
    """Every packaged schedule, by effective date; overlapping schedules fail loading."""
    folder = resources.files("ledger.compliance") / "schedules"
    loaded = sorted(
        (
            parse_penalty_schedule_json(item.read_bytes(), source=item.name)
            for item in folder.iterdir()
            if item.name.endswith(".json")
        ),
        key=lambda schedule: schedule.effective_from,
    )
    for earlier, later in itertools.pairwise(loaded):
        if earlier.effective_until is None or earlier.effective_until >= later.effective_from:
            raise ScheduleError(f"{earlier.version} overlaps {later.version}")
    return tuple(loaded)


_KEYS = {
    "version",
    "jurisdiction",
    "effective_from",
    "currency",
    "minor_units",
    "source",
    "base_fine_minor_per_person",
    "size_bands",
    "activity_weights_permille",
    "region_weights_permille",
}
_OPTIONAL = {"effective_until"}


def parse_penalty_schedule_json(text: str | bytes, *, source: str = "<string>") -> PenaltySchedule:
    """Parse and strictly validate one schedule file (floats, unknown, missing or duplicate keys
    are refused)."""
    try:
        data = json.loads(
            text,
            parse_float=_refuse,
            parse_constant=_refuse,
            object_pairs_hook=_no_duplicates,
        )
    except ValueError as exc:
        _fail(source, str(exc))
    if not isinstance(data, dict):
        _fail(source, "the top level must be an object")
    _keys(source, "schedule", data, _KEYS, _OPTIONAL)
    version = _text(source, data, "version")
    if source not in ("<string>", f"{version}.json"):
        _fail(source, f"version {version!r} is not the file name")
    bands = data["size_bands"]
    if not isinstance(bands, list) or not bands:
        _fail(source, "size_bands must be a non-empty list")
    parsed_bands = []
    expected_min = 1
    for position, band in enumerate(bands):
        if not isinstance(band, dict):
            _fail(source, f"size_bands[{position}] must be an object")
        _keys(
            source,
            f"size_bands[{position}]",
            band,
            {"id", "workers_min", "weight_permille"},
            {"workers_max"},
        )
        workers_min = _int(source, band, "workers_min", 1)
        workers_max = (
            _int(source, band, "workers_max", workers_min) if "workers_max" in band else None
        )
        if workers_min != expected_min:
            _fail(source, f"size_bands[{position}] must start at {expected_min} workers")
        last = position == len(bands) - 1
        if (workers_max is None) != last:
            _fail(source, "only the last size band is open-ended, and it must be")
        parsed_bands.append(
            SizeBand(
                _text(source, band, "id"),
                workers_min,
                workers_max,
                _int(source, band, "weight_permille", 1),
            )
        )
        expected_min = (workers_max or 0) + 1
    until = data.get("effective_until")
    return PenaltySchedule(
        version=version,
        jurisdiction=_text(source, data, "jurisdiction"),
        effective_from=_date(source, data["effective_from"]),
        effective_until=None if until is None else _date(source, until),
        currency=_text(source, data, "currency"),
        minor_units=_int(source, data, "minor_units", 0),
        source=_text(source, data, "source"),
        base_fine_minor_per_person=_int(source, data, "base_fine_minor_per_person", 1),
        size_bands=tuple(parsed_bands),
        activity_weights_permille=_weights(source, data, "activity_weights_permille"),
        region_weights_permille=_weights(source, data, "region_weights_permille"),
    )


def _fail(source: str, message: str) -> NoReturn:
    raise ScheduleError(f"penalty schedule {source}: {message}")


def _refuse(text: str) -> NoReturn:
    raise ValueError(f"{text} is not allowed (figures are integers)")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _keys(
    source: str, where: str, data: dict[str, object], required: set[str], optional: set[str]
) -> None:
    missing, unknown = required - data.keys(), data.keys() - required - optional
    if missing or unknown:
        _fail(source, f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")


def _int(source: str, data: dict[str, object], key: str, minimum: int) -> int:
    value = data[key]
    if type(value) is not int or value < minimum:
        _fail(source, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _text(source: str, data: dict[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        _fail(source, f"{key} must be a non-empty string")
    return value


def _date(source: str, value: object) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        _fail(source, f"{value!r} is not an ISO date")


def _weights(source: str, data: dict[str, object], key: str) -> Mapping[str, int]:
    table = data[key]
    if not isinstance(table, dict) or not table:
        _fail(source, f"{key} must be a non-empty object")
    return {name: _int(source, table, name, 1) for name in table}
