"""Dated documentation on any day: examples/, the README's operator path and the `--help`
examples are written for 2026-27, and the server judges them against its own day (back-dating
limits, notice periods, "through" dates that must not be past). Each of them holds for at least a
year, up to a last day its test names; after that day the test runs a copy with every civil date
moved forward by the fewest whole years that make it hold again: the same days of the year and
the same gaps between them, so the same rules decide, on any day the suite runs (tests/README.md,
"Tests on any date").

A moved date keeps its day of the year; 29 February becomes 28 February in a common year."""

from __future__ import annotations

import datetime as dt
import re

ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")


def years_to_fit(today: dt.date, fits_through: dt.date) -> int:
    """The fewest whole years that move ``fits_through`` to ``today`` or later (0 while it is)."""
    years = 0
    while years_later(fits_through, years) < today:
        years += 1
    return years


def years_later(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a common year
        return day.replace(year=day.year + years, day=28)


def moved_text(text: str, years: int) -> str:
    """``text`` with every ISO date (YYYY-MM-DD) moved ``years`` later."""
    if years == 0:
        return text

    def move(match: re.Match[str]) -> str:
        year, month, day = (int(part) for part in match.groups())
        return years_later(dt.date(year, month, day), years).isoformat()

    return ISO_DATE.sub(move, text)


def moved_json(value: object, years: int) -> object:
    """A JSON document (as loaded) with every civil date (``{"year", "month", "day"}``, the
    protobuf JSON form of ``google.type.Date``) moved ``years`` later."""
    if years == 0:
        return value
    if isinstance(value, dict) and set(value) == {"year", "month", "day"}:
        day = years_later(dt.date(value["year"], value["month"], value["day"]), years)
        return {"year": day.year, "month": day.month, "day": day.day}
    if isinstance(value, dict):
        return {key: moved_json(item, years) for key, item in value.items()}
    if isinstance(value, list):
        return [moved_json(item, years) for item in value]
    return value
