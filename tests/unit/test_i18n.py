"""ledger.i18n: every message id translated in every catalogue, the compiled catalogues up to
date, the accept-language rules, and dates in each language and the Hijri calendar."""

from __future__ import annotations

import datetime as dt
import string
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from ledger import i18n
from ledger.errors import InvalidArgument
from ledger.i18n import Presentation, format_day, presentation_from_accept_language, render
from ledger.i18n.messages import (
    MESSAGE_IDS,
    VERDICT_CANCELLED,
    VERDICT_GAP,
    Message,
)

LOCALES = i18n.LOCALES_DIRECTORY


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _catalogue(language: str) -> dict[str, str]:
    path = LOCALES / language / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with path.open("rb") as file:
        catalogue = read_po(file, locale=language)
    assert not catalogue.fuzzy, f"{path} is marked fuzzy"
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy entries in {path}: {fuzzy}"
    return {str(m.id): str(m.string) for m in catalogue if m.id}


@pytest.mark.parametrize("language", i18n.SUPPORTED_LANGUAGES)
def test_every_message_id_has_a_translation_with_the_same_placeholders(language: str) -> None:
    catalogue = _catalogue(language)
    assert set(catalogue) == set(MESSAGE_IDS), "catalogue and code disagree: run make i18n-extract"
    for message_id, translation in catalogue.items():
        assert translation.strip(), f"{language}: {message_id!r} is not translated"
        assert _placeholders(translation) == _placeholders(message_id), (language, message_id)


def test_the_template_lists_exactly_the_code_s_message_ids() -> None:
    with (LOCALES / f"{i18n.DOMAIN}.pot").open("rb") as file:
        template = read_po(file)
    assert {str(m.id) for m in template if m.id} == set(MESSAGE_IDS)


@pytest.mark.parametrize("language", i18n.SUPPORTED_LANGUAGES)
def test_the_compiled_catalogue_matches_its_source(language: str) -> None:
    compiled = i18n.translations(language)
    for message_id, translation in _catalogue(language).items():
        assert compiled.gettext(message_id) == translation, "stale .mo: run make i18n"


def test_a_missing_compiled_catalogue_is_an_error_not_a_silent_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    i18n.translations.cache_clear()
    monkeypatch.setattr(i18n, "LOCALES_DIRECTORY", tmp_path)
    try:
        with pytest.raises(RuntimeError, match="make i18n"):
            i18n.translations("fr")
    finally:
        i18n.translations.cache_clear()
    with pytest.raises(ValueError, match="unsupported"):
        i18n.translations("de")


# --- accept-language ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, i18n.DEFAULT),
        ("", i18n.DEFAULT),
        ("fr", Presentation("fr")),
        ("FR-ma", Presentation("fr", region="MA")),
        ("ar-MA", Presentation("ar", region="MA")),
        ("ar-XX", Presentation("ar")),  # no CLDR locale ar_XX: the language's own dates
        ("de, fr;q=0.4, ar;q=0.8", Presentation("ar")),
        ("fr;q=0.5, ar;q=0.5", Presentation("fr")),  # equal weights: the first listed
        ("ar;q=0, fr", Presentation("fr")),  # q=0: not acceptable
        ("de, ja", Presentation("en")),
        ("*", Presentation("en")),
        ("ar-SA-u-ca-islamic-umalqura", Presentation("ar", hijri=True, region="SA")),
        ("fr-u-ca-islamic", Presentation("fr", hijri=True)),
        ("ar-u-nu-latn-ca-islamic", Presentation("ar", hijri=True)),
        ("ar-u-ca-gregory", Presentation("ar")),
        ("en-u-ca-islamic-civil", Presentation("en")),  # not the Umm al-Qura calendar
    ],
)
def test_accept_language(header: str | None, expected: Presentation) -> None:
    assert presentation_from_accept_language(header) == expected


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("f" * 257, "longer than 256 characters"),
        (",".join(["fr"] * 17), "more than 16 language ranges"),
        ("fr_FR", "'fr_FR' is not a language tag"),
        ("fr;q=1.5", "'q=1.5' is not a weight q=0..1"),
        ("fr;charset=x", "'charset=x' is not a weight q=0..1"),
        ("françAIS", "'françAIS' is not a language tag"),
    ],
)
def test_a_bad_accept_language_is_refused(header: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        presentation_from_accept_language(header)
    [violation] = raised.value.details.field_violations
    assert (violation.field, violation.description) == ("accept-language", problem)
    assert raised.value.reason == "BAD_ACCEPT_LANGUAGE"


# --- dates and rendering -----------------------------------------------------------------------

# 1 Ramadan 1445 was Monday 11 March 2024 in Saudi Arabia's Umm al-Qura calendar.
RAMADAN_1445 = dt.date(2024, 3, 11)


def test_dates_in_each_language_and_in_the_hijri_calendar() -> None:
    day = dt.date(2026, 11, 22)
    assert format_day(day, i18n.DEFAULT) == "2026-11-22"
    assert format_day(day, Presentation("en")) == "November 22, 2026"
    assert format_day(day, Presentation("fr")) == "22 novembre 2026"
    assert format_day(day, Presentation("ar", region="MA")) == "22 نونبر 2026"
    assert format_day(RAMADAN_1445, Presentation("ar", hijri=True)) == "1 رمضان 1445 هـ"
    assert format_day(RAMADAN_1445, Presentation("en", hijri=True)) == "1 Ramadan 1445 AH"
    assert format_day(RAMADAN_1445, Presentation("fr", hijri=True)) == "1 Ramadan 1445 de l'hégire"


def test_a_day_outside_the_umm_al_qura_table_is_written_in_the_gregorian_calendar() -> None:
    assert format_day(dt.date(2080, 1, 1), Presentation("fr", hijri=True)) == "1 janvier 2080"
    assert format_day(dt.date(1900, 1, 1), Presentation("en", hijri=True)) == "January 1, 1900"


def test_render_fills_placeholders_in_the_language() -> None:
    gap = Message(VERDICT_GAP, {"start": dt.date(2026, 3, 1), "end": dt.date(2026, 3, 9)})
    assert render(gap, i18n.DEFAULT) == "not covered from 2026-03-01 until 2026-03-09"
    assert render(gap, Presentation("fr")) == "non couvert du 1 mars 2026 au 9 mars 2026"
    cancelled = Message(
        VERDICT_CANCELLED, {"date": RAMADAN_1445, "reason": "FINAL_EXIT", "policy": "P-1"}
    )
    assert render(cancelled, Presentation("ar", hijri=True)) == (
        "أُلغيت التغطية اعتبارًا من 1 رمضان 1445 هـ (FINAL_EXIT، الوثيقة 'P-1')"
    )
