"""Jinja2 over ``templates/<lang>/``: sandboxed, StrictUndefined, autoescaping for HTML.

Customer text is only ever passed in as data; the sandbox and autoescaping keep a subject like
``{{ 7*7 }}`` or ``<script>`` inert in every mail we render.

Plurals follow babel's (CLDR) plural rules of the template's language — the language of the folder the
template was loaded from, so a fallback template counts in its own words::

    Wir haben {{ attachments|plural("Anhang", "Anhänge") }} erhalten.   → "1 Anhang", "2 Anhänge"
    {{ n|plural("attachment", "attachments", number=False) }}          → "attachment" / "attachments"

The first form is CLDR's ``one``, the second ``other``; languages with more forms take them by keyword
(``few=…``, ``many=…``, ``two=…``, ``zero=…``). A list, tuple, set or dict counts its length. The number
is formatted for the language ("1.000 Anhänge", "1,000 attachments").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.numbers import format_decimal
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, Undefined, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from mailbridge.resources import templates_dir


class Templates:
    """Renders ``<lang>/<name>`` and falls back to ``fallback_language`` when a translation is missing."""

    def __init__(self, root: Path | None = None, fallback_language: str = "en"):
        self.root = Path(root) if root else templates_dir()
        self.fallback_language = fallback_language
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.root)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

        @pass_context
        def plural_filter(context: Context, n, one: str, other: str, *, number: bool = True, **forms: str) -> str:
            if isinstance(n, Undefined):
                n._fail_with_undefined_error()  # a missing count is an error, as everywhere (StrictUndefined)
            return plural(self.language_of(context.name), n, one, other, number=number, **forms)

        self.env.filters["plural"] = plural_filter

    def language_of(self, template_name: str | None) -> str:
        """A template's language: the first folder of its name ("de/ack.txt.j2" → "de")."""
        if template_name and "/" in template_name:
            return template_name.split("/", 1)[0]
        return self.fallback_language

    def render(self, language: str, name: str, /, **context) -> str:
        try:
            template = self.env.get_template(f"{language}/{name}")
        except TemplateNotFound:
            template = self.env.get_template(f"{self.fallback_language}/{name}")
        return template.render(**context)

    def has(self, language: str, name: str) -> bool:
        return (self.root / language / name).is_file()


PLURAL_FORMS = ("zero", "one", "two", "few", "many", "other")


@functools.lru_cache(maxsize=1024)
def _plural_form(language: str, n: int) -> str:
    """babel's plural category of ``n`` in ``language`` ("one", "other", …)."""
    return _locale(language).plural_form(n)


@functools.lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    """babel's locale of ``language`` (parsed once: it is on every acknowledgement's path)."""
    try:
        return Locale.parse(language.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


def plural(language: str, n, one: str, other: str, *, number: bool = True, **forms: str) -> str:
    """``n`` with the word form babel's plural rules of ``language`` choose: ``plural("de", 2, "Anhang",
    "Anhänge")`` → "2 Anhänge". Forms other than ``one`` and ``other`` come by keyword; a missing one
    falls back to ``other``. ``number=False``: the word alone.

    Raises:
        TypeError: ``n`` is not a whole number (or a list, tuple, set or dict), or an unknown form.
    """
    unknown = set(forms) - set(PLURAL_FORMS)
    if unknown:
        raise TypeError(f"plural: unknown form {sorted(unknown)[0]!r} (use {', '.join(PLURAL_FORMS)})")
    if isinstance(n, (list, tuple, set, frozenset, Mapping)):
        n = len(n)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"plural: {n!r} is not a whole number")
    words = {**forms, "one": one, "other": other}
    word = words.get(_plural_form(language, n), other)
    if not number:
        return word
    # Below 1,000 every locale with our templates writes the number as Python does (no separators).
    shown = str(n) if 0 <= n < 1000 else format_decimal(n, locale=_locale(language))
    return f"{shown} {word}"
