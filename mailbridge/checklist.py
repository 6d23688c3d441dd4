"""The information a queue needs in a request, and which of it a mail gives (issue 14, item 1).

A queue's checklist is a list of :class:`ChecklistItem` (``[[queues.checklist]]`` in the config, see
``docs/checklists.toml.example``). Each item has a German and an English label and detectors; it is
*given* when any detector finds it:

* ``fields``: labelled fields, regular expressions with a named group ``value``, any case
  ("Maschinennummer: 4711", "Machine no. 4711"). Tried on each line, on each cell pair of a table row
  ("Maschinennummer | 4711"), on a header cell with the cell below it (a table with a header row),
  and on a label line with the line below it ("Maschinennummer:" / "4711"). A value that says nothing
  ("-", "?", "n/a", "unbekannt", "folgt") does not count;
* ``keywords``: words or phrases, whole words, any case, ä = ae; an inflection ending is allowed
  ("Screenshot" finds "Screenshots"), a trailing ``*`` takes any ending. Not counted next to a
  negation or a promise ("kein Screenshot", "Logs folgen");
* ``values``: regular expressions of a value on its own (a version number, a host id), as written
  (``(?i)`` for any case);
* ``attachments``: shell patterns for an attachment's file name or content type ("*.log", "image/*");
* ``min_words``: the mail has at least this many words of its own (a description).

Fields, keywords and values are also tried on the subject and on attachments' file names
("SCN_12345678.pdf"). Quoted lines ("> …") count only as the label line of a label/value pair, so a
customer who answers below our quoted fill-in block is understood, while our own block is not taken
for an answer.

Calling something given missing annoys the customer, so detectors lean to "given": the caller passes
the whole text (forwarded parts included); the signature counts.

``evaluate(items, subject, text, attachments)`` is pure: plain text in, one :class:`ItemResult` per
item out.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ChecklistItem", "ChecklistLabel", "ItemResult", "evaluate", "missing"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChecklistLabel(_Model):
    de: Annotated[str, Field(min_length=1)]
    en: Annotated[str, Field(min_length=1)]

    def __call__(self, language: str) -> str:
        return self.de if language == "de" else self.en


class ChecklistItem(_Model):
    """One piece of information a request should contain, and how to recognise it."""

    key: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")]
    label: ChecklistLabel
    # Labelled fields: regexes with a named group "value", matched in any case.
    fields: list[str] = []
    # Words and phrases (whole words, any case, ä = ae, an inflection ending allowed, "*" = any ending).
    keywords: list[str] = []
    # Regexes of the value on its own, as written.
    values: list[str] = []
    # Shell patterns for an attachment's file name or content type.
    attachments: list[str] = []
    # Given when the mail has at least this many words of its own.
    min_words: Annotated[int, Field(gt=0)] | None = None

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            rx = _compile(pattern, re.IGNORECASE, f"fields[{i}]")
            if "value" not in rx.groupindex:
                raise ValueError(f"fields[{i}]: {pattern!r} has no group (?P<value>…)")
        return v

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            _compile(pattern, 0, f"values[{i}]")
        return v

    @field_validator("keywords", "attachments")
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        if any(not w.strip() for w in v):
            raise ValueError("an entry is empty")
        return v

    @model_validator(mode="after")
    def _detects(self) -> ChecklistItem:
        if not (self.fields or self.keywords or self.values or self.attachments or self.min_words):
            raise ValueError("an item needs a detector: fields, keywords, values, attachments or min_words")
        return self


@dataclass(frozen=True)
class ItemResult:
    key: str
    given: bool
    # What showed it, as written ("Maschinennummer: 4711", "error.log"); None when missing.
    evidence: str | None = None
    # Which detector: "field", "keyword", "value", "attachment", "words"; None when missing.
    detector: str | None = None


def _compile(pattern: str, flags: int, where: str) -> re.Pattern[str]:
    try:
        return _rx(pattern, flags)
    except re.error as e:
        raise ValueError(f"{where}: {pattern!r} is not a regular expression: {e}") from None


@functools.lru_cache(maxsize=1024)
def _rx(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# --- the text as lines and label/value candidates ----------------------------------------------------

_QUOTE_RE = re.compile(r"^\s*(?:>\s?)+")
# Table cells: a pipe, a tab, or three spaces and more.
_CELL_SPLIT = re.compile(r"\s*\|\s*|\t+|\s{3,}")
_TABLE_RULE = re.compile(r"^[\s|:+=-]*$")
# A line that is itself "label: value" (so it is no value of the line above).
_EMPHASIS = re.compile(r"\*\*|__")
_LABELLED = re.compile(r"^\s*[\w .()/#&-]{1,40}[:=]")
_EMPTY_VALUES = {
    "",
    "-",
    "--",
    "?",
    "??",
    "...",
    "…",
    "n/a",
    "na",
    "k.a",
    "ka",
    "tbd",
    "tba",
    "xxx",
    "unbekannt",
    "unknown",
    "folgt",
    "follows",
    "keine",
    "kein",
    "none",
    "nicht",
    "not",
    "offen",
    "open",
    "nachreichen",
    "später",
    "later",
    "siehe",
    "see",
    "leer",
    "empty",
}
_NEGATION = re.compile(
    r"(?<!\w)(?:nicht|kein\w*|no|not|never|without|ohne|n/a|fehlt|fehlen|missing|folgt|folgen|follow|follows|"
    r"später|spaeter|later|nachreichen|nachgereicht|nachliefern|noch\s+nicht|leider\s+nicht|can't|cannot|"
    r"don't|isn't|unbekannt|unknown)(?![\w-])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Line:
    text: str
    quoted: bool


def _lines(subject: str, text: str, attachments: Sequence[tuple[str, str]]) -> list[_Line]:
    out = [_Line(subject, False)] if subject.strip() else []
    for raw in (text or "").splitlines():
        m = _QUOTE_RE.match(raw)
        line = raw[m.end() :] if m else raw
        # "**Maschinennummer:** 4711": emphasis of a mail converted from HTML says nothing.
        out.append(_Line(_EMPHASIS.sub("", line), m is not None))
    for name, _ctype in attachments:
        if name:
            # "SCN_12345678.pdf" -> "SCN 12345678 .pdf": words and numbers of the name stand apart.
            stem, dot, ext = name.rpartition(".")
            spaced = re.sub(r"[_+]+", " ", stem or name)
            out.append(_Line(f"{spaced} .{ext}" if dot else spaced, False))
    return out


def _cells(line: str) -> list[str]:
    if "|" not in line and "\t" not in line and "   " not in line.strip():
        return []
    cells = [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]
    cells = [c for c in cells if c]
    return cells if len(cells) >= 2 else []


def _field_candidates(lines: list[_Line]) -> Iterable[str]:
    """Texts a field pattern is tried on: lines, cell pairs, header/value columns, label/value lines."""
    visible = [i for i, ln in enumerate(lines) if ln.text.strip() and not _TABLE_RULE.match(ln.text)]
    for k, i in enumerate(visible):
        ln = lines[i]
        nxt = lines[visible[k + 1]] if k + 1 < len(visible) else None
        if not ln.quoted:
            yield ln.text
        cells = _cells(ln.text)
        if cells and not ln.quoted:
            for a, b in itertools.pairwise(cells):
                yield f"{a.rstrip(':')}: {b}"
        if nxt is None or nxt.quoted:
            continue
        below = _cells(nxt.text)
        if cells and len(below) == len(cells):
            for a, b in zip(cells, below, strict=True):
                yield f"{a.rstrip(':')}: {b}"
        elif (
            len(ln.text.split()) <= 5
            and not cells
            and (ln.text.rstrip().endswith((":", "=")) or not re.search(r"[:=]", ln.text))
            and not _LABELLED.match(nxt.text)
        ):
            yield f"{ln.text.strip().rstrip(':=')}: {nxt.text.strip()}"


def _meaningful(value: str, rest: str) -> bool:
    """A value that says something: not a placeholder, and a word without a digit not followed by a
    negation ("Version: weiß ich leider nicht")."""
    v = value.strip().strip(".,;:()[]\"'").lower()
    if v in _EMPTY_VALUES or not re.search(r"\w", v) or _NEGATION.match(v):
        return False
    return any(ch.isdigit() for ch in v) or not _NEGATION.search(" ".join(rest.split()[:5]))


# --- keywords ----------------------------------------------------------------------------------------

_UMLAUT = {"ä": "(?:ä|ae|a)", "ö": "(?:ö|oe|o)", "ü": "(?:ü|ue|u)", "ß": "(?:ß|ss)"}
_ENDING = r"(?:e|en|er|es|n|s|nen|ern)?"


@functools.lru_cache(maxsize=1024)
def _keyword_rx(keyword: str) -> re.Pattern[str]:
    words = keyword.lower().split()
    parts = []
    for w in words:
        star = w.endswith("*")
        w = w.rstrip("*")
        body = "".join(_UMLAUT.get(ch, re.escape(ch)) for ch in w)
        parts.append(body + (r"\w*" if star else _ENDING))
    return re.compile(r"(?<!\w)" + r"[\s_/-]+".join(parts) + r"(?!\w)")


_CLAUSE_END = re.compile(r"[,;:.!?()]\s|[,;:!?()]|\s[–—-]\s|\s(?:aber|but|obwohl|although|weil|because|da|as)\s")


def _negated_near(text: str, start: int, end: int) -> bool:
    """A negation or a promise within a few words of the keyword, in its clause."""
    before = _CLAUSE_END.split(text[:start])[-1]
    after = _CLAUSE_END.split(text[end:])[0]
    before = " ".join(before.split()[-3:])
    after = " ".join(after.split()[:4])
    return bool(_NEGATION.search(before) or _NEGATION.search(after))


# --- evaluation --------------------------------------------------------------------------------------


def _paragraphs(lines: list[_Line]) -> list[str]:
    """Unquoted lines joined into paragraphs, so a phrase wrapped over two lines is found."""
    out: list[str] = []
    current: list[str] = []
    for ln in lines:
        if ln.quoted or not ln.text.strip():
            if current:
                out.append(" ".join(current))
                current = []
        else:
            current.append(ln.text.strip())
    if current:
        out.append(" ".join(current))
    return out


def _own_words(lines: list[_Line]) -> int:
    return sum(len(re.findall(r"\w{2,}", ln.text)) for ln in lines if not ln.quoted)


def _evidence(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= 80 else s[:79] + "…"


class _Mail:
    """One mail's lines and what every item's detectors read of them, each made once per mail (the
    field candidates, the paragraphs, the word count), not once per pattern or keyword."""

    def __init__(self, lines: list[_Line], body: list[_Line]):
        self.lines = lines
        self.body = body

    @functools.cached_property
    def candidates(self) -> list[str]:
        return list(_field_candidates(self.lines))

    @functools.cached_property
    def paragraphs(self) -> list[tuple[str, str]]:
        return [(para, para.lower()) for para in _paragraphs(self.lines)]

    @functools.cached_property
    def own_words(self) -> int:
        return _own_words(self.body)


def _check(item: ChecklistItem, mail: _Mail, attachments) -> ItemResult:
    lines = mail.lines
    for pattern in item.fields:
        rx = _rx(pattern, re.IGNORECASE)
        for cand in mail.candidates:
            for m in rx.finditer(cand):
                if _meaningful(m.group("value") or "", cand[m.start("value") :]):
                    return ItemResult(item.key, True, _evidence(m.group(0)), "field")
    for pattern in item.values:
        rx = _rx(pattern, 0)
        for ln in lines:
            if not ln.quoted and (m := rx.search(ln.text)):
                return ItemResult(item.key, True, _evidence(m.group(0)), "value")
    for name, ctype in attachments:
        for pattern in item.attachments:
            p = pattern.lower()
            if fnmatch.fnmatch((name or "").lower(), p) or fnmatch.fnmatch((ctype or "").lower(), p):
                return ItemResult(item.key, True, _evidence(name or ctype), "attachment")
    for kw in item.keywords:
        rx = _keyword_rx(kw)
        # A keyword that is itself negated ("nicht kritisch", "not urgent") is a statement of its own.
        check_negation = not _NEGATION.search(kw)
        for para, low in mail.paragraphs:
            for m in rx.finditer(low):
                if not check_negation or not _negated_near(low, m.start(), m.end()):
                    return ItemResult(item.key, True, _evidence(para[m.start() : m.end()]), "keyword")
    if item.min_words is not None:
        n = mail.own_words
        if n >= item.min_words:
            return ItemResult(item.key, True, f"{n} words", "words")
    return ItemResult(item.key, False)


def evaluate(
    items: Sequence[ChecklistItem],
    subject: str,
    text: str,
    attachments: Sequence[tuple[str, str]] = (),
) -> list[ItemResult]:
    """Which of ``items`` the mail gives: one result per item, in order.

    ``text`` is the mail's plain text as the customer sent it (forwarded parts included; ``>``-quoted
    lines only label an answer below them); ``attachments`` are (file name, content type) pairs.
    """
    lines = _lines(subject or "", text or "", attachments)
    body = _lines("", text or "", ())
    mail = _Mail(lines, body)
    return [_check(item, mail, attachments) for item in items]


def missing(results: Iterable[ItemResult]) -> list[str]:
    """The keys of the items not given."""
    return [r.key for r in results if not r.given]
