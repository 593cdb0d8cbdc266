"""The fee engine: versioned fee schedules (data files) and the quote for one renewal.

Kuwait's Ministry of Interior collects the health-insurance fee for an expatriate, his family and
his domestic worker inside the online residence renewal. What each person pays is decided by a
*fee schedule*: a JSON file under ``payments/schedules/`` with an effective date range and an
ordered list of rules (first match wins). docs/fees.md describes the format, the rules and every
decision taken here (proration, the newborn window, ages).

The module is pure: the only I/O is reading the packaged schedule files with
:mod:`importlib.resources`. Money is integer minor units (fils for KWD, 3 decimals) from the file
to the quote; the JSON parser refuses any float literal (``100.0`` included), and every amount is
checked with ``type(x) is int`` so that neither ``float`` nor ``bool`` can slip in.

Usage::

    quote = quote_fees("KW", renewal_date, period_start, period_end, members)
    quote.total_minor  # int, fils
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from typing import NoReturn, TypeVar

from ledger.errors import InvalidArgument

__all__ = [
    "MAX_PERIOD_MONTHS",
    "FeeError",
    "FeeLine",
    "FeeQuote",
    "FeeRule",
    "FeeSchedule",
    "FeeScheduleError",
    "MemberFacts",
    "MemberFactsError",
    "Relationship",
    "ResidenceCategory",
    "RuleMatch",
    "ScheduleBook",
    "UnpricedMemberError",
    "add_months",
    "age_in_years",
    "default_schedules",
    "format_minor",
    "load_packaged_schedules",
    "months_in_period",
    "parse_schedule",
    "parse_schedule_json",
    "prorate_yearly",
    "quote_fees",
]

MAX_PERIOD_MONTHS = 36
"""The longest permit period a quote covers (Kuwait issues residence for up to 3 years)."""


# --------------------------------------------------------------------------------------------
# Errors


class FeeError(InvalidArgument):
    """Root of the fee engine's errors (maps to gRPC ``INVALID_ARGUMENT``)."""


class FeeScheduleError(FeeError):
    """A schedule file is invalid, or no schedule applies (unknown jurisdiction, no date match)."""


class MemberFactsError(FeeError):
    """The facts sent for a household member are malformed or incomplete for the rules."""


class UnpricedMemberError(FeeError):
    """No rule of the schedule matches a member: never priced as a silent zero."""


# --------------------------------------------------------------------------------------------
# Facts


class ResidenceCategory(enum.Enum):
    """The residence (or visa) category of one person, as the Ministry of Interior records it."""

    GOVERNMENT_WORKER = "government_worker"
    """Employee in the government sector (Aliens Residence Law, article 17)."""
    PRIVATE_SECTOR_WORKER = "private_sector_worker"
    """Employee in the private sector (article 18), except the reduced-rate trades below."""
    INVESTOR_OR_PARTNER = "investor_or_partner"
    """Foreign investor or commercial partner (article 21)."""
    STUDENT = "student"
    """Foreign student (article 23)."""
    SELF_SPONSORED = "self_sponsored"
    """Foreigner sponsoring himself (article 24)."""
    PROPERTY_OWNER = "property_owner"
    """Foreign property owner."""
    DEPENDENT = "dependent"
    """Family residence (article 22): spouse, child or parent joining a resident."""
    AGRICULTURAL_WORKER = "agricultural_worker"
    FISHING_WORKER = "fishing_worker"
    HERDING_WORKER = "herding_worker"
    """Camel and sheep herders (shepherds)."""
    DAIRY_WORKER = "dairy_worker"
    """Worker of a dairy company."""
    DOMESTIC_WORKER = "domestic_worker"
    """Domestic worker (article 20)."""
    TEMPORARY_ENTRY_VISA = "temporary_entry_visa"
    """Entry visa held while the residence is being obtained (charged per month)."""
    OTHER = "other"
    """Any other category: no schedule prices it, so quoting it is an error, never a guess."""


class Relationship(enum.Enum):
    """How a person relates to the household the renewal is for."""

    SELF = "self"
    """The resident in his own right (the worker, investor, student...)."""
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    DOMESTIC_WORKER = "domestic_worker"
    OTHER = "other"


@dataclass(frozen=True)
class MemberFacts:
    """What the portal knows about one person of the household; the rules decide on these only."""

    person_key: str
    """The caller's stable key for the person (echoed on the fee line)."""
    relationship: Relationship
    residence_category: ResidenceCategory
    birth_date: date | None
    """Required for children (newborn window, the legacy under-18 rate)."""
    sponsor_is_kuwaiti: bool
    """The person's residence sponsor (the family head, or the household employing a domestic
    worker) is a Kuwaiti citizen."""
    domestic_worker_ordinal: int | None = None
    """For a domestic worker: 1 for the household's first domestic worker, 2 for the second..."""


# --------------------------------------------------------------------------------------------
# Schedules


_CONDITION_KEYS = frozenset(
    {
        "relationship",
        "residence_category",
        "sponsor_is_kuwaiti",
        "domestic_worker_ordinal_min",
        "domestic_worker_ordinal_max",
        "age_under_years",
        "age_at_least_years",
        "newborn_within_months",
    }
)
_AMOUNT_KEYS = ("amount_minor", "amount_minor_per_month", "exempt")
_RULE_KEYS = frozenset({"id", "description", "match", "continue_after_window", *_AMOUNT_KEYS})
_REQUIRED_SCHEDULE_KEYS = frozenset(
    {"jurisdiction", "version", "effective_from", "currency", "minor_units", "rules"}
)
_SCHEDULE_KEYS = _REQUIRED_SCHEDULE_KEYS | {"effective_until"}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RULE_ID = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
_VERSION = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
_PACKAGED_FILES = ("kw-legacy.json", "kw-2025-12-23.json", "ma-2005-08-18.json")
_E = TypeVar("_E", bound=enum.Enum)


@dataclass(frozen=True)
class RuleMatch:
    """The conditions of one rule; ``None`` means "any". All given conditions must hold."""

    relationships: frozenset[Relationship] | None = None
    residence_categories: frozenset[ResidenceCategory] | None = None
    sponsor_is_kuwaiti: bool | None = None
    domestic_worker_ordinal_min: int | None = None
    domestic_worker_ordinal_max: int | None = None
    age_under_years: int | None = None
    """Age on the renewal date is less than this many years."""
    age_at_least_years: int | None = None
    newborn_within_months: int | None = None
    """``period_start < birth_date + N calendar months``."""


@dataclass(frozen=True)
class FeeRule:
    """One rule: conditions and an outcome (exactly one of the three amount forms)."""

    rule_id: str
    description: str
    match: RuleMatch
    amount_minor: int | None = None
    """Per year, prorated by month (see :func:`prorate_yearly`)."""
    amount_minor_per_month: int | None = None
    exempt: bool = False
    continue_after_window: bool = False
    """Only with ``exempt`` and ``newborn_within_months``: the exemption covers the newborn
    window only, the rest of the period is priced by the following rules."""


@dataclass(frozen=True)
class FeeSchedule:
    """One versioned schedule of one jurisdiction, effective on a closed date range."""

    jurisdiction: str
    version: str
    effective_from: date
    effective_until: date | None
    """Last day the schedule applies (inclusive); ``None``: until replaced."""
    currency: str
    minor_units: int
    rules: tuple[FeeRule, ...]

    def covers(self, day: date) -> bool:
        """Whether a renewal dated ``day`` is priced by this schedule."""
        return self.effective_from <= day and (
            self.effective_until is None or day <= self.effective_until
        )


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise FeeScheduleError(
        f"fee schedule {source}: {where}: {message}",
        reason="FEE_SCHEDULE_INVALID",
        metadata={"source": source, "where": where},
    )


def _refuse_float(text: str) -> NoReturn:
    raise ValueError(f"float literal {text} is not allowed (amounts are integer minor units)")


def _refuse_constant(text: str) -> NoReturn:
    raise ValueError(f"constant {text} is not allowed")


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_schedule_json(text: str | bytes, *, source: str = "<string>") -> FeeSchedule:
    """Parse and strictly validate one schedule file's text.

    Float literals (``100.0``, ``1e5``), ``NaN``/``Infinity`` and duplicate keys are refused by
    the parser itself, before any value reaches Python.
    """
    try:
        data = json.loads(
            text,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _fail(source, "json", str(exc))
    if not isinstance(data, dict):
        _fail(source, "top level", "must be a JSON object")
    return parse_schedule(data, source=source)


def _int(value: object, source: str, where: str, *, minimum: int) -> int:
    if type(value) is not int:  # refuses float (100.0) and bool
        _fail(source, where, f"must be a JSON integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        _fail(source, where, f"must be >= {minimum}, got {value}")
    return value


def _str(value: object, source: str, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if type(value) is not str or not value.strip():
        _fail(source, where, f"must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        _fail(source, where, f"{value!r} does not match {pattern.pattern}")
    return value


def _date(value: object, source: str, where: str) -> date:
    text = _str(value, source, where)
    if not _ISO_DATE.match(text):
        _fail(source, where, f"must be an ISO date YYYY-MM-DD, got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        _fail(source, where, f"invalid date {text!r}: {exc}")


def _check_keys(
    obj: Mapping[str, object],
    allowed: Iterable[str],
    required: Iterable[str],
    source: str,
    where: str,
) -> None:
    allowed_set = frozenset(allowed)
    unknown = sorted(set(obj) - allowed_set)
    if unknown:
        _fail(source, where, f"unknown key(s) {unknown}; allowed: {sorted(allowed_set)}")
    missing = sorted(set(required) - set(obj))
    if missing:
        _fail(source, where, f"missing key(s) {missing}")


def _enum_set(value: object, kind: type[_E], source: str, where: str) -> frozenset[_E]:
    if type(value) is not list or not value:
        _fail(source, where, f"must be a non-empty list of {kind.__name__} names")
    members: set[_E] = set()
    for item in value:
        if type(item) is not str or item not in kind.__members__:
            _fail(
                source,
                where,
                f"{item!r} is not a {kind.__name__}; allowed: {sorted(kind.__members__)}",
            )
        members.add(kind.__members__[item])
    return frozenset(members)


def _parse_match(value: object, source: str, where: str) -> RuleMatch:
    if type(value) is not dict:
        _fail(source, where, "must be a JSON object of conditions")
    _check_keys(value, _CONDITION_KEYS, (), source, where)

    def opt_int(key: str, minimum: int) -> int | None:
        if key not in value:
            return None
        return _int(value[key], source, f"{where}.{key}", minimum=minimum)

    sponsor = value.get("sponsor_is_kuwaiti")
    if sponsor is not None and type(sponsor) is not bool:
        _fail(source, f"{where}.sponsor_is_kuwaiti", f"must be true or false, got {sponsor!r}")
    match = RuleMatch(
        relationships=(
            _enum_set(value["relationship"], Relationship, source, f"{where}.relationship")
            if "relationship" in value
            else None
        ),
        residence_categories=(
            _enum_set(
                value["residence_category"],
                ResidenceCategory,
                source,
                f"{where}.residence_category",
            )
            if "residence_category" in value
            else None
        ),
        sponsor_is_kuwaiti=sponsor,
        domestic_worker_ordinal_min=opt_int("domestic_worker_ordinal_min", 1),
        domestic_worker_ordinal_max=opt_int("domestic_worker_ordinal_max", 1),
        age_under_years=opt_int("age_under_years", 1),
        age_at_least_years=opt_int("age_at_least_years", 0),
        newborn_within_months=opt_int("newborn_within_months", 1),
    )
    low, high = match.domestic_worker_ordinal_min, match.domestic_worker_ordinal_max
    if low is not None and high is not None and low > high:
        _fail(source, where, f"domestic_worker_ordinal_min {low} > max {high}")
    return match


def _parse_rule(value: object, source: str, where: str) -> FeeRule:
    if type(value) is not dict:
        _fail(source, where, "must be a JSON object")
    _check_keys(value, _RULE_KEYS, ("id", "description", "match"), source, where)
    rule_id = _str(value["id"], source, f"{where}.id", _RULE_ID)
    where = f"rule {rule_id}"
    description = _str(value["description"], source, f"{where}.description")
    match = _parse_match(value["match"], source, f"{where}.match")
    outcomes = [key for key in _AMOUNT_KEYS if key in value]
    if len(outcomes) != 1:
        _fail(source, where, f"needs exactly one of {list(_AMOUNT_KEYS)}, got {outcomes}")
    amount = per_month = None
    exempt = False
    if "amount_minor" in value:
        amount = _int(value["amount_minor"], source, f"{where}.amount_minor", minimum=1)
    elif "amount_minor_per_month" in value:
        per_month = _int(
            value["amount_minor_per_month"], source, f"{where}.amount_minor_per_month", minimum=1
        )
    elif value["exempt"] is not True:
        _fail(source, f"{where}.exempt", "must be true (a zero fee is written as exempt: true)")
    else:
        exempt = True
    cont = value.get("continue_after_window", False)
    if type(cont) is not bool:
        _fail(source, f"{where}.continue_after_window", f"must be true or false, got {cont!r}")
    if cont and not (exempt and match.newborn_within_months is not None):
        _fail(
            source,
            f"{where}.continue_after_window",
            "only allowed on an exempt rule with a newborn_within_months condition",
        )
    return FeeRule(
        rule_id=rule_id,
        description=description,
        match=match,
        amount_minor=amount,
        amount_minor_per_month=per_month,
        exempt=exempt,
        continue_after_window=cont,
    )


def parse_schedule(data: Mapping[str, object], *, source: str = "<dict>") -> FeeSchedule:
    """Validate an already-decoded schedule (a dict) strictly and build a :class:`FeeSchedule`.

    Refused: unknown or missing keys, non-integer amounts (``100.0`` too), booleans where a number
    is expected, unknown enum names, empty rule lists, duplicate rule ids, a rule with no or
    several outcomes, ``effective_until`` before ``effective_from``.
    """
    if not isinstance(data, Mapping):
        _fail(source, "top level", "must be a JSON object")
    _check_keys(data, _SCHEDULE_KEYS, _REQUIRED_SCHEDULE_KEYS, source, "top level")
    jurisdiction = _str(data["jurisdiction"], source, "jurisdiction", re.compile(r"^[A-Z]{2}$"))
    version = _str(data["version"], source, "version", _VERSION)
    effective_from = _date(data["effective_from"], source, "effective_from")
    effective_until = None
    if "effective_until" in data:
        effective_until = _date(data["effective_until"], source, "effective_until")
        if effective_until < effective_from:
            _fail(source, "effective_until", "is before effective_from")
    currency = _str(data["currency"], source, "currency", re.compile(r"^[A-Z]{3}$"))
    minor_units = _int(data["minor_units"], source, "minor_units", minimum=0)
    if minor_units > 4:
        _fail(source, "minor_units", f"must be 0..4 (ISO 4217), got {minor_units}")
    raw_rules = data["rules"]
    if type(raw_rules) is not list or not raw_rules:
        _fail(source, "rules", "must be a non-empty list")
    rules = tuple(_parse_rule(raw, source, f"rules[{i}]") for i, raw in enumerate(raw_rules))
    seen: set[str] = set()
    for rule in rules:
        if rule.rule_id in seen:
            _fail(source, "rules", f"duplicate rule id {rule.rule_id}")
        seen.add(rule.rule_id)
    return FeeSchedule(
        jurisdiction=jurisdiction,
        version=version,
        effective_from=effective_from,
        effective_until=effective_until,
        currency=currency,
        minor_units=minor_units,
        rules=rules,
    )


class ScheduleBook:
    """The schedules of every jurisdiction, checked for duplicate versions and overlaps."""

    def __init__(self, schedules: Iterable[FeeSchedule]) -> None:
        by_jurisdiction: dict[str, list[FeeSchedule]] = {}
        versions: set[str] = set()
        for schedule in schedules:
            if schedule.version in versions:
                raise FeeScheduleError(
                    f"fee schedule version {schedule.version} appears twice",
                    reason="FEE_SCHEDULE_INVALID",
                )
            versions.add(schedule.version)
            by_jurisdiction.setdefault(schedule.jurisdiction, []).append(schedule)
        for jurisdiction, group in by_jurisdiction.items():
            group.sort(key=lambda s: s.effective_from)
            for earlier, later in itertools.pairwise(group):
                if (
                    earlier.effective_until is None
                    or earlier.effective_until >= later.effective_from
                ):
                    until = earlier.effective_until or "open end"
                    raise FeeScheduleError(
                        f"fee schedules {earlier.version} ({earlier.effective_from}..{until}) "
                        f"and {later.version} (from {later.effective_from}) overlap for "
                        f"jurisdiction {jurisdiction}",
                        reason="FEE_SCHEDULE_OVERLAP",
                    )
        self._by_jurisdiction = {k: tuple(v) for k, v in by_jurisdiction.items()}

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        """The jurisdictions that have at least one schedule, sorted."""
        return tuple(sorted(self._by_jurisdiction))

    def schedules(self, jurisdiction: str) -> tuple[FeeSchedule, ...]:
        """The schedules of ``jurisdiction``, oldest first (empty if unknown)."""
        return self._by_jurisdiction.get(jurisdiction, ())

    def for_date(self, jurisdiction: str, renewal_date: date) -> FeeSchedule:
        """The schedule effective on ``renewal_date``; :class:`FeeScheduleError` if none."""
        group = self._by_jurisdiction.get(jurisdiction)
        if not group:
            raise FeeScheduleError(
                f"no fee schedule for jurisdiction {jurisdiction!r}; "
                f"known: {list(self.jurisdictions)}",
                reason="FEE_SCHEDULE_NOT_FOUND",
                metadata={"jurisdiction": str(jurisdiction)},
            )
        for schedule in group:
            if schedule.covers(renewal_date):
                return schedule
        ranges = ", ".join(
            f"{s.version} {s.effective_from}..{s.effective_until or 'open end'}" for s in group
        )
        raise FeeScheduleError(
            f"no {jurisdiction} fee schedule is effective on {renewal_date.isoformat()} "
            f"(schedules: {ranges})",
            reason="FEE_SCHEDULE_NOT_FOUND",
            metadata={"jurisdiction": jurisdiction, "renewal_date": renewal_date.isoformat()},
        )


def load_packaged_schedules() -> ScheduleBook:
    """Read and validate the schedule files shipped in ``payments/schedules/``.

    Each file's ``version`` must equal its file name without ``.json``.
    """
    folder = resources.files("payments").joinpath("schedules")
    schedules = []
    for name in _PACKAGED_FILES:
        source = f"payments/schedules/{name}"
        schedule = parse_schedule_json(folder.joinpath(name).read_bytes(), source=source)
        if schedule.version != name.removesuffix(".json"):
            _fail(source, "version", f"{schedule.version!r} does not match the file name")
        schedules.append(schedule)
    return ScheduleBook(schedules)


@functools.cache
def default_schedules() -> ScheduleBook:
    """The packaged schedules, loaded and validated once per process."""
    return load_packaged_schedules()


# --------------------------------------------------------------------------------------------
# Calendar arithmetic (integers only)


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months, clamped to the month's last day (31 Jan + 1 =
    28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    next_first = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    last_day = (next_first - timedelta(days=1)).day
    return date(year, month, min(day.day, last_day))


def months_in_period(period_start: date, period_end: date) -> int:
    """Whole calendar months covering ``period_start..period_end`` (both inclusive), a started
    month counting as a whole one: the smallest ``n`` with ``add_months(start, n) > end``."""
    if period_end < period_start:
        raise FeeError(
            f"period_end {period_end} is before period_start {period_start}",
            reason="FEE_PERIOD_INVALID",
        )
    months = (period_end.year - period_start.year) * 12 + period_end.month - period_start.month
    months = max(months, 0)
    while add_months(period_start, months) <= period_end:
        months += 1
    while months > 1 and add_months(period_start, months - 1) > period_end:
        months -= 1
    return months


def age_in_years(birth_date: date, on: date) -> int:
    """Completed years on ``on`` (a 29 February birthday is reached on 1 March)."""
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def prorate_yearly(amount_minor: int, months: int) -> int:
    """``amount_minor * months / 12`` rounded half up to the minor unit, in integers only."""
    if type(amount_minor) is not int or type(months) is not int:
        raise TypeError("prorate_yearly takes integers only")
    return (amount_minor * months * 2 + 12) // 24


def format_minor(amount_minor: int, minor_units: int) -> str:
    """Display an amount of minor units with its decimals (``100000, 3 -> "100.000"``)."""
    if type(amount_minor) is not int or type(minor_units) is not int:
        raise TypeError("format_minor takes integers only")
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**minor_units)
    return f"{sign}{whole}.{fraction:0{minor_units}d}" if minor_units else f"{sign}{whole}"


# --------------------------------------------------------------------------------------------
# Quotes


@dataclass(frozen=True)
class FeeLine:
    """What one rule charges one person."""

    person_key: str
    schedule_version: str
    rule_id: str
    rule_description: str
    months: int
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class FeeQuote:
    """The fee for a household's renewal: one or more lines per person and their total."""

    jurisdiction: str
    schedule_version: str
    renewal_date: date
    period_start: date
    period_end: date
    lines: tuple[FeeLine, ...]
    total_minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.total_minor) is not int or any(
            type(line.amount_minor) is not int for line in self.lines
        ):
            raise TypeError("fee amounts must be int")
        if self.total_minor != sum(line.amount_minor for line in self.lines):
            raise ValueError("total_minor must equal the sum of the lines")


def _check_facts(members: Sequence[MemberFacts], renewal_date: date, period_end: date) -> None:
    seen: set[str] = set()
    for i, member in enumerate(members):
        where = f"members[{i}]"

        def bad(message: str, where: str = where) -> NoReturn:
            raise MemberFactsError(f"{where}: {message}", reason="FEE_FACTS_INVALID")

        if not isinstance(member, MemberFacts):
            bad(f"must be MemberFacts, got {type(member).__name__}")
        if type(member.person_key) is not str or not member.person_key:
            bad("person_key must be a non-empty string")
        if member.person_key in seen:
            bad(f"person_key {member.person_key!r} appears twice")
        seen.add(member.person_key)
        if not isinstance(member.relationship, Relationship):
            bad(f"relationship must be a Relationship, got {member.relationship!r}")
        if not isinstance(member.residence_category, ResidenceCategory):
            bad(
                f"residence_category must be a ResidenceCategory, got {member.residence_category!r}"
            )
        if type(member.sponsor_is_kuwaiti) is not bool:
            bad(f"sponsor_is_kuwaiti must be a bool, got {member.sponsor_is_kuwaiti!r}")
        ordinal = member.domestic_worker_ordinal
        if ordinal is not None and (type(ordinal) is not int or ordinal < 1):
            bad(f"domestic_worker_ordinal must be an int >= 1 or None, got {ordinal!r}")
        birth = member.birth_date
        if birth is not None:
            if type(birth) is not date:
                bad(f"birth_date must be a date, got {birth!r}")
            if birth > period_end:
                bad(f"birth_date {birth} is after the permit period")


def _needs(member: MemberFacts, rule: FeeRule, fact: str) -> NoReturn:
    raise MemberFactsError(
        f"person {member.person_key!r}: rule {rule.rule_id} needs {fact}, which was not given",
        reason="FEE_FACTS_INCOMPLETE",
        metadata={"person_key": member.person_key, "rule_id": rule.rule_id, "fact": fact},
    )


def _matches(rule: FeeRule, member: MemberFacts, renewal_date: date, period_start: date) -> bool:
    """Whether ``rule`` applies. Facts-free conditions are tested first; if they hold and a
    condition needs a fact that was not sent, that is an error (never a guess)."""
    m = rule.match
    if not (
        (m.relationships is None or member.relationship in m.relationships)
        and (m.residence_categories is None or member.residence_category in m.residence_categories)
        and (m.sponsor_is_kuwaiti is None or member.sponsor_is_kuwaiti == m.sponsor_is_kuwaiti)
    ):
        return False
    low, high = m.domestic_worker_ordinal_min, m.domestic_worker_ordinal_max
    if low is not None or high is not None:
        ordinal = member.domestic_worker_ordinal
        if ordinal is None:
            _needs(member, rule, "domestic_worker_ordinal")
        if (low is not None and ordinal < low) or (high is not None and ordinal > high):
            return False
    if (
        m.age_under_years is None
        and m.age_at_least_years is None
        and (m.newborn_within_months is None)
    ):
        return True
    birth = member.birth_date
    if birth is None:
        _needs(member, rule, "birth_date")
    age = age_in_years(birth, renewal_date)
    return (
        (m.age_under_years is None or age < m.age_under_years)
        and (m.age_at_least_years is None or age >= m.age_at_least_years)
        and (
            m.newborn_within_months is None
            or period_start < add_months(birth, m.newborn_within_months)
        )
    )


def _price_member(
    schedule: FeeSchedule,
    *,
    member: MemberFacts,
    renewal_date: date,
    period_start: date,
    period_end: date,
    months: int,
) -> list[FeeLine]:
    def line(rule: FeeRule, line_months: int, amount: int) -> FeeLine:
        return FeeLine(
            person_key=member.person_key,
            schedule_version=schedule.version,
            rule_id=rule.rule_id,
            rule_description=rule.description,
            months=line_months,
            amount_minor=amount,
            currency=schedule.currency,
        )

    lines: list[FeeLine] = []
    remaining = months
    for rule in schedule.rules:
        if not _matches(rule, member, renewal_date, period_start):
            continue
        if rule.continue_after_window:
            if lines:  # a second window rule never re-exempts the remainder
                continue
            birth = member.birth_date
            window = rule.match.newborn_within_months
            if birth is None or window is None:  # pragma: no cover - _matches guarantees both
                _needs(member, rule, "birth_date")
            window_end = add_months(birth, window) - timedelta(days=1)
            exempt_months = months_in_period(period_start, min(window_end, period_end))
            lines.append(line(rule, exempt_months, 0))
            remaining = months - exempt_months
            if remaining <= 0:
                return lines
            continue
        if rule.exempt:
            amount = 0
        elif rule.amount_minor_per_month is not None:
            amount = rule.amount_minor_per_month * remaining
        elif rule.amount_minor is not None:
            amount = prorate_yearly(rule.amount_minor, remaining)
        else:  # pragma: no cover - parse_schedule guarantees one outcome
            raise FeeScheduleError(f"rule {rule.rule_id} has no outcome")
        lines.append(line(rule, remaining, amount))
        return lines
    raise UnpricedMemberError(
        f"no rule of fee schedule {schedule.version} matches person {member.person_key!r} "
        f"(relationship {member.relationship.name}, residence category "
        f"{member.residence_category.name}, sponsor_is_kuwaiti {member.sponsor_is_kuwaiti}, "
        f"domestic_worker_ordinal {member.domestic_worker_ordinal}); "
        "refusing to price it as zero",
        reason="FEE_MEMBER_UNPRICED",
        metadata={"person_key": member.person_key, "schedule_version": schedule.version},
    )


def quote_fees(
    jurisdiction: str,
    renewal_date: date,
    period_start: date,
    period_end: date,
    members: Sequence[MemberFacts],
    *,
    schedules: ScheduleBook | None = None,
) -> FeeQuote:
    """Quote the health-insurance fee of a household's residence renewal.

    The schedule is the one effective on ``renewal_date``. ``period_start``/``period_end`` are the
    permit's first and last day (both inclusive); the period counts in whole months, a started
    month counting whole, at most :data:`MAX_PERIOD_MONTHS`. Every member gets at least one line;
    a member no rule matches raises :class:`UnpricedMemberError`.
    """
    book = default_schedules() if schedules is None else schedules
    for name, value in (
        ("renewal_date", renewal_date),
        ("period_start", period_start),
        ("period_end", period_end),
    ):
        if type(value) is not date:
            raise FeeError(f"{name} must be a date, got {value!r}", reason="FEE_PERIOD_INVALID")
    schedule = book.for_date(jurisdiction, renewal_date)
    months = months_in_period(period_start, period_end)
    if months > MAX_PERIOD_MONTHS:
        raise FeeError(
            f"permit period {period_start}..{period_end} is {months} months; "
            f"at most {MAX_PERIOD_MONTHS} can be quoted",
            reason="FEE_PERIOD_INVALID",
        )
    if not members:
        raise MemberFactsError("a quote needs at least one member", reason="FEE_FACTS_INVALID")
    _check_facts(members, renewal_date, period_end)
    lines: list[FeeLine] = []
    for member in members:
        lines.extend(
            _price_member(
                schedule,
                member=member,
                renewal_date=renewal_date,
                period_start=period_start,
                period_end=period_end,
                months=months,
            )
        )
    return FeeQuote(
        jurisdiction=schedule.jurisdiction,
        schedule_version=schedule.version,
        renewal_date=renewal_date,
        period_start=period_start,
        period_end=period_end,
        lines=tuple(lines),
        total_minor=sum(line.amount_minor for line in lines),
        currency=schedule.currency,
    )
