"""The new part of a reply: what the sender wrote themselves, without quoted history or signature.

mail-parser-reply (``mailparser_reply``) splits a plain-text body at reply headers ("On … wrote:",
"Von: … Gesendet: …", "-----Original Message-----") and finds signatures; this module wraps it with
small, deterministic pre- and post-processing for the shapes it misses, each commented where it is
done: our own :data:`REPLY_MARKER` (a safety net that never lets an internal notification through),
"-----Ursprüngliche Nachricht-----" and forward separators, attribution lines wrapped over two
lines, ``>``-quoted blocks without a header and inline replies (the unquoted lines between quotes
are kept, the quotes dropped), mobile footers such as "Von meinem iPhone gesendet", closings the
library does not know ("Mit freundlichen Grüssen", "Freundliche Grüße") or mistakes for one ("Thanks,
that fixed it."), hyphen lists it takes for signatures, and sentences it deletes as "disclaimers".
The library normalises every line (strips indentation); we only use it to decide *where* the new
text ends and return the original lines, so inner formatting survives. The input is capped and
normalised so that the library's backtracking regexes stay fast on hostile mail.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailparser_reply import EmailReplyParser
from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage

from mailbridge.domain import REPLY_MARKER  # noqa: F401 - defined there (outbound writes it); re-exported

logger = logging.getLogger(__name__)


# The analysed text is capped: a reply's new part is at the top, and every regex below (and the
# library's) then has a bounded input.
MAX_CHARS = 200_000
# Lines handed to the library are cut to this length. Its header regexes have adjacent lazy ``.+?``
# (quadratic per line) and nothing it detects (attribution, "Von:", closing) is that long.
_LIB_LINE_CHARS = 256

# The marker's core phrases; the words may be separated by any white space and quote characters,
# because the agent's client may have quoted ("> ") or re-wrapped the line. One character class
# between literal words: no nested quantifiers.
_MARKER_PHRASES = ("Bitte oberhalb dieser Zeile antworten", "Please type your reply above this line")
_MARKER_RE = re.compile(
    "|".join(r"[\s>]+".join(re.escape(w) for w in phrase.split()) for phrase in _MARKER_PHRASES),
    re.IGNORECASE,
)

# Separator lines after which only the original or a forwarded mail follows. The library knows only
# "-----Original Message-----"; Outlook German, Thunderbird and Gmail/Apple forwards it leaves in the
# new text. Matched against a whole unquoted line, bold markers ("*", "_") from HTML-to-text allowed.
_SEPARATOR_RE = re.compile(
    r"[*_ ]{0,4}(?:"
    r"-{2,}[ \t]{0,3}(?:Ursprüngliche Nachricht|Original[ -]?Nachricht|Originalnachricht|Original Message"
    r"|Forwarded message|Weitergeleitete Nachricht|Message d'origine|Message transféré|Mensaje original"
    r"|Messaggio originale|Oorspronkelijk bericht|Originalmeddelelse|Ursprungligt meddelande|Mensagem original"
    r"|Wiadomość oryginalna|Исходное сообщение)[ \t]{0,3}-{2,}"
    r"|(?:Anfang der weitergeleiteten Nachricht|Beginn der weitergeleiteten Nachricht|Begin forwarded message)"
    r"[ \t]{0,3}:"
    r")[*_ ]{0,4}",
    re.IGNORECASE,
)

# Footers that mobile and webmail clients put under the new text. The library knows only
# "Sent from my …", "Get Outlook for …" and "Gesendet von …" (with at most a few words after it);
# "Von meinem iPhone gesendet", K-9's sentence and "Gesendet mit der GMX Mail App" it keeps.
# Matched against a whole unquoted line; every quantifier is bounded. "Sent from my laptop, the log
# is attached." is a sentence, not a footer: no comma, semicolon, "!" or "?" after "my".
_MOBILE_FOOTER_RE = re.compile(
    r"[*_( ]{0,3}(?:"
    r"(?:Sent|Gesendet|Envoyé|Enviado|Inviato|Verzonden|Skickat|Sendt) (?:from|von|depuis|desde|da|vanaf|fra|från)"
    r" (?:my|meinem|mon|mi|il mio|mijn|min) [^,;!?]{1,60}"
    r"|Von meinem [^,;!?]{1,60} gesendet\.?"
    r"|Diese Nachricht wurde von meinem [^,;!?]{1,60} gesendet\.?"
    r"|(?:Sent|Gesendet|Verzonden) (?:from|von|mit|with|via|met) (?:der |the )?"
    r"(?:Outlook|Mail|Yahoo|Mailbox|Airmail|Sparrow|BlackBerry|Samsung|Huawei|GMX|WEB\.DE|Proton|Spark|iPad|iPhone"
    r"|Android|Windows|mobile|Gmail|AOL|Telekom|1&1|Nine|Blue ?Mail|K-9|TypeApp|Edison|Newton|Superhuman)\b.{0,100}"
    r"|(?:Get|Holen Sie sich) \[?Outlook (?:for|für) (?:iOS|Android)\b.{0,100}"
    r"|\[?Outlook f(?:ü|ue)r (?:iOS|Android)\b.{0,100}(?:herunterladen|beziehen)"
    r")",
    re.IGNORECASE,
)

# GroupWise puts ">>> Name <address> 20.11.2026 10:15 >>>" above the unquoted original.
_GROUPWISE_RE = re.compile(r">>>[ \t].{0,200}\d.{0,60}[ \t]>>>")

# Reply header blocks of Outlook and webmailers in the locales our customers' colleagues use. The
# library knows only the languages it is given (de, en), so a Swedish "Från: / Skickat: / Till: /
# Ämne:" block stays in the new text. Three or more consecutive "Label:" lines, one of them a
# sender label, are a header block in any locale.
_FROM_LABELS = (
    "From|Von|De|Da|Van|Från|Fra|Frá|Od|Від|От|Lähettäjä|Feladó|Kimden|Αποστολέας|发件人|寄件者|差出人|보낸 사람"
)
_OTHER_LABELS = (
    "Sent|Date|To|Cc|Bcc|Subject|Reply-To|Gesendet|Datum|An|Kopie|Betreff|Antwort an|Envoyé(?: le)?|À|Objet|Sujet"
    "|Copie à|Message du|Inviato|Data|A"
    "|Oggetto|Enviado|Fecha|Para|Asunto|Verzonden|Aan|Onderwerp|Skickat|Till|Kopia|Ämne|Sendt|Til|Emne|Dato|Wysłano"
    "|Do|Temat|DW|Odesláno|Komu|Předmět|Отправлено|Кому|Копия|Тема|Надіслано|发送时间|收件人|抄送|主题"
    "|日時|送信日時|宛先|件名|Lähetetty|Vastaanottaja|Aihe|Elküldve|Címzett|Tárgy|Gönderildi|Kime|Konu"
)
_LABEL_RE = re.compile(rf"[*_ \t]{{0,3}}(?:({_FROM_LABELS})|(?:{_OTHER_LABELS}))[*_ \t]{{0,3}}[:：]", re.IGNORECASE)

# Closing formulas the library lacks (it has "Mit freundlichen Grüßen" only with "ß", "Viele/Liebe/
# Beste Grüße" but not "Freundliche/Herzliche Grüße", "Regards," only with a comma).
_EXTRA_CLOSINGS = {
    "de": [
        r"Mit freundliche[nm] Gr(?:ü|ue)(?:ß|ss)(?:en)?",
        r"Mit (?:besten|herzlichen|lieben|kollegialen) Gr(?:ü|ue)(?:ß|ss)en",
        r"(?:Freundliche|Herzliche|Schöne|Sonnige|Beste|Liebe|Viele) Gr(?:ü|ue)(?:ß|ss)e",
        r"MfG",
        r"LG",
        r"VG",
    ],
    "en": [
        r"Regards",
        r"Best wishes",
        r"Warm regards",
        r"Kindest regards",
        r"Many thanks,",
        r"(?:Yours )?sincerely",
        r"Cheers",
    ],
}

# Attribution lines ("On … wrote:", "Am … schrieb …:", "X schrieb am …:", Gmail's "2016-10-24 15:36
# GMT+02:00 X <x@y>:", "Zitat von X:") directly above a ``>`` block; checked on at most three joined
# lines of at most 400 characters, every quantifier bounded.
_ATTRIBUTION_END_RE = re.compile(
    r"(?:wrote|writes|schrieb|schreibt|geschrieben|a écrit|escribió|escreveu|ha scritto|scrisse|schreef|skrev"
    r"|kirjoitti|napsal|napisał|написал|написала|пише|写道)"
    r".{0,160}[:：]\s*$"
    r"|^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\s.{0,200}:\s*$"
    # Gmail in locales without a verb: "ср, 30 апр. 2025 г. в 15:19, John Doe <doe@example.com>:"
    r"|^.{0,120}\d{1,2}:\d{2}.{0,120}<[^<>\s]{1,100}@[^<>\s]{1,100}>[:：]\s*$"
    r"|^(?:Quoting|Zitat von|Zitiere)\b.{0,200}:\s*$",
    re.IGNORECASE,
)
# How a multi-line attribution starts: a lead word and a date or time, or a date and a time.
_ATTRIBUTION_START_RE = re.compile(
    r"(?:On|Am|Le|El|Il|Op|Den|Dne|Em|W dniu|Dnia)\s.{0,200}?\d|\d{1,4}[-/. ].{0,80}?\d{1,2}:\d{2}",
    re.IGNORECASE,
)
# Gmail wraps a long attribution inside the address, and the rest then looks like a quote:
# 'Am 21.04.2016 17:48 schrieb "X" <x@example.org' / '>:'.
_OPEN_ADDRESS_RE = re.compile(r"<[^<>\s]{0,200}$")
_ADDRESS_TAIL_RE = re.compile(r"\s{0,8}>[^>]{0,60}[:：]\s{0,8}")
# Header fields of a reply header block. The library needs two of its fields in a row, so a block
# like "From: …" / "Reply-To: …" / "Date: …" is cut only at "Date:", and "From:" stays behind.
_HEADER_FIELD_RE = re.compile(
    r"[* ]{0,3}(?:From|Reply-To|Sent|Date|To|Cc|Subject|Von|Antwort an|Gesendet|Datum|An|Betreff)[ *]{0,3}:.{0,400}",
    re.IGNORECASE,
)

# Left at the end once what followed is cut: a rule line above an Outlook header ("____…", which
# the library keeps when no blank line precedes it) or a signature delimiter whose signature was a
# mobile footer ("--" needs a following line for the library to see it).
_TRAILING_RULE_RE = re.compile(r"--|[-_=*~]{3,}")

# Put in front of a line the library would wrongly take for a signature (not white space, so its
# line stripping keeps it; a private-use character, so no regex of the library matches it).
_SHIELD = "\ue000"


@functools.lru_cache(maxsize=16)
def _reply_parser(languages: tuple[str, ...]) -> EmailReplyParser:
    # EmailReplyParser validates the language list (unknown codes dropped, "en" as fallback).
    return EmailReplyParser(languages=list(languages))


@functools.lru_cache(maxsize=16)
def _closing_res(languages: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    """(quick filter, one pattern per formula) for the closings of these languages.

    The library's own list (so a line it would cut is judged here first) plus ours. One pattern per
    formula because an alternation returns the first alternative that matches, not the longest.
    """
    formulas: list[str] = []
    for lang in (*languages, "en"):
        lib = MAIL_LANGUAGES.get(lang, {}).get("signatures", [])
        formulas += [lib] if isinstance(lib, str) else list(lib)
        formulas += _EXTRA_CLOSINGS.get(lang, [])
    formulas = list(dict.fromkeys(f for f in formulas if f))
    each = tuple(re.compile(f, re.IGNORECASE) for f in formulas)
    return re.compile("|".join(f"(?:{f})" for f in formulas), re.IGNORECASE), each


def _closing_kind(line: str, languages: tuple[str, ...]) -> str | None:
    """Whether the line is a closing formula, maybe with a name ("closing"), only starts like one
    ("sentence": "Thanks, that fixed it."), or neither (None)."""
    s = line.strip()
    if len(s) > 120:
        return None
    quick, each = _closing_res(languages)
    if not quick.match(s):
        return None
    end = max((m.end() for p in each if (m := p.match(s))), default=0)
    rest = s[end:]
    if rest and (rest[0].isalnum() or rest[0] in "-_/@."):
        return "sentence"  # "Grußkarte", "LG-Monitor": another word that starts the same
    words = rest.strip(" \t,.;:!-–").split()
    if not words:
        return "closing"
    if len(words) >= 4:
        return "sentence"
    if rest.rstrip()[-1:] in ".!?" and any(w[:1].islower() for w in words):
        return "sentence"  # "Thanks, it works!"; a name ("Thanks, Max.") stays a closing
    return "closing"


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _cut_at_marker(text: str) -> str:
    m = _MARKER_RE.search(text)
    if m is None:
        return text
    return text[: text.rfind("\n", 0, m.start()) + 1]


def _attribution_span(lines: list[str], before: int) -> range:
    """The lines of an attribution that ends right above index ``before`` (blank lines skipped)."""
    i = before - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    best = 0
    for k in (1, 2, 3):
        seg = lines[i - k + 1 : i + 1] if i - k + 1 >= 0 else []
        if len(seg) < k or any(not s.strip() or _is_quoted(s) for s in seg):
            break
        joined = " ".join(s.strip() for s in seg)
        if len(joined) > 400:
            break
        if not _ATTRIBUTION_END_RE.search(joined):
            continue
        best = best or k
        if _ATTRIBUTION_START_RE.match(joined):
            # Gmail wraps "On …, Support <\nsupport@vendor.example> wrote:": take both lines.
            best = k
            break
    return range(i - best + 1, i + 1) if best else range(0)


def _join_wrapped_addresses(lines: list[str]) -> list[str]:
    """Join 'schrieb "X" <x@example.org' and a following '>:' that only looks like a quote."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if (
            i + 1 < len(lines)
            and _ADDRESS_TAIL_RE.fullmatch(lines[i + 1])
            and not _is_quoted(line)
            and len(line) < 400
            and _OPEN_ADDRESS_RE.search(line)
            and _ATTRIBUTION_END_RE.search(joined := line.rstrip() + lines[i + 1].strip())
        ):
            out.append(joined)
            i += 2
            continue
        out.append(line)
        i += 1
    return out


def _cut_at_attribution(lines: list[str]) -> list[str]:
    """Cut at an attribution that no ``>`` quote follows ("Some One <x@y> wrote:" above the quoted
    mail, unquoted). The library knows only "On … wrote:" and "Am … schrieb …:" on one or two lines.
    Stricter than above a quote: the attribution must name an address or start with a date.
    """
    for i, line in enumerate(lines):
        s = line.rstrip()
        if not s.endswith((":", "：")) or _is_quoted(line):
            continue
        span = _attribution_span(lines, i + 1)
        if not span:
            continue
        joined = " ".join(lines[j].strip() for j in span)
        if "@" in joined or _ATTRIBUTION_START_RE.match(joined):
            return lines[: span.start]
    return lines


def _cut_at_header_block(lines: list[str]) -> list[str]:
    """Cut at a reply header block in any common locale (see _LABEL_RE)."""
    run_start, run_len, has_from = 0, 0, False
    for i, line in enumerate(lines):
        m = _LABEL_RE.match(line) if line.strip() and not _is_quoted(line) else None
        if m is None:
            run_len, has_from = 0, False
            continue
        if run_len == 0:
            run_start = i
        run_len += 1
        has_from = has_from or m.group(1) is not None
        if run_len >= 3 and has_from:
            return lines[:run_start]
    return lines


def _drop_quotes(lines: list[str]) -> list[str]:
    """Remove ``>``-quoted lines and the attribution line(s) above each quoted block.

    The library only cuts at a reply header, so a quote without one stays in the new text, and in an
    inline or bottom-posted reply the answers below the first header are lost. We keep every
    unquoted line (the sender's own words, also between quotes) and drop the quotes; where a quote
    was, one blank line separates the kept parts.
    """
    if not any(_is_quoted(line) for line in lines):
        return lines
    drop = [False] * len(lines)
    for i, line in enumerate(lines):
        if not _is_quoted(line):
            continue
        drop[i] = True
        if i == 0 or not _is_quoted(lines[i - 1]):
            for j in _attribution_span(lines, i):
                drop[j] = True
    out: list[str] = []
    gap = False
    for line, dropped in zip(lines, drop, strict=True):
        if dropped:
            gap = True
        elif not line.strip():
            if not gap:
                out.append(line)
        else:
            if gap:
                while out and not out[-1].strip():
                    out.pop()
                if out:
                    out.append("")
                gap = False
            out.append(line)
    return out


def _cut_at(lines: list[str], predicate, keep_first: bool = False, unquoted_only: bool = True) -> list[str]:
    """The lines above the first (unquoted) line that satisfies ``predicate``.

    With ``keep_first`` the first non-blank line is never cut: a mail that is only "Thanks!" or
    "Viele Grüße" is content, not a closing.
    """
    seen_text = False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if (seen_text or not keep_first) and not (unquoted_only and _is_quoted(line)) and predicate(line.strip()):
            return lines[:i]
        seen_text = True
    return lines


def _trim(lines: list[str]) -> list[str]:
    """Trailing white space and rule lines off, runs of blank lines (html2text makes many) to one."""
    lines = [line.rstrip() for line in lines]
    lines = [line for i, line in enumerate(lines) if line or i == 0 or lines[i - 1]]
    while lines and (not lines[-1] or _TRAILING_RULE_RE.fullmatch(lines[-1].strip())):
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _library_cut(lines: list[str], languages: tuple[str, ...], keep_signature: bool = False) -> list[str]:
    """Let mail-parser-reply find where the new text ends; return the original lines up to there."""
    lib_lines: list[str] = []
    origin: list[int] = []  # lib_lines[k] comes from lines[origin[k]]
    for i, line in enumerate(lines):
        # Runs of blank lines and of white space make the library's "\s*^" quadratic (20,000 blank
        # lines take 40 s): collapse them. Lines the library would cut at as a signature although
        # they are a sentence get the shield.
        lib = " ".join(line.split())[:_LIB_LINE_CHARS]
        if not lib and lib_lines and not lib_lines[-1]:
            continue
        if lib and _closing_kind(lib, languages) == "sentence":
            lib = _SHIELD + lib
        lib_lines.append(lib)
        origin.append(i)

    parser = _reply_parser(languages)
    # EmailMessage directly instead of parser.read(): only it takes keep_hyphen_lists, without which
    # every "- item" line starts a "signature". A copy of the language list, because EmailMessage
    # appends "en" to the list it is given (the parser's own list otherwise).
    message = EmailMessage(text="\n".join(lib_lines), languages=list(parser.languages), keep_hyphen_lists=True)
    message.read()
    if not message.replies:
        return []
    first = message.replies[0]
    if first.headers:
        # The text starts with a reply header: the library skips the empty part before it and
        # calls the quoted mail the "latest reply". There is no new text.
        return []
    # content minus signature, which is what EmailReply.body is minus its disclaimer removal: that
    # deletes any sentence starting "Hinweis:", "Achtung:" or "Warning:" that mentions "mail",
    # anywhere in the text ("Hinweis: die Mail kam zweimal an.").
    kept, sig = first.content, first.signatures
    if sig and not keep_signature:
        kept = kept[: len(kept) - len(sig)] if kept.endswith(sig) else kept.replace(sig, "")
    kept_lines = [k for k in kept.strip().split("\n") if k.strip()]
    if not kept_lines:
        return []

    # kept is a prefix of the library's normalised text (its lines stripped, a few separator lines
    # removed), so its lines are a subsequence of lib_lines: find the last one.
    where: dict[str, list[int]] = {}
    for k, lib in enumerate(lib_lines):
        where.setdefault(lib, []).append(k)
    pos, last = 0, -1
    for line in kept_lines:
        idx = where.get(line, [])
        j = bisect.bisect_left(idx, pos)
        if j == len(idx):
            continue  # a line the library changed (e.g. a separator it split off): skip it
        last, pos = idx[j], idx[j] + 1
    if last < 0:
        return []
    lines = lines[: origin[last] + 1]
    if len(message.replies) > 1:
        # Cut at a reply header: header fields the library did not count as part of it go too.
        while lines and (not lines[-1].strip() or _HEADER_FIELD_RE.fullmatch(lines[-1].strip())):
            lines.pop()
    return lines


def extract_new_text(text: str, languages: Sequence[str] = ("de", "en"), *, keep_signature: bool = False) -> str:
    """The new (unquoted) part of a mail's plain text, without quoted history and signature.

    Returns "" when there is no new text (a reply that is only quote, a forward without comment);
    never the whole text as a fallback, and never raises. Leading and trailing blank lines are
    removed; inner formatting is kept (indentation, paragraph breaks; a run of blank lines becomes
    one). ``languages``: mail-parser-reply language codes for reply headers and closings ("en" is
    always included). ``keep_signature``: keep the closing and signature (an agent's reply relayed
    to a customer keeps its "Mit freundlichen Grüßen" and phone number); quoted history still goes.
    """
    if isinstance(languages, str):
        languages = (languages,)
    try:
        text = (text or "")[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n").replace(_SHIELD, "")
        text = text.lstrip("\ufeff")
        # 1. Our marker: deterministic, before anything else can go wrong.
        text = _cut_at_marker(text)
        lines = text.split("\n")
        # 2. Forward and original-message separators the library does not know (unquoted lines only;
        #    a quoted one goes with its quote).
        lines = _cut_at(lines, _SEPARATOR_RE.fullmatch)
        # 3. Quotes without a header, inline and bottom-posted replies; then attributions that no
        #    quote follows.
        lines = _cut_at(lines, _GROUPWISE_RE.fullmatch, unquoted_only=False)
        lines = _drop_quotes(_join_wrapped_addresses(lines))
        lines = _cut_at_attribution(lines)
        lines = _cut_at_header_block(lines)
        # 4. Mobile footers and closings: everything below them is signature or history.
        langs = tuple(dict.fromkeys(lang.lower().strip() for lang in languages))
        lines = _cut_at(lines, _MOBILE_FOOTER_RE.fullmatch)
        if not keep_signature:
            lines = _cut_at(lines, lambda s: _closing_kind(s, langs) == "closing", keep_first=True)
        lines = _trim(lines)
    except Exception:  # pragma: no cover - defensive: the caller must get a string
        logger.exception("extract_new_text: pre-processing failed")
        return ""
    if not lines:
        return ""
    try:
        lines = _library_cut(lines, langs, keep_signature)
    except Exception:  # pragma: no cover - a library bug must not stop ingest; keep our own cut
        logger.exception("extract_new_text: mail-parser-reply failed; using the pre-processed text")
    return "\n".join(_trim(lines))


# -- the forwarded block ------------------------------------------------------------------------------

# Separators that say "a forwarded mail follows" (the others say "the original of this reply").
_FORWARD_WORDS_RE = re.compile(r"forward|weitergeleitet|transféré|begin forwarded", re.IGNORECASE)
# The header labels of a forwarded block, by field (lower-case, as _LABEL_RE matched them).
_FIELD_OF_LABEL: dict[str, str] = {
    **dict.fromkeys(_FROM_LABELS.lower().split("|"), "from"),
    **dict.fromkeys(
        ("sent", "date", "gesendet", "datum", "envoyé", "envoyé le", "inviato", "data", "enviado", "fecha"), "date"
    ),
    **dict.fromkeys(("verzonden", "skickat", "sendt", "dato", "wysłano"), "date"),
    **dict.fromkeys(("subject", "betreff", "objet", "sujet", "oggetto", "asunto", "onderwerp", "ämne"), "subject"),
    **dict.fromkeys(("emne", "temat"), "subject"),
    **dict.fromkeys(("to", "an", "à", "a", "para", "aan", "till", "til", "do"), "to"),
    **dict.fromkeys(("cc", "kopie", "copie à", "kopia"), "cc"),
}


@dataclass(frozen=True)
class ForwardBlock:
    """An inline forwarded (or quoted original) mail found in a plain text: the sender's own words
    above it, its header lines by field (``from``, ``date``, ``subject``, ``to``, ``cc``: the values
    as written), its body, and how it was introduced: ``forward`` ("-------- Forwarded message
    --------", "Weitergeleitete Nachricht", Apple's "Begin forwarded message:"), ``original``
    ("-----Ursprüngliche Nachricht-----": Outlook writes it above replies and forwards alike), or
    ``header`` (Outlook's "From: / Sent: / To: / Subject:" block without a separator line)."""

    above: str
    headers: dict[str, str]
    body: str
    introduced_by: str


def _header_lines(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """The "Label: value" lines from ``start`` on (blank lines before them skipped), by field, and
    the index of the first line after them."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    headers: dict[str, str] = {}
    while i < len(lines) and len(lines[i]) <= 1000:
        m = _LABEL_RE.match(lines[i])
        if m is None:
            break
        label = lines[i][: m.end()].strip(" \t*_:：").lower()
        field_name = _FIELD_OF_LABEL.get(label)
        if field_name is not None and field_name not in headers:
            headers[field_name] = lines[i][m.end() :].strip(" \t*_")
        i += 1
    return headers, i


def _unquote(lines: list[str]) -> list[str]:
    """One level of ``>`` quoting off, when every non-blank line has it (Apple Mail quotes a forward)."""
    if not any(line.strip() for line in lines) or not all(_is_quoted(line) for line in lines if line.strip()):
        return lines
    return [re.sub(r"^\s*> ?", "", line, count=1) for line in lines]


def forward_block(text: str) -> ForwardBlock | None:
    """The first forwarded or quoted original mail of ``text`` with its header lines, or None.

    The same separators and header blocks as :func:`extract_new_text` cuts at (``_SEPARATOR_RE``,
    a run of three or more "Label:" lines with a sender label in the locales of ``_LABEL_RE``); an
    unquoted separator line counts, or a quoted one directly under Apple Mail's "Anfang der
    weitergeleiteten Nachricht:". A block without a sender line is no forward (None)."""
    text = (text or "")[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    # Where a header block starts (one linear pass), and the first separator line above it.
    header_at = len(_cut_at_header_block(lines))
    start, introduced = (header_at, "header") if header_at < len(lines) else (None, None)
    for i, line in enumerate(lines[:header_at]):
        if line.strip() and not _is_quoted(line) and _SEPARATOR_RE.fullmatch(line.strip()):
            start, introduced = i + 1, "forward" if _FORWARD_WORDS_RE.search(line) else "original"
            break
    if start is None:
        return None
    above = lines[: start - 1] if introduced != "header" else lines[:start]
    rest = _unquote(lines[start:])
    headers, end = _header_lines(rest, 0)
    if "from" not in headers:
        return None
    body = rest[end:]
    return ForwardBlock(
        above="\n".join(_trim(above)),
        headers=headers,
        body="\n".join(_trim(body)),
        introduced_by=introduced,
    )
