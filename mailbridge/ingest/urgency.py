"""A customer asking for more urgency, in their own words (German and English, any word order).

``find_urgency(text, subject, levels)`` reads the customer's new text and the subject and answers
with an :class:`UrgencyRequest` or ``None``. Pure: no settings, no database; the caller passes only
what the customer wrote now (lines quoted with ``>`` are dropped here anyway).

How it reads a mail: the text is cut into sentences (``.!?;`` and blank lines; a short line ends one
too, so a signature line stands alone), each sentence into tokens, and every token is *normalised*
(lower case, ä→ae, ö→oe, ü→ue, ß→ss) and put into a word class by a regular expression over its
forms — that is the light stemming: ``erhoeh(en|e|t)``, ``eskalier(en|e|t)``, ``escalat(e|ed|ing)``.
A small grammar over the classes of one sentence then decides:

* **raise**: a raising verb and what it raises, in either order — "erhöhen Sie die Dringlichkeit",
  "Dringlichkeit bitte hochsetzen", "raise the priority", "bump it up";
* **set**: a setting verb, an urgency noun and a target — "Priorität hoch setzen", "set the severity
  to critical", "auf Stufe 1 setzen";
* **escalate**: a verb that is a request by itself — "bitte eskalieren", "can you escalate this",
  "hochstufen", "prioritize";
* **ask**: a request noun after a request word — "Bitte um Eskalation", "request an escalation";
* **higher**: a comparative and an urgency noun with a request word — "höhere Priorität bitte";
* **urgent** (not ``explicit``): a plea — "dringend", "eilt", "urgent", "ASAP", "Notfall".

Participles and third persons ("eskaliert", "escalated", "raised") count only next to a request word
("bitte", "please", "sollte", "can", "could" …): "we escalated internally" is a report, "can this be
escalated?" a request. A negation near the trigger, in the same clause, cancels it: "nicht
dringend", "keine Eile", "no rush", "not urgent", "bitte nicht eskalieren", "no need to escalate".
Nouns alone never count: "Dringlichkeitsstufe laut Vertrag", "Priority Support Team", "escalation
matrix attached".

The **requested level** is looked up in the sentence of the request (else the next sentence) among the
levels' words, labels (and their parts around "–" and parentheses) and keys after a level noun
("Stufe 1", "level 2", "Klasse A", "P1"), leftmost and longest first, so "nicht kritisch" is not
"kritisch". A level after "auf"/"to" is the target; one after "von"/"from" is where it comes from;
otherwise the most severe level named (the one listed first) wins, as in ``sla/policy.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Level", "LevelWords", "UrgencyRequest", "find_urgency", "fold"]


class LevelWords(Protocol):
    """What a severity level offers the detector; ``mailbridge.sla.policy.SeverityLevel`` fits."""

    @property
    def key(self) -> str: ...
    @property
    def label_de(self) -> str: ...
    @property
    def label_en(self) -> str: ...
    @property
    def words(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Level:
    """A plain :class:`LevelWords` (tests, callers without a scheme object)."""

    key: str
    label_de: str = ""
    label_en: str = ""
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class UrgencyRequest:
    # True: the customer asks to raise or escalate; False: only says it is urgent ("dringend", "ASAP").
    explicit: bool
    # The triggering passages as written, in order ("erhöhen Sie die Dringlichkeit", "urgent").
    phrases: tuple[str, ...]
    # The key of the level the customer asks for, when the request names one.
    level: str | None = None
    # The words that named it, as written ("äußerst kritisch", "Stufe 1").
    level_phrase: str | None = None


# --- normalising ------------------------------------------------------------------------------------

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "’": "'"})
_TOKEN_RE = re.compile(r"\w+(?:'\w+)?")


def fold(word: str) -> str:
    """Lower case with umlauts written out: "Äußerst" -> "aeusserst"."""
    return word.lower().translate(_FOLD)


def _stem(folded: str) -> str:
    """Light stemming for level phrases: one inflection ending off ("kritischen" -> "kritisch")."""
    for suffix in ("ern", "en", "er", "em", "es", "e", "s"):
        if folded.endswith(suffix) and len(folded) - len(suffix) >= 4:
            return folded[: -len(suffix)]
    return folded


@dataclass(frozen=True)
class _Tok:
    text: str  # folded
    start: int
    end: int


def _sentences(text: str) -> list[list[_Tok]]:
    """Sentences of tokens, positions in ``text``."""
    out: list[list[_Tok]] = []
    current: list[_Tok] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(">") or not stripped:
            if current:
                out.append(current)
                current = []
            pos += len(line)
            continue
        for m in re.finditer(r"\w+(?:'\w+)?|[.!?;,]+(?=\s|$)|[,:()\[\]|]", line):
            piece = m.group()
            if piece[0] in ".!?;":
                if current:
                    out.append(current)
                    current = []
                continue
            current.append(_Tok(fold(piece), pos + m.start(), pos + m.end()))
        # A short line (a greeting, a signature line, a list item) is a sentence of its own; a long
        # one was probably wrapped.
        if len(stripped) < 40 and current:
            out.append(current)
            current = []
        pos += len(line)
    if current:
        out.append(current)
    return out


# --- word classes (regular expressions over folded tokens) -------------------------------------------


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("(?:" + "|".join(alternatives) + ")")


_COMMA = _rx(r"[,:()\[\]|]")
_NEG = _rx(
    r"nicht|kein|keine[nmrs]?|nie|niemals|ohne|not|no|never|without|nor|none",
    r"\w+n't|dont|doesnt|didnt|isnt|arent|wasnt|wont|cant|shouldnt|neednt",
)
# Words that start a new clause: a negation does not reach over them.
_BREAK = _rx(
    r"da|weil|denn|aber|sondern|jedoch|obwohl|wenn|falls|und|dass|because|since|as|but|although|though|if|when",
    r"while|and|that",
)
_MARKER = _rx(
    r"bitte|bitten|bitt|please|pls|plz|kindly|request\w*|ask|asking|beantrag\w*|erbeten|ersuche\w*",
    r"sollte|sollten|soll|should|muss|muessen|must|need|needs|brauche|brauchen|benoetige\w*",
    r"kann|koennen|koennte|koennten|koenntet|can|could|would|wuerde|wuerden|moechte|moechten|want|wish|wuensch\w*",
)
_URG_NOUN = _rx(
    r"(?:ticket|case|fall|anfrage|incident|issue)?"
    r"(?:dringlichkeit|prioritaet(?:en)?|prio|prios|priority|priorities|urgency|severity|schweregrad|sev)"
    r"(?:s?(?:stufe|stufen|level|grad|grades|klasse|einstufung))?",
    r"eskalationsstufe[n]?|fehlerklasse[n]?|ticketklasse[n]?|prioritaetsstufe[n]?",
)
# Requested as nouns: "Bitte um Eskalation", "request an escalation".
_REQ_NOUN = _rx(
    r"eskalation|escalation|hochstufung|hoeherstufung|hoeherpriorisierung|priorisierung|prioritization",
    r"prioritisation|(?:prioritaets|prio|dringlichkeits)(?:erhoehung|anhebung|hochstufung)|expedite",
)
_REQ_INTRO = _rx(r"um|request\w*|ask|asking|need|want|beantrag\w*|fordern|erbitte\w*|wuensch\w*|bitte|bitten|please")
# "escalation matrix", "Eskalationsprozess": a noun of a document, not a request.
_NOT_REQUESTED_AFTER = _rx(
    r"matrix|process|procedure|path|plan|list|contacts?|policy|prozess|pfad|matrix|liste|kontakte?|regel\w*",
    r"management|manager|team|stufe|level",
)
# Verbs that are a request by themselves.
_ESC_BASE = _rx(
    r"eskalieren|eskaliere|eskalier|escalate|hochstufen|hochstufe|hoeherstufen|hochzustufen|hoeherzustufen",
    r"hochpriorisieren|priorisieren|prioritize|prioritise|expedite|hochpriorisiere|priorisiere",
)
_ESC_PART = _rx(
    r"eskaliert|escalated|escalates|escalating|hochgestuft|hoehergestuft|priorisiert|hochpriorisiert",
    r"prioritized|prioritised|prioritizes|prioritises|expedited",
)
# Verbs that raise something: what they raise must be an urgency noun, or an "up" must follow.
_RAISE_BASE = _rx(
    r"erhoehen|erhoehe|erhoeh|anheben|anhebe|anzuheben|hochsetzen|hochsetze|hochzusetzen|heraufsetzen",
    r"heraufzusetzen|raufsetzen|hoehersetzen|hoeherzusetzen|steigern|raise|increase|bump|elevate|boost|upgrade",
    r"push|move|bring|kick",
)
_RAISE_PART = _rx(
    r"erhoeht|angehoben|hochgesetzt|heraufgesetzt|gesteigert|raised|increased|bumped|elevated|boosted",
    r"upgraded|raises|increases|pushed|moved",
)
# Verbs that set something: an urgency noun and a target (up, or a level after "auf"/"to").
_SET_BASE = _rx(
    r"setzen|setze|setz|stellen|stelle|aendern|aendere|einstufen|einstufe|umstufen|umzustufen|einzustufen",
    r"set|change|put|make|mark|classify|reclassify|switch|update|adjust|anpassen",
)
_SET_PART = _rx(r"gesetzt|geaendert|eingestuft|umgestuft|gestellt|changed|marked|classified|updated|adjusted")
# German separable verbs: "setzen Sie die Dringlichkeit hoch", "heben Sie die Priorität an".
_SEP_STEM = _rx(r"setz\w*|stuf\w*|stell\w*")
_HEB_STEM = _rx(r"heb\w*")
_UP = _rx(r"up|hoch|herauf|rauf|hoeher|higher|oben")
_HIGHER = _rx(
    r"hoeher[ens]?|hoehere[nmrs]?|higher|highest|hoechste[nmrs]?|top|max|maximale?[nmrs]?|mehr|more|hohe[nmrs]?",
    r"high|hoch|groessere?[nmrs]?",
)
_URGENT = _rx(
    r"dringend(?:e[nmrs]?|st\w*)?|dringlich(?:e[nmrs]?)?|eilig(?:e[nmrs]?)?|eilt|eile|urgent|urgently|asap",
    r"notfall|emergency|rush|superdringend",
)
_TO = _rx(r"auf|to|zu|into|as|als|in")
_FROM = _rx(r"von|from|derzeit|aktuell|currently|bisher")
_ARTICLE = _rx(r"die|der|den|das|dem|the|a|an|eine?[nmrs]?")
_LEVEL_NOUN = _rx(
    r"stufe|level|klasse|class|prio|priority|prioritaet|severity|sev|fehlerklasse|ticketklasse|eskalationsstufe",
    r"dringlichkeitsstufe|prioritaetsstufe|kategorie|category",
)
# "log level 3", "API level 2" are no severity levels.
_NOT_A_LEVEL_BEFORE = _rx(r"log|logging|debug|trace|api|patch|protokoll|zoom|volume|access|zugriffs\w*|raid")


def _is(rx: re.Pattern[str], tok: _Tok) -> bool:
    return rx.fullmatch(tok.text) is not None


# --- levels ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LevelPhrase:
    index: int  # position of the level in the scheme (0 = most severe)
    key: str
    stems: tuple[str, ...]


def _level_phrases(levels: Sequence[LevelWords]) -> list[_LevelPhrase]:
    out: list[_LevelPhrase] = []
    for i, lv in enumerate(levels):
        texts: list[str] = list(lv.words)
        for label in (lv.label_de, lv.label_en):
            if label:
                texts.append(label)
                texts.extend(p for p in re.split(r"\s[–—-]\s|[()]", label) if p.strip())
        seen: set[tuple[str, ...]] = set()
        for t in texts:
            stems = tuple(_stem(fold(w)) for w in _TOKEN_RE.findall(t))
            if stems and stems not in seen:
                seen.add(stems)
                out.append(_LevelPhrase(i, lv.key, stems))
    # Longest first: "nicht kritisch" before "kritisch".
    out.sort(key=lambda p: -len(p.stems))
    return out


@dataclass(frozen=True)
class _LevelHit:
    index: int
    key: str
    start: int  # token index
    end: int  # token index, exclusive


def _find_levels(sent: list[_Tok], phrases: list[_LevelPhrase], levels: Sequence[LevelWords]) -> list[_LevelHit]:
    stems = [_stem(t.text) for t in sent]
    keys = {fold(lv.key): i for i, lv in enumerate(levels)}
    hits: list[_LevelHit] = []
    i = 0
    while i < len(sent):
        hit = None
        for p in phrases:
            n = len(p.stems)
            if tuple(stems[i : i + n]) == p.stems:
                hit = _LevelHit(p.index, p.key, i, i + n)
                break
        if hit is None:
            hit = _key_reference(sent, i, keys, levels)
        if hit is not None:
            hits.append(hit)
            i = hit.end
        else:
            i += 1
    return hits


def _key_reference(sent: list[_Tok], i: int, keys: dict[str, int], levels: Sequence[LevelWords]) -> _LevelHit | None:
    """ "Stufe 1", "level 2", "Klasse A", "Prio 1", "P1", "Sev1"."""
    tok = sent[i]
    m = re.fullmatch(r"(?:p|prio|sev)(\w+)", tok.text)
    if m and m.group(1) in keys:
        idx = keys[m.group(1)]
        return _LevelHit(idx, levels[idx].key, i, i + 1)
    if _is(_LEVEL_NOUN, tok) and i + 1 < len(sent) and sent[i + 1].text in keys:
        if i > 0 and _is(_NOT_A_LEVEL_BEFORE, sent[i - 1]):
            return None
        idx = keys[sent[i + 1].text]
        return _LevelHit(idx, levels[idx].key, i, i + 2)
    return None


def _word_before(h: _LevelHit, sent: list[_Tok]) -> _Tok | None:
    """The word before a level, past articles ("auf die Stufe 1" -> "auf")."""
    j = h.start - 1
    while j >= 0 and _is(_ARTICLE, sent[j]):
        j -= 1
    return sent[j] if j >= 0 else None


def _targets(hits: list[_LevelHit], sent: list[_Tok]) -> list[_LevelHit]:
    return [h for h in hits if (b := _word_before(h, sent)) is not None and _is(_TO, b)]


_CONTRAST = _rx(r"aber|sondern|jedoch|obwohl|but|although|though|however")


def _pick_level(hits: list[_LevelHit], sent: list[_Tok], near: int | None = None) -> _LevelHit | None:
    """The level asked for among ``hits``; with ``near`` (the request's token), only the part of the
    sentence around it ("not critical, but please escalate": "not critical" is not asked for)."""
    if near is not None:
        lo = max((j for j in range(near) if _is(_CONTRAST, sent[j])), default=-1)
        hi = min((j for j in range(near, len(sent)) if _is(_CONTRAST, sent[j])), default=len(sent))
        hits = [h for h in hits if lo < h.start and h.end <= hi]
    if not hits:
        return None
    targets = _targets(hits, sent)
    if targets:
        return targets[-1]
    rest = [h for h in hits if (b := _word_before(h, sent)) is None or not _is(_FROM, b)]
    return min(rest or hits, key=lambda h: h.index)


# --- the grammar -------------------------------------------------------------------------------------


def _clause(sent: list[_Tok], i: int, before: int, after: int) -> range:
    """Token indices around ``i`` within its clause (commas and clause words end it)."""
    lo = i
    while lo > 0 and i - lo < before and not _is(_COMMA, sent[lo - 1]) and not _is(_BREAK, sent[lo - 1]):
        lo -= 1
    hi = i
    while hi + 1 < len(sent) and hi - i < after and not _is(_COMMA, sent[hi + 1]) and not _is(_BREAK, sent[hi + 1]):
        hi += 1
    return range(lo, hi + 1)


def _negated(sent: list[_Tok], i: int) -> bool:
    for j in _clause(sent, i, 5, 4):
        if j != i and _is(_NEG, sent[j]):
            # "no. 4711", "no 4711": a number sign, not a negation.
            if sent[j].text == "no" and j + 1 < len(sent) and sent[j + 1].text[:1].isdigit():
                continue
            return True
    return False


def _has(sent: list[_Tok], span: Iterable[int], rx: re.Pattern[str]) -> int | None:
    for j in span:
        if _is(rx, sent[j]):
            return j
    return None


@dataclass(frozen=True)
class _Match:
    explicit: bool
    start: int  # token index
    end: int  # token index, inclusive


def _match_sentence(sent: list[_Tok], target_level: bool) -> list[_Match]:
    out: list[_Match] = []
    n = len(sent)
    window = lambda i, w: _clause(sent, i, w, w)  # noqa: E731
    marker_anywhere = any(_is(_MARKER, t) for t in sent)

    def add(explicit: bool, *idx: int | None) -> None:
        js = [j for j in idx if j is not None]
        out.append(_Match(explicit, min(js), max(js)))

    for i, tok in enumerate(sent):
        # escalate: a request by itself (participles need a request word).
        if _is(_ESC_BASE, tok) or (_is(_ESC_PART, tok) and marker_anywhere):
            if not _negated(sent, i):
                add(True, i)
            continue
        # German separable verbs with "hoch": "stufen Sie das Ticket hoch".
        if _is(_SEP_STEM, tok) and (up := _has(sent, window(i, 6), _UP)) is not None and up > i:
            noun = _has(sent, window(i, 6), _URG_NOUN)
            if not _negated(sent, i) and (noun is not None or not _is(_SET_BASE, tok) or sent[up].text == "hoch"):
                add(True, i, up, noun)
                continue
        # raise: a raising verb and an urgency noun (or "up": "bump it up", "heben … an").
        is_raise = _is(_RAISE_BASE, tok) or (_is(_RAISE_PART, tok) and marker_anywhere)
        is_heb = _is(_HEB_STEM, tok) and _has(sent, range(i + 1, min(n, i + 10)), _rx("an")) is not None
        if is_raise or is_heb:
            noun = _has(sent, window(i, 6), _URG_NOUN)
            if noun is None:
                noun = _has(sent, window(i, 4), _REQ_NOUN)
            up = _has(sent, range(i + 1, min(n, i + 4)), _UP)
            if (noun is not None or (up is not None and not is_heb)) and not _negated(sent, i):
                add(True, i, noun, up)
                continue
        # set: a setting verb, an urgency noun or a level target, and a target.
        if _is(_SET_BASE, tok) or (_is(_SET_PART, tok) and marker_anywhere):
            span = window(i, 7)
            noun = _has(sent, span, _URG_NOUN)
            up = _has(sent, span, _UP)
            if ((up is not None and noun is not None) or target_level) and not _negated(sent, i):
                add(True, i, noun, up)
                continue
        # ask: "Bitte um Eskalation", "request an escalation", "Eskalation erbeten".
        if _is(_REQ_NOUN, tok):
            if i + 1 < n and _is(_NOT_REQUESTED_AFTER, sent[i + 1]):
                continue
            intro = _has(sent, range(max(0, i - 3), i), _REQ_INTRO)
            after = i + 1 < n and sent[i + 1].text in {"erbeten", "please", "bitte", "requested", "gewuenscht"}
            if (intro is not None or after) and not _negated(sent, i):
                add(True, intro if intro is not None else i, i)
                continue
        # higher: "höhere Priorität bitte", "higher priority", "top priority please".
        if _is(_URG_NOUN, tok) and marker_anywhere:
            adj = _has(sent, range(max(0, i - 2), min(n, i + 2)), _HIGHER)
            if adj is not None and not _negated(sent, adj) and not _negated(sent, i):
                add(True, adj, i)
                continue
        # urgent: a plea, not a request to raise.
        if _is(_URGENT, tok) and not _negated(sent, i):
            add(False, i)
    return out


def find_urgency(text: str, subject: str = "", levels: Sequence[LevelWords] = ()) -> UrgencyRequest | None:
    """The customer's request for more urgency in ``subject`` and ``text`` (their new text), or None.

    ``levels`` are the queue's severity levels, most severe first; the requested level is one of
    their keys. An explicit request (raise, escalate) wins over a plea ("dringend", "ASAP").
    """
    phrases = _level_phrases(levels)
    found: list[tuple[str, list[_Tok], _Match, list[_Tok] | None]] = []
    for source in (subject or "", text or ""):
        sents = _sentences(source)
        for k, sent in enumerate(sents):
            target = bool(_targets(_find_levels(sent, phrases, levels), sent))
            for m in _match_sentence(sent, target):
                found.append((source, sent, m, sents[k + 1] if k + 1 < len(sents) else None))
    if not found:
        return None
    explicit = any(m.explicit for _, _, m, _ in found)
    chosen = [f for f in found if f[2].explicit == explicit]
    texts = tuple(dict.fromkeys(src[sent[m.start].start : sent[m.end].end] for src, sent, m, _ in chosen))
    level = None
    for src, sent, m, nxt in chosen:
        hit = _pick_level(_find_levels(sent, phrases, levels), sent, m.start)
        where = sent
        if hit is None and nxt is not None:
            hit, where = _pick_level(_find_levels(nxt, phrases, levels), nxt), nxt
        if hit is not None:
            level = (hit, src[where[hit.start].start : where[hit.end - 1].end])
            break
    if level is None:
        return UrgencyRequest(explicit, texts)
    return UrgencyRequest(explicit, texts, level[0].key, level[1])
