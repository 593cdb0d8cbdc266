"""Human texts in Arabic, French and English, and dates in the Gregorian or Hijri calendar.

Verdicts and certificates carry a sentence for people. Its words come from gettext catalogues
of the ``ledger`` domain, managed with Babel (``ledger/i18n/locales/<language>/LC_MESSAGES/
ledger.po``, compiled to ``.mo`` by ``make install`` / ``make i18n``; docs/i18n.md). Its dates
are formatted by Babel (CLDR) in the reader's language, or in the Hijri calendar (Umm al-Qura,
through the maintained ``hijridate`` library, never our own arithmetic) when asked.

The reader's choice comes with each request as gRPC metadata ``accept-language`` (RFC 9110
syntax, BCP 47 tags): the first supported language by weight wins; the Unicode extension
``-u-ca-islamic`` or ``-u-ca-islamic-umalqura`` on the chosen tag asks for Hijri dates (e.g.
``ar-SA-u-ca-islamic-umalqura``). Without the metadata, texts are English with ISO 8601 dates,
exactly as before this module existed (:data:`DEFAULT`).
"""

from __future__ import annotations

import datetime as dt
import functools
import gettext
import re
from dataclasses import dataclass
from pathlib import Path

from babel import localedata
from babel.dates import format_date
from babel.support import Translations
from hijridate import Gregorian

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument
from ledger.i18n.messages import HIJRI_DATE, HIJRI_MONTHS, Message

__all__ = [
    "DEFAULT",
    "DOMAIN",
    "LOCALES_DIRECTORY",
    "METADATA_KEY",
    "SUPPORTED_LANGUAGES",
    "Presentation",
    "format_day",
    "presentation_from_accept_language",
    "render",
    "translations",
]

DOMAIN = "ledger"
LOCALES_DIRECTORY = Path(__file__).resolve().parent / "locales"
METADATA_KEY = "accept-language"
SUPPORTED_LANGUAGES = ("en", "fr", "ar")
"""English (the message ids' own language), French and Arabic."""
_CLDR_LOCALES = frozenset(localedata.locale_identifiers())
_HIJRI_CALENDARS = frozenset({"islamic", "islamic-umalqura"})
_TAG = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*", re.ASCII)
_WEIGHT = re.compile(r"q=(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", re.ASCII)


@dataclass(frozen=True)
class Presentation:
    """How a reader wants human texts: a language, a calendar, a date style."""

    language: str
    hijri: bool = False
    iso_dates: bool = False
    """ISO 8601 dates (the texts' form before localisation), rather than the language's own."""
    region: str = ""
    """The tag's region when CLDR knows the language there (``ar-MA``: Moroccan month names)."""

    @property
    def date_locale(self) -> str:
        """The Babel locale that formats Gregorian dates."""
        return f"{self.language}_{self.region}" if self.region else self.language

    @property
    def tag(self) -> str:
        """The BCP 47 tag of what was rendered (the ``content-language`` answered)."""
        return f"{self.language}-u-ca-islamic-umalqura" if self.hijri else self.language


DEFAULT = Presentation("en", hijri=False, iso_dates=True)
"""What a request without ``accept-language`` gets: English, ISO 8601 dates."""


def _refuse(description: str) -> InvalidArgument:
    return InvalidArgument(
        f"accept-language: {description}",
        reason="BAD_ACCEPT_LANGUAGE",
        field_violations=[FieldViolation(METADATA_KEY, description)],
    )


def _calendar(subtags: list[str]) -> str:
    """The ``ca`` key's value in the tag's Unicode (``-u-``) extension, or ""."""
    lowered = [subtag.lower() for subtag in subtags]
    if "u" not in lowered:
        return ""
    extension = lowered[lowered.index("u") + 1 :]
    if "ca" not in extension:
        return ""
    values = []
    for subtag in extension[extension.index("ca") + 1 :]:
        if len(subtag) <= 2:  # the next key (two characters) or another singleton
            break
        values.append(subtag)
    return "-".join(values)


def presentation_from_accept_language(header: str | None) -> Presentation:
    """The presentation an ``accept-language`` value asks for (RFC 9110 section 12.5.4).

    ``None`` or an empty value: :data:`DEFAULT`. No supported language in it: English with
    English dates. Refuses (INVALID_ARGUMENT, field ``accept-language``) a value longer than
    ``limits.accept_language_chars_max``, with more than ``limits.accept_language_ranges_max``
    ranges, or with a range that is not a language tag with an optional ``q`` weight.
    """
    if not header:
        return DEFAULT
    if len(header) > limits.accept_language_chars_max:
        raise _refuse(f"longer than {limits.accept_language_chars_max} characters")
    ranges = [part.strip() for part in header.split(",") if part.strip()]
    if len(ranges) > limits.accept_language_ranges_max:
        raise _refuse(f"more than {limits.accept_language_ranges_max} language ranges")
    weighted: list[tuple[float, int, str]] = []
    for position, item in enumerate(ranges):
        tag, _, parameters = (piece.strip() for piece in item.partition(";"))
        if _TAG.fullmatch(tag) is None:
            raise _refuse(f"{tag!r} is not a language tag")
        weight = 1.0
        if parameters:
            if _WEIGHT.fullmatch(parameters.replace(" ", "")) is None:
                raise _refuse(f"{parameters!r} is not a weight q=0..1")
            weight = float(parameters.replace(" ", "")[2:])
        if weight > 0:
            weighted.append((-weight, position, tag))
    for _, _, tag in sorted(weighted):
        subtags = tag.split("-")
        language = subtags[0].lower()
        if language == "*":
            return Presentation("en")
        if language in SUPPORTED_LANGUAGES:
            return Presentation(
                language,
                hijri=_calendar(subtags) in _HIJRI_CALENDARS,
                region=_region(language, subtags),
            )
    return Presentation("en")


def _region(language: str, subtags: list[str]) -> str:
    """The tag's region subtag (``MA`` of ``ar-MA``) when CLDR has that locale, else ""."""
    if len(subtags) < 2 or len(subtags[1]) != 2 or not subtags[1].isalpha():
        return ""
    region = subtags[1].upper()
    return region if f"{language}_{region}" in _CLDR_LOCALES else ""


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalogue of ``language``; RuntimeError when it was not compiled."""
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {language!r}: one of {SUPPORTED_LANGUAGES}")
    catalogue = Translations.load(str(LOCALES_DIRECTORY), [language], DOMAIN)
    if not isinstance(catalogue, Translations):  # Babel falls back silently: we do not
        raise RuntimeError(
            f"no compiled {language} catalogue in {LOCALES_DIRECTORY}: run `make i18n`"
        )
    return catalogue


def format_day(day: dt.date, presentation: Presentation) -> str:
    """``day`` as the presentation asks: ISO, the language's long date, or a Hijri date.

    Hijri dates come from hijridate's Umm al-Qura table, which covers 1924-08-01 to
    2077-11-16; a day outside it is written in the Gregorian calendar.
    """
    if presentation.iso_dates:
        return day.isoformat()
    if presentation.hijri:
        try:
            hijri = Gregorian(day.year, day.month, day.day).to_hijri()
        except OverflowError:
            pass
        else:
            catalogue = translations(presentation.language)
            template = catalogue.gettext(HIJRI_DATE)
            month = catalogue.gettext(HIJRI_MONTHS[hijri.month - 1])
            return template.format(day=hijri.day, month=month, year=hijri.year)
    return format_date(day, format="long", locale=presentation.date_locale)


def render(message: Message, presentation: Presentation) -> str:
    """``message`` translated into the presentation's language, its placeholders filled."""
    template = translations(presentation.language).gettext(message.message_id)
    values = {
        name: format_day(value, presentation) if isinstance(value, dt.date) else str(value)
        for name, value in message.arguments.items()
    }
    return template.format_map(values)
