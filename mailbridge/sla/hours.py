"""A calendar's support hours as a customer reads them, in German or English, and the days on which the
desk is closed before a promised first response.

``describe`` turns a ``BusinessCalendar`` into "Mo–Fr 09:00–17:00 Uhr (MEZ), an gesetzlichen Feiertagen in
Bayern geschlossen" / "Mon–Fri 9:00 am–5:00 pm (CET), closed on public holidays in Bavaria". Consecutive
weekdays with equal hours form one group ("Mo–Fr …; Sa …"), a split day lists its intervals
("08:00–12:00, 13:00–17:00 Uhr"), a 24/7 calendar is "rund um die Uhr" / "around the clock". Day
abbreviations and the time-zone abbreviation (valid at ``now``: MEZ/MESZ, CET/CEST) come from babel,
holiday names in the customer's language from the ``holidays`` package.

Pure: nothing here reads a clock, the configuration or the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import holidays as holidays_lib
from babel import Locale
from babel.dates import format_date, get_day_names, get_timezone_name

from mailbridge.business_calendar import MINUTES_PER_DAY, BusinessCalendar, Interval, as_utc

LANGUAGES = ("de", "en")
# How a closure day reads: "Mittwoch, 6. Januar 2027" / "Wednesday, 6 January 2027".
CLOSURE_FORMATS = {"de": "EEEE, d. MMMM y", "en": "EEEE, d MMMM y"}
# The holidays package's language for ours (its German entries are "de", its English "en_US").
_HOLIDAY_LANGUAGES = {"de": ("de",), "en": ("en_US", "en_GB", "en")}

_WORDS = {
    "de": {
        "around_the_clock": "rund um die Uhr",
        "all_day": "ganztägig",
        "no_hours": "keine regelmäßigen Servicezeiten",
        "closed_on_holidays": "an gesetzlichen Feiertagen in {region} geschlossen",
        "closed_day": "Betriebsruhe",
    },
    "en": {
        "around_the_clock": "around the clock",
        "all_day": "all day",
        "no_hours": "no regular support hours",
        "closed_on_holidays": "closed on public holidays in {region}",
        "closed_day": "office closed",
    },
}

# German Länder, in German and English. Other countries' subdivisions: the holidays package's own
# (native) names, else the country's name from babel and the code.
_DE_STATES = {
    "BB": ("Brandenburg", "Brandenburg"),
    "BE": ("Berlin", "Berlin"),
    "BW": ("Baden-Württemberg", "Baden-Württemberg"),
    "BY": ("Bayern", "Bavaria"),
    "HB": ("Bremen", "Bremen"),
    "HE": ("Hessen", "Hesse"),
    "HH": ("Hamburg", "Hamburg"),
    "MV": ("Mecklenburg-Vorpommern", "Mecklenburg-Western Pomerania"),
    "NI": ("Niedersachsen", "Lower Saxony"),
    "NW": ("Nordrhein-Westfalen", "North Rhine-Westphalia"),
    "RP": ("Rheinland-Pfalz", "Rhineland-Palatinate"),
    "SH": ("Schleswig-Holstein", "Schleswig-Holstein"),
    "SL": ("Saarland", "Saarland"),
    "SN": ("Sachsen", "Saxony"),
    "ST": ("Sachsen-Anhalt", "Saxony-Anhalt"),
    "TH": ("Thüringen", "Thuringia"),
}

_OFFSET_RE = re.compile(r"^(?:GMT|UTC)?[+-]\d")


@dataclass(frozen=True)
class Closure:
    """A day the desk would normally be open but is not (a public holiday, a configured closed day)."""

    day: date
    # "Heilige Drei Könige" / "Epiphany"; "Betriebsruhe" / "office closed" for a configured closed day.
    name: str
    # "Mittwoch, 6. Januar 2027 (Heilige Drei Könige)"
    text: str


@dataclass(frozen=True)
class SupportHours:
    """What the acknowledgement says about when the desk is open, in one language."""

    language: str
    # The whole sentence part: "Mo–Fr 09:00–17:00 Uhr (MEZ), an gesetzlichen Feiertagen in Bayern geschlossen".
    text: str
    # Its pieces, for templates that lay them out differently.
    hours: str  # "Mo–Fr 09:00–17:00 Uhr"
    zone: str | None  # "MEZ" (None around the clock)
    holidays: str | None  # "an gesetzlichen Feiertagen in Bayern geschlossen"
    # Closure days from ``now`` to ``until`` (both local dates included), in order.
    closures: tuple[Closure, ...] = ()


def language_of(language: str) -> str:
    """Ours for a customer's language: "de" for any German ("de_AT"), else English."""
    return "de" if language.lower().replace("-", "_").split("_")[0] == "de" else "en"


def describe(cal: BusinessCalendar, language: str, now: datetime, until: datetime | None = None) -> SupportHours:
    """``cal``'s support hours in ``language`` as valid at ``now``, and the closure days up to ``until``."""
    lang = language_of(language)
    words = _WORDS[lang]
    closures = closures_between(cal, lang, now, until) if until is not None else ()
    weekly = cal.weekly
    if cal.always_open:
        text = words["around_the_clock"]
        return SupportHours(lang, text, text, None, None, closures)
    whole = ((0, MINUTES_PER_DAY),)
    holidays = words["closed_on_holidays"].format(region=region_name(cal, lang)) if cal.country else None
    if all(day == whole for day in weekly):
        hours, zone = words["around_the_clock"], None
        text = hours
    elif not any(weekly):
        hours, zone = words["no_hours"], None
        text = hours
    else:
        hours = "; ".join(_group_text(lang, first, last, spans) for first, last, spans in _groups(weekly))
        zone = zone_abbreviation(cal, lang, now)
        text = f"{hours} ({zone})"
    if holidays:
        text = f"{text}, {holidays}"
    return SupportHours(lang, text, hours, zone, holidays, closures)


def closures_between(cal: BusinessCalendar, language: str, now: datetime, until: datetime) -> tuple[Closure, ...]:
    """The days from ``now``'s local date to ``until``'s (both included) on which the weekly hours would
    open the desk but a holiday or a configured closed day keeps it shut."""
    lang = language_of(language)
    if cal.always_open:
        return ()
    day = as_utc(now).astimezone(cal.tz).date()
    last = as_utc(until).astimezone(cal.tz).date()
    out = []
    while day <= last:
        if cal.weekly[day.weekday()] and not cal.hours_on(day):
            name = holiday_name(cal, day, lang) or _WORDS[lang]["closed_day"]
            text = f"{format_date(day, CLOSURE_FORMATS[lang], locale=lang)} ({name})"
            out.append(Closure(day, name, text))
        day += timedelta(days=1)
    return tuple(out)


def holiday_name(cal: BusinessCalendar, day: date, language: str) -> str | None:
    """The public holiday on ``day`` named in ``language`` (the package's default language when it has
    no translation), or None. Passing the language matters: without one the ``holidays`` package names
    holidays in the language of the process environment (English msgids under ``LANG=C``)."""
    if cal.holiday_name(day) is None or cal.country is None:
        return None
    return _localized(cal.country, cal.subdivision, day.year, language_of(language)).get(day) or cal.holiday_name(day)


@lru_cache(maxsize=256)
def _localized(country: str, subdivision: str | None, year: int, lang: str):
    supported = holidays_lib.list_localized_countries().get(country, [])
    choice = next((code for code in _HOLIDAY_LANGUAGES[lang] if code in supported), None)
    return holidays_lib.country_holidays(country, subdiv=subdivision, years=year, language=choice)


def region_name(cal: BusinessCalendar, language: str) -> str:
    """The name of the calendar's holiday region: "Bayern" / "Bavaria", or the country's name."""
    lang = language_of(language)
    country = cal.country or ""
    country_name = Locale.parse(lang).territories.get(country, country)
    sub = cal.subdivision
    if sub is None:
        return country_name
    if country == "DE" and sub in _DE_STATES:
        return _DE_STATES[sub][LANGUAGES.index(lang)]
    aliases = getattr(holidays_lib.country_holidays(country), "subdivisions_aliases", {}) or {}
    native = next((name for name, code in aliases.items() if code == sub and len(name) > len(sub)), None)
    return native or f"{country_name} ({sub})"


def zone_abbreviation(cal: BusinessCalendar, language: str, now: datetime) -> str:
    """The zone's abbreviation valid at ``now``: MEZ/MESZ in German, CET/CEST in English.

    babel's plain English has no abbreviations for Central European time ("+0100"); British English
    has (CET), so English falls back to it when it gives an abbreviation rather than a long name.
    """
    lang = language_of(language)
    local = as_utc(now).astimezone(cal.tz)
    name = get_timezone_name(local, "short", locale=lang)
    if lang == "en" and _OFFSET_RE.match(name):
        british = get_timezone_name(local, "short", locale="en_GB")
        if not _OFFSET_RE.match(british) and " " not in british:
            name = british
    return name


def _groups(weekly: tuple[tuple[Interval, ...], ...]) -> list[tuple[int, int, tuple[Interval, ...]]]:
    """Runs of consecutive open weekdays (Monday first) with equal hours: (first, last, intervals)."""
    out: list[tuple[int, int, tuple[Interval, ...]]] = []
    for i, spans in enumerate(weekly):
        if not spans:
            continue
        if out and out[-1][1] == i - 1 and out[-1][2] == spans:
            out[-1] = (out[-1][0], i, spans)
        else:
            out.append((i, i, spans))
    return out


def _group_text(lang: str, first: int, last: int, spans: tuple[Interval, ...]) -> str:
    names = get_day_names("abbreviated", "stand-alone", locale=lang)
    days = names[first] if first == last else f"{names[first]}–{names[last]}"
    if spans == ((0, MINUTES_PER_DAY),):
        return f"{days} {_WORDS[lang]['all_day']}"
    times = ", ".join(f"{_time(lang, s)}–{_time(lang, e)}" for s, e in spans)
    return f"{days} {times} Uhr" if lang == "de" else f"{days} {times}"


def _time(lang: str, minute: int) -> str:
    """German "09:00" / "24:00"; English "9:00 am", "12:30 pm", "midnight"."""
    h, m = divmod(minute, 60)
    if lang == "de":
        return f"{h:02d}:{m:02d}"
    if minute in (0, MINUTES_PER_DAY):
        return "midnight"
    if minute == 12 * 60:
        return "noon"
    return f"{(h - 1) % 12 + 1}:{m:02d} {'am' if h < 12 else 'pm'}"
