"""What kind of mail this is: a person's, or noise a support desk must never answer.

Every inbound mail gets one :class:`MailClass`, stored on its raw row and message. Only
``human`` and ``auto_forwarded`` mail may open a case, be acknowledged, reopen or notify;
bounces are matched to the mail of ours they bounce (``Bounce.original_message_ids``).

Interface used by the pipeline (``ingest/steps.py``); the detection rules live here, each a small
function named below, walked in this order by ``RULES``: the first rule that answers decides. The order
is the order of the evidence's strength, and when in doubt a mail stays a person's: a lost customer
request is worse than one acknowledgement sent to an autoresponder.

Machine-made mail:

1. ``own_address`` — From is one of our addresses (a loop): **own**.
2. ``bounce`` — a delivery-status notification (RFC 3464 ``multipart/report;
   report-type=delivery-status``, read with the stdlib), Exchange's ``X-MS-Exchange-Message-Is-Ndr``,
   Exim's ``X-Failed-Recipients``; or, without any of those, a mail from a machine (null return path,
   MAILER-DAEMON/postmaster) or with a bounce subject plus one more sign: flufl.bounce's detectors
   (qmail, Exim, Postfix without DSN, AOL, Yahoo, …), the usual bounce wording, a returned message.
   **hard_bounce** when a recipient failed permanently (``Action: failed``, 5.x.x), **soft_bounce**
   when only delayed (``Action: delayed``, 4.x.x). ``raw`` is parsed a second time only for such
   candidates (cheap header checks decide that). A DSN reporting only success is an **auto_reply**.
3. ``machine_report`` — any other ``multipart/report`` (MDN, ARF): **auto_reply**.

A person's mail that the *customer's* server forwarded by rule and, doing so, marked automatic:
**auto_forwarded**: it must still become a ticket. Forwards that mark nothing (Gmail's
X-Forwarded-To, Sieve redirect) keep the class of what they forward.

4. ``auto_submitted_forward`` — ``Auto-Submitted: auto-forwarded`` without list headers (list
   servers mark their fan-out copies so).
5. ``exchange_rule_forward`` — Exchange's mailbox-rule markers with a forward's shape (FW/WG/TR…
   subject or an attached message), unless the subject is an autoresponder's.
6. ``exchange_rule_redirect`` — the markers with a redirect's shape: From is not the rule owner
   (and no auto-reply); **list** when it is list mail.
7. ``resent_forward`` — Resent-* (or another redirect header) + ``auto-generated`` + a forward's
   shape, without list headers.

Automatic replies: **out_of_office** when the reply says so (subject words in several languages,
the ``(vacation)`` comment, RFC 5230's "Auto:" subject, the opening words), else **auto_reply**.

8. ``auto_reply_marker`` — RFC 3834 ``Auto-Submitted``, ``X-Autoreply``/``X-Autorespond``,
   ``Precedence: auto_reply``.
9. ``apple_vacation`` — Apple's ``X-Apple-Action: VACATION``: **out_of_office**.
10. ``vacation_program`` — ``X-Mailer: vacation`` (BSD vacation(1)): **out_of_office**.
11. ``exchange_rule_reply`` — Exchange's mailbox-rule markers on a mail that is no forward (an OOF
    or a "reply using a template" rule).
12. ``null_sender_oof`` — a null sender + ``X-Auto-Response-Suppress`` or an autoresponder subject
    prefix (Exchange on-premises OOF without Auto-Submitted).
13. ``notes_auto_subject`` — Lotus Notes' "AUTO: … out of the office" subject: **out_of_office**.
14. ``oof_subject_prefix`` — the anchored autoresponder subject prefixes ("Automatic reply:",
    "Abwesenheitsnotiz:", …) decide alone: **out_of_office**.

Lists, other machines, people:

15. ``list_headers`` — ``List-Id`` (RFC 2919), ``List-Unsubscribe`` (RFC 2369): **list**.
16. ``list_precedence`` — ``Precedence: bulk/junk/list``: **list**.
17. ``null_sender_or_daemon`` — a null return path (RFC 5321 4.5.5) or a MAILER-DAEMON From without
    anything above: **auto_reply**.
18. ``human`` — otherwise: **human**.

``X-Auto-Response-Suppress`` (MS-OXCMAIL 2.1.3.2.20) alone is *not* enough: Outlook puts it on
ordinary mail too ("do not send me auto-replies"); Jitbit lost "tens of perfectly good emails" by
filtering on it (jitbit.com/maxblog/18-…-x-auto-response-suppress-header). It only confirms an
out-of-office subject or another Exchange marker.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from flufl.bounce import all_failures

from mailbridge.domain import ParsedMail
from mailbridge.ingest.parser import decode_unstructured, normalize_message_id


class MailClass(StrEnum):
    HUMAN = "human"
    # Forwarded by the customer's own server rule (Exchange marks it auto-generated): a request.
    AUTO_FORWARDED = "auto_forwarded"
    OUT_OF_OFFICE = "out_of_office"
    # Any other autoresponder or machine notification (RFC 3834 auto-replied/auto-generated, …).
    AUTO_REPLY = "auto_reply"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    LIST = "list"
    OWN = "own"


# Classes a person wrote (or forwarded by rule): they may open cases and get answers.
PERSONAL = frozenset({MailClass.HUMAN, MailClass.AUTO_FORWARDED})
BOUNCES = frozenset({MailClass.HARD_BOUNCE, MailClass.SOFT_BOUNCE})


@dataclass(frozen=True)
class Bounce:
    """What a delivery-status notification says about the mail it bounces."""

    # The addresses that failed (lower case), as the DSN names them.
    recipients: tuple[str, ...]
    permanent: bool
    # RFC 3463 status code of the first failed recipient ("5.1.1"), when given.
    status: str | None = None
    # Message-ID(s) (without <>) of the bounced mail, from its returned copy or headers.
    original_message_ids: tuple[str, ...] = ()
    # The bounced mail's Subject, when returned (for the case tag).
    original_subject: str | None = None


@dataclass(frozen=True)
class Classification:
    kind: MailClass
    # The evidence, for the record ("Auto-Submitted: auto-replied", "multipart/report; 5.1.1").
    reason: str = ""
    bounce: Bounce | None = None
    # Every marker seen, in order (for tests and the operator view).
    evidence: tuple[str, ...] = field(default=())

    @property
    def personal(self) -> bool:
        return self.kind in PERSONAL


# --- Markers -------------------------------------------------------------------------------------

# RFC 5322 comment (not nested), as in "auto-replied (vacation)".
_COMMENT_RE = re.compile(r"\(([^()]*)\)")
# Local parts of the senders of bounces: RFC 5321 4.5.5 (null reverse-path for DSNs) is the rule,
# these names the practice (Sendmail/Postfix MAILER-DAEMON, qmail MAILER-DAEMON, Exchange postmaster).
_DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster", "mdaemon"}
)
# Display names of mailer daemons ("MAILER-DAEMON <>", "Mail Delivery System <…>").
_DAEMON_NAME_RE = re.compile(r"mailer[-_ ]?daemon|mail delivery (?:system|subsystem)", re.IGNORECASE)
# Subjects that MTAs give their bounces, anchored at the start so that a person's "FW: Undeliverable"
# (a customer asking about a bounce) does not match. Postfix, Sendmail, Exim, qmail, Exchange, Gmail,
# Domino, German/French Exchange.
_BOUNCE_SUBJECT_RE = re.compile(
    r"^\s*(?:undeliver(?:able|ed)|undelivered mail|mail delivery (?:failed|failure|system)|delivery (?:status"
    r" notification|failure|has failed|notification)|failure notice|returned mail|return(?:ed)? to sender|"
    r"(?:permanent |temporary )?delivery failure|(?:mail|message) could not be delivered|"
    r"non[- ]?deliver|nondeliverable|delivery report|could not send message|mail system error|"
    r"warning: could not send|message (?:delivery|not delivered|undeliverable)|"
    r"unzustellbar|nicht zustellbar|unzustellbare|non remis|non distribuable|échec de (?:la )?remise)",
    re.IGNORECASE,
)
# Broader subjects that only make a mail worth the closer look (parsing ``raw``); the verdict needs
# a DSN part, a daemon/null sender or flufl.bounce as well ("Delivery status of order 4711" is a
# customer's question).
_CANDIDATE_SUBJECT_RE = re.compile(
    r"^\s*(?:delivery status|mail error|failed mail|mail failure|message status|returned|non[- ]?remis)",
    re.IGNORECASE,
)
# Bounce words anywhere in the subject, only trusted when From is a mailer daemon ("Message status -
# undeliverable", "There was an error sending your mail", Japanese "配信できません").
_BOUNCE_WORDS_RE = re.compile(
    r"undeliver|deliver|fail|error|bounce|returned|rejected|problem|unzustellbar|zustellung|non remis|"
    r"配信|不達|エラー",
    re.IGNORECASE,
)
# The usual wording of bounce texts (Postfix "This is the mail system at host", qmail "This is the
# qmail-send program", Exim "could not be delivered", Sendmail "Transcript of session follows", …).
_BOUNCE_TEXT_RE = re.compile(
    r"could not be delivered|can ?not be delivered|undeliverable|was not delivered|delivery (?:has )?failed|"
    r"delivery to the following recipients? failed|permanent(?:ly)? (?:error|fatal|failure)|"
    r"user unknown|unknown user|no such user|mailbox (?:is )?(?:full|unavailable)|does not exist|"
    r"this is the mail system at host|qmail-send program|transcript of session follows|"
    r"returned to sender|could not deliver|failed to deliver|delivery status notification|"
    r"nicht zugestellt|unzustellbar",
    re.IGNORECASE,
)
# How much of a bounce candidate's text is searched for that wording.
BOUNCE_PHRASE_CHARS = 4000
# Anchored subject prefixes of out-of-office/automatic replies, with their colon: strong enough to
# stand alone (Exchange OOF "Automatic reply:", German "Automatische Antwort:", Outlook's old
# "Abwesenheitsnotiz:", French "Réponse automatique :", …). Not "Auto:" alone — in German that is
# "car", a customer's everyday subject; RFC 5230's "Auto:" counts only with a header marker.
_OOF_SUBJECT_PREFIX_RE = re.compile(
    r"^\s*\[?\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse|out of (?:the )?office(?: reply)?|"
    r"abwesenheitsnotiz|abwesenheit|automatische antwort|automatische rückantwort|automatisch antwoord|"
    r"réponse automatique|respuesta automática|risposta automatica|resposta automática|autosvar|"
    r"automatisk svar|automatiskt svar|automaattinen vastaus|odpowiedź automatyczna|automatyczna odpowiedź|"
    r"automatická odpověď|fuori sede|non al computer|frånvaro|fravær|afwezig|otomatik yanıt)\s*[:\]]",
    re.IGNORECASE,
)
# Words that make an automatic reply an out-of-office one (subject, Auto-Submitted comment, opening
# of the text). Only used once a header already says the mail is automatic.
_OOF_WORDS_RE = re.compile(
    r"\b(?:out of (?:the )?office|ooo|oof|vacation|holidays?|on leave|away|absent|absence|"
    r"abwesenheitsnotiz|abwesen\w*|urlaub|nicht im büro|außer haus|ausser haus|"
    r"réponse automatique|congés?|vacances|absente?|"
    r"ausente|vacaciones|fuera de la oficina|assente|fuori sede|fuori ufficio|ferie|"
    r"vakantie|afwezig|niet aanwezig|frånvaro|fravær|urlop|nieobecn\w*|poza biurem|"
    r"férias|fora do escritório|poissa|lomalla|nepřítom\w*)\b",
    re.IGNORECASE,
)
# Subject prefixes of a forward (en, de WG, fr TR, es RV, pt ENC, it I, nl Doorst, fi/da/no VS,
# sv VB, pl PD): Exchange's inbox-rule "forward" builds a new mail with such a subject.
_FORWARD_SUBJECT_RE = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:fwd?|wg|tr|rv|enc|i|doorst|vs|vb|pd|trs)\s*:", re.IGNORECASE
)
# Redirect/forward markers of other servers. They keep the original mail as it was, so they are
# recorded as evidence but the class is the content's: RFC 5322 3.6.6 Resent-*; Dovecot Pigeonhole's
# redirect writes X-Sieve-Redirected-From (it hides it again in act_redirect_send); Gmail's
# auto-forwarding adds X-Forwarded-To / X-Forwarded-For and leaves From, Subject and Message-ID alone.
_REDIRECT_HEADERS = ("resent-from", "resent-sender", "x-sieve-redirected-from", "x-forwarded-to", "x-forwarded-for")
# Exchange/Microsoft 365 marks of a mail its mailbox rules made (forward, redirect, template reply or
# OOF). The loop header counts rule hops and holds the rule owner's address (blogs.it.ox.ac.uk/nexus
# "Email loops – what happens, when, and why"); "Mailbox Rules Agent" is the transport agent's name;
# X-MS-Exchange-Organization-AutoForwarded is MS-OXCMAIL 2.1.3.2.21 (PidTagAutoForwarded). Since 2025
# Microsoft 365 also stamps rule forwards "Auto-Submitted: auto-generated" (zammad/zammad#6025).
_EXCHANGE_RULE_LOOP = "x-ms-exchange-inbox-rules-loop"
_EXCHANGE_SOURCE = "x-ms-exchange-generated-message-source"
_EXCHANGE_AUTOFORWARDED = "x-ms-exchange-organization-autoforwarded"
# RFC 2919 List-Id and RFC 2369 List-Unsubscribe, in the order a list mail's reason names them.
_LIST_HEADERS = ("list-id", "list-unsubscribe")
# MS-OXCMAIL 2.1.3.2.20 (see the module docstring: no marker on its own).
_SUPPRESS = "x-auto-response-suppress"
# Precedence values (RFC 2076 3.9; RFC 3834 section 2 names bulk, junk and list).
_LIST_PRECEDENCE = frozenset({"bulk", "junk", "list"})
# RFC 3463 enhanced status code, with the class digit captured.
_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# The same, failures only, for bounce texts (not a version number like "2.5.3.0").
_FAILURE_STATUS_RE = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# A Message-ID / Subject line of a returned header block inside a plain-text bounce body.
_BODY_MSGID_RE = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_BODY_SUBJECT_RE = re.compile(r"^[ \t>]*Subject:[ \t]*(.*(?:\r?\n[ \t]+.*)*)", re.IGNORECASE | re.MULTILINE)
# Words of a delay warning (Sendmail/Postfix "Delayed Mail (still being retried)", Exim "Warning:
# message … delayed", Exchange "Delivery Status Notification (Delay)").
_DELAY_RE = re.compile(
    r"\b(?:delay(?:ed)?|still (?:being )?(?:re)?tr(?:ying|ied)|will (?:be )?retr(?:y|ied)|warning: could not send|"
    r"not yet been delivered|verzögert)\b",
    re.IGNORECASE,
)
# How much of a bounce's text is searched for status codes, message ids and delay words.
BOUNCE_TEXT_CHARS = 20_000
# How much of the text opening decides whether an automatic reply is an out-of-office one.
OOF_TEXT_CHARS = 400
# RFC 5230 5.3: Sieve vacation's default subject is "Auto: " + the original subject; Lotus Notes
# writes "AUTO: Smith, John is out of the office".
_AUTO_SUBJECT_RE = re.compile(r"^\s*auto\s*:", re.IGNORECASE)


def _hv(mail: ParsedMail, name: str) -> str:
    """A header's value, unfolded and stripped ("" when absent)."""
    value = mail.header(name)
    if value is None:
        return ""
    return " ".join(value.split())


def _addr(value: str) -> str:
    """The bare address of a header value like ``Name <a@b>`` or ``<>`` (lower case)."""
    m = re.search(r"<([^<>]*)>", value)
    return (m.group(1) if m else value).strip().lower()


def _is_daemon(address: str) -> bool:
    local = address.split("@", 1)[0].strip().strip('"').lower()
    return local in _DAEMON_LOCALPARTS


@dataclass(slots=True)
class _Signals:
    """What the rules read, computed once per mail: cheap header-only facts, our addresses and the
    mail's bytes (which only the bounce rule reads again, and only for candidates).

    ``evidence`` gathers the notes in the order they are made: the headers' here, then what the
    bounce check saw (kept when the mail turns out no bounce). The forward and reply markers (Exchange
    rule, redirect headers, X-Auto-Response-Suppress) are noted in ``marker_notes``: they follow that
    evidence in the answers of the rules from the forwards on (:meth:`verdict`), and are not part of
    a bounce's or machine report's evidence.
    """

    raw: bytes = b""
    own: frozenset[str] = frozenset()
    from_addr: str = ""
    from_null: bool = False  # From: <> (some bounces have no sender address at all)
    from_daemon_name: bool = False  # "MAILER-DAEMON <>", "Mail Delivery System <…>"
    return_path: str | None = None  # None: no header; "": null reverse-path "<>"
    subject: str = ""
    content_type: str = ""
    auto_token: str = ""  # RFC 3834 keyword, lower case ("" when absent or "no")
    auto_comment: str = ""
    precedence: str = ""
    # An anchored autoresponder subject prefix ("Automatic reply:", "Abwesenheitsnotiz:", …).
    oof_prefix: bool = False
    # Exchange's mailbox-rule markers: a rule made or passed on the mail; the rule owner's address.
    exchange_rule: bool = False
    rule_owner: str = ""
    # The redirect headers present (Resent-*, X-Forwarded-To, …; _REDIRECT_HEADERS order).
    redirect: tuple[str, ...] = ()
    # "list-id" and/or "list-unsubscribe", when present.
    list_headers: tuple[str, ...] = ()
    # X-Auto-Response-Suppress ("" when absent).
    suppress: str = ""
    evidence: list[str] = field(default_factory=list)
    marker_notes: tuple[str, ...] = ()

    def verdict(self, kind: MailClass, reason: str, *notes: str) -> Classification:
        """A rule's answer: the evidence so far, the forward and reply markers, the rule's own notes."""
        return Classification(kind, reason, evidence=(*self.evidence, *self.marker_notes, *notes))

    @property
    def null_sender(self) -> bool:
        return self.return_path == ""

    @property
    def daemon_from(self) -> bool:
        """From itself is a mailer daemon (or empty): no person writes as MAILER-DAEMON."""
        local = self.from_addr.split("@", 1)[0]
        return self.from_null or self.from_daemon_name or (local in _DAEMON_LOCALPARTS and local != "postmaster")

    @property
    def daemon_sender(self) -> bool:
        return (
            self.from_null
            or self.from_daemon_name
            or _is_daemon(self.from_addr)
            or (bool(self.return_path) and _is_daemon(self.return_path or ""))
        )


def _signals(mail: ParsedMail, raw: bytes, own: frozenset[str]) -> _Signals:
    s = _Signals(raw=raw, own=own)
    from_raw = _hv(mail, "from")
    s.from_addr = mail.from_.email if mail.from_ else _addr(from_raw)
    s.from_null = not s.from_addr and "<>" in from_raw.replace(" ", "")
    s.from_daemon_name = bool(_DAEMON_NAME_RE.search(from_raw))
    if "return-path" in mail.headers:
        s.return_path = _addr(_hv(mail, "return-path"))
    s.subject = mail.subject or ""
    s.content_type = _hv(mail, "content-type").lower()
    auto = _hv(mail, "auto-submitted")
    if auto:
        comments = " ".join(_COMMENT_RE.findall(auto))
        token = _COMMENT_RE.sub(" ", auto).split(";", 1)[0].strip().lower()
        if token and token != "no":
            s.auto_token, s.auto_comment = token, comments
            s.evidence.append(f"Auto-Submitted: {token}" + (f" ({comments})" if comments else ""))
    s.precedence = _hv(mail, "precedence").lower()
    if s.precedence:
        s.evidence.append(f"Precedence: {s.precedence}")
    if s.null_sender:
        s.evidence.append("Return-Path: <> (null sender)")
    if s.daemon_from:
        s.evidence.append(f"mailer-daemon From {from_raw[:60]!r}")
    elif s.return_path and _is_daemon(s.return_path):
        s.evidence.append(f"mailer-daemon Return-Path {s.return_path}")
    elif _is_daemon(s.from_addr):
        s.evidence.append(f"postmaster From {s.from_addr}")
    s.oof_prefix = bool(_OOF_SUBJECT_PREFIX_RE.match(s.subject))
    _markers(mail, s)
    return s


def _markers(mail: ParsedMail, s: _Signals) -> None:
    """The forward and reply markers: Exchange's mailbox rules, redirects, lists, X-Auto-Response-Suppress."""
    # Every mail pays for this: the header dict is read directly (its names are lower case), and
    # absent headers, the usual case, cost one lookup each.
    headers = mail.headers
    notes: list[str] = []
    if _EXCHANGE_RULE_LOOP in headers:
        loop = _hv(mail, _EXCHANGE_RULE_LOOP)
        if loop:
            notes.append(f"X-MS-Exchange-Inbox-Rules-Loop: {loop[:60]}")
            s.rule_owner = _addr(loop)
    if _EXCHANGE_SOURCE in headers and "mailbox rules agent" in _hv(mail, _EXCHANGE_SOURCE).lower():
        notes.append("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent")
    if _EXCHANGE_AUTOFORWARDED in headers and _hv(mail, _EXCHANGE_AUTOFORWARDED).lower() == "true":
        notes.append("X-MS-Exchange-Organization-AutoForwarded: true")
    s.exchange_rule = bool(notes)
    s.redirect = tuple([h for h in _REDIRECT_HEADERS if h in headers])
    for h in s.redirect:
        notes.append(f"{h}: {_hv(mail, h)[:60]}")
    s.list_headers = tuple([h for h in _LIST_HEADERS if h in headers])
    if _SUPPRESS in headers:
        s.suppress = _hv(mail, _SUPPRESS)
        if s.suppress:
            notes.append(f"X-Auto-Response-Suppress: {s.suppress}")
    s.marker_notes = tuple(notes)


# --- Bounces -------------------------------------------------------------------------------------


def _bounce_candidate(mail: ParsedMail, s: _Signals) -> bool:
    """Whether the mail may be a bounce, from headers only: cheap, so ordinary mail never pays for
    parsing ``raw`` a second time."""
    return (
        "multipart/report" in s.content_type
        or "message/delivery-status" in s.content_type
        or s.null_sender
        or s.daemon_sender
        or bool(_BOUNCE_SUBJECT_RE.match(s.subject))
        or bool(_CANDIDATE_SUBJECT_RE.match(s.subject))
        or "x-failed-recipients" in mail.headers
        or "x-ms-exchange-message-is-ndr" in mail.headers
    )


def _report_parts(msg: email.message.Message) -> Iterator[email.message.Message]:
    """Every MIME part of ``msg`` without descending into attached messages (a forwarded bounce
    inside a person's mail is not a bounce of ours)."""
    stack = [msg]
    while stack:
        part = stack.pop(0)
        yield part
        if part.is_multipart() and part.get_content_maintype() != "message":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[0:0] = [p for p in payload if isinstance(p, email.message.Message)]


@dataclass
class _DsnFacts:
    is_report: bool = False  # multipart/report; report-type=delivery-status at the top level
    has_status_part: bool = False
    failed: list[str] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)
    delivered: int = 0
    statuses: list[str] = field(default_factory=list)  # of failed (then delayed) recipients
    original_ids: list[str] = field(default_factory=list)
    original_subject: str | None = None
    returned: bool = False  # a returned copy (message/rfc822 or text/rfc822-headers part)
    text: str = ""


def _status_blocks(part: email.message.Message) -> list[email.message.Message]:
    """The per-message and per-recipient field blocks of a message/delivery-status part (RFC 3464
    2.1). The stdlib parses them as sub-messages; a part built as one text blob is split here."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    text = payload if isinstance(payload, str) else ""
    if part.get("content-transfer-encoding", "").lower() in ("base64", "quoted-printable"):
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else text
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    parser = email.parser.HeaderParser()
    return [parser.parsestr(b + "\n") for b in blocks if b.strip()]


def _part_text(part: email.message.Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _headers_of(part: email.message.Message) -> email.message.Message | None:
    """The header block of a returned message: message/rfc822 (its sub-message) or
    text/rfc822-headers (RFC 6522; ``message/rfc822-headers`` in older MTAs) parsed with the stdlib.

    The stdlib parses the body of *every* ``message/*`` part (except delivery-status) as a message,
    so a ``message/rfc822-headers`` part arrives as a sub-message too.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], email.message.Message) else None
    if part.get_content_maintype() == "message" or part.get_content_type() == "text/rfc822-headers":
        return email.parser.HeaderParser().parsestr(_part_text(part))
    return None


def _as_text(msg: email.message.Message) -> str:
    """A returned message as text, for when its headers did not parse (unindented folding lines
    end the stdlib's header block early, and the Message-ID lands in the "body")."""
    try:
        return msg.as_string()[:BOUNCE_TEXT_CHARS]
    except Exception:  # broken encodings in a returned copy: the text search just has less to read
        return ""


def _read_dsn(msg: email.message.Message, raw: bytes = b"") -> _DsnFacts:
    """Facts of an RFC 3464 report and the returned original, read with the stdlib (compat32)."""
    f = _DsnFacts()
    top = msg.get_content_type()
    f.is_report = top == "message/delivery-status" or (
        top == "multipart/report" and (msg.get_param("report-type") or "").lower() == "delivery-status"
    )
    texts: list[str] = []
    returned: list[email.message.Message] = []
    for part in _report_parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            f.has_status_part = True
            for block in _status_blocks(part):
                # Exchange writes the bounced mail's id into the per-message fields.
                xid = normalize_message_id(str(block.get("x-original-message-id") or ""))
                if xid and xid not in f.original_ids:
                    f.original_ids.append(xid)
                action = (block.get("action") or "").strip().lower()
                status = _STATUS_RE.search(block.get("status") or "") or _STATUS_RE.search(
                    block.get("diagnostic-code") or ""
                )
                recipient = block.get("final-recipient") or block.get("original-recipient") or ""
                addr = _addr(recipient.split(";", 1)[-1]) if recipient else ""
                if action.startswith(("fail", "error")) or (not action and status and status.group(1) == "5"):
                    f.failed.append(addr)
                    if status:
                        f.statuses.insert(len(f.failed) - 1, status.group(0))
                elif action.startswith("delay") or (not action and status and status.group(1) == "4"):
                    f.delayed.append(addr)
                    if status:
                        f.statuses.append(status.group(0))
                elif action.startswith(("deliver", "relay", "expand")):
                    f.delivered += 1
        elif ctype in ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"):
            headers = _headers_of(part)
            if headers is not None:
                returned.append(headers)
        elif part.get_content_maintype() == "text" and ctype != "text/rfc822-headers":
            texts.append(_part_text(part))
    f.text = "\n".join(texts)[:BOUNCE_TEXT_CHARS]
    f.returned = bool(returned)
    for headers in returned:
        mid = normalize_message_id(str(headers.get("message-id") or ""))
        if mid and mid not in f.original_ids:
            f.original_ids.append(mid)
        if f.original_subject is None and headers.get("subject") is not None:
            f.original_subject = decode_unstructured(str(headers.get("subject")))
    if not f.original_ids:
        # Failing a returned copy's headers: its text, then the header block quoted in a plain-text
        # bounce (qmail, Exim, …).
        # Last, the raw body: a mis-nested MIME tree (wrong boundary) hides the returned part.
        body = raw.split(b"\n\n", 1)[-1] if b"\n\n" in raw else b""
        raw_text = body[: BOUNCE_TEXT_CHARS * 2].decode("latin-1")
        search_in = "\n".join([*(_as_text(h) for h in returned), f.text, raw_text])
        m = _BODY_MSGID_RE.search(search_in)
        mid = normalize_message_id(m.group(1)) if m else None
        if mid:
            f.original_ids.append(mid)
        if f.original_subject is None and f.original_ids:
            sm = _BODY_SUBJECT_RE.search(search_in)
            if sm:
                f.original_subject = decode_unstructured(sm.group(1)).strip() or None
    return f


def _flufl(msg: email.message.Message, evidence: list[str]) -> tuple[list[str], list[str]]:
    """(temporary, permanent) recipients by flufl.bounce's detectors; ([], []) when it gives up.

    ``all_failures`` re-raises whatever a detector raises (it logs and raises), so it is wrapped.
    """
    try:
        temporary, permanent = all_failures(msg)
    except Exception as e:  # a detector choking on odd MIME must not crash classification
        evidence.append(f"flufl.bounce failed: {type(e).__name__}")
        return [], []

    def norm(addrs) -> list[str]:
        out = []
        for a in addrs:
            text = a.decode("ascii", "replace") if isinstance(a, bytes) else str(a)
            text = text.strip().strip("<>").lower()
            if text and text not in out:
                out.append(text)
        return sorted(out)

    return norm(temporary), norm(permanent)


def _detect_bounce(mail: ParsedMail, raw: bytes, s: _Signals) -> Classification | None:
    """A bounce classification, or None when the candidate is not one."""
    evidence = s.evidence
    try:
        msg = email.message_from_bytes(raw)
    except Exception as e:  # the stdlib parser is lenient; this is for the truly hopeless
        evidence.append(f"raw unparsable for bounce check: {type(e).__name__}")
        msg = None
    facts = _DsnFacts()
    if msg is not None:
        try:
            facts = _read_dsn(msg, raw.replace(b"\r\n", b"\n"))
        except Exception as e:  # a broken DSN is still judged by its headers below
            evidence.append(f"DSN unreadable: {type(e).__name__}")
    temporary, permanent = _flufl(msg, evidence) if msg is not None else ([], [])

    bounce_subject = bool(_BOUNCE_SUBJECT_RE.match(s.subject))
    failed_header = _hv(mail, "x-failed-recipients")
    exchange_ndr = mail.header("x-ms-exchange-message-is-ndr") is not None
    if facts.is_report or facts.has_status_part:
        evidence.append("multipart/report; report-type=delivery-status")
    if bounce_subject:
        evidence.append(f"bounce subject {s.subject[:60]!r}")
    if failed_header:
        evidence.append(f"X-Failed-Recipients: {failed_header[:80]}")
    if exchange_ndr:
        evidence.append("X-MS-Exchange-Message-Is-Ndr")
    if permanent or temporary:
        evidence.append(f"flufl.bounce: {len(permanent)} permanent, {len(temporary)} temporary")

    structured = facts.is_report or facts.has_status_part
    if structured and not (facts.failed or facts.delayed) and facts.delivered and not (permanent or temporary):
        # RFC 3464 success notification ("delivered", "relayed", "expanded"): no failure at all.
        evidence.append("delivery-status reports success only")
        return Classification(MailClass.AUTO_REPLY, "DSN without failures", evidence=tuple(evidence))
    # Without a machine-readable report, the verdict needs the mail to come from a machine (null
    # reverse-path, a daemon) or to carry a bounce subject, and one more sign: flufl.bounce, the
    # usual bounce wording in the text, a returned message, or the subject. A person forwarding a
    # bounce ("FW: Undeliverable", attached) has neither a machine origin nor an anchored subject.
    origin = s.null_sender or s.daemon_sender
    subject_says = bounce_subject or (s.daemon_from and bool(_BOUNCE_WORDS_RE.search(s.subject)))
    text_says = bool(_BOUNCE_TEXT_RE.search(facts.text[:BOUNCE_PHRASE_CHARS]))
    if text_says:
        evidence.append("bounce wording in the text")
    if facts.returned and not structured:
        evidence.append("returned message attached")
    score = sum((origin, subject_says, bool(permanent or temporary), text_says, facts.returned))
    is_bounce = (
        structured
        or exchange_ndr
        or bool(failed_header)
        or ((origin or subject_says) and score >= 2 and not s.oof_prefix)
    )
    if not is_bounce:
        return None

    recipients: list[str] = []
    for a in [*facts.failed, *permanent, *facts.delayed, *temporary]:
        if a and a not in recipients:
            recipients.append(a)
    if failed_header:
        for a in re.split(r"[,\s]+", failed_header):
            a = _addr(a)
            if "@" in a and a not in recipients:
                recipients.append(a)

    status = facts.statuses[0] if facts.statuses else None
    if facts.failed or permanent:
        permanent_flag = True
    elif facts.delayed or temporary:
        permanent_flag = False
    else:
        # Nothing machine-readable: the text decides (status codes, then delay words).
        text_status = _FAILURE_STATUS_RE.search(facts.text)
        if text_status:
            status = status or text_status.group(0)
            permanent_flag = text_status.group(1) == "5"
        else:
            permanent_flag = not (_DELAY_RE.search(s.subject) or _DELAY_RE.search(facts.text[:3000]))
    if status is None and facts.text:
        m = _FAILURE_STATUS_RE.search(facts.text)
        if m and (m.group(1) == "5") == permanent_flag:
            status = m.group(0)

    original_ids = list(facts.original_ids)
    if not original_ids:
        # Exchange NDRs and some MTAs thread the bounce to the bounced mail (In-Reply-To).
        original_ids = [i for i in mail.in_reply_to if i]
    bounce = Bounce(
        recipients=tuple(recipients),
        permanent=permanent_flag,
        status=status,
        original_message_ids=tuple(original_ids),
        original_subject=facts.original_subject,
    )
    kind = MailClass.HARD_BOUNCE if permanent_flag else MailClass.SOFT_BOUNCE
    how = "multipart/report" if structured else ("flufl.bounce" if (permanent or temporary) else "bounce headers")
    reason = f"{how}; {status or ('permanent' if permanent_flag else 'temporary')}"
    return Classification(kind, reason, bounce=bounce, evidence=tuple(evidence))


# --- Automatic replies and forwards --------------------------------------------------------------


def _looks_oof(mail: ParsedMail, s: _Signals) -> bool:
    """Whether an automatic reply is an out-of-office one (subject, Auto-Submitted comment, opening)."""
    if _OOF_SUBJECT_PREFIX_RE.match(s.subject) or _OOF_WORDS_RE.search(s.subject):
        return True
    if s.auto_comment and _OOF_WORDS_RE.search(s.auto_comment):
        return True
    if _AUTO_SUBJECT_RE.match(s.subject):
        return True
    opening = (mail.new_text or mail.text or "")[:OOF_TEXT_CHARS]
    return bool(_OOF_WORDS_RE.search(opening))


def _forward_shape(mail: ParsedMail, s: _Signals) -> bool:
    """A forward by its form: a forward subject prefix or an attached message."""
    if _FORWARD_SUBJECT_RE.match(s.subject):
        return True
    return any(a.content_type.lower() in ("message/rfc822", "message/global") for a in mail.attachments)


def _reply(mail: ParsedMail, s: _Signals, marker: str, *notes: str) -> Classification:
    """An automatic reply found by ``marker``: out_of_office when it says so, else auto_reply."""
    if _looks_oof(mail, s):
        return s.verdict(MailClass.OUT_OF_OFFICE, f"{marker}; out-of-office wording", *notes)
    return s.verdict(MailClass.AUTO_REPLY, marker, *notes)


# --- The rules, in the module docstring's order --------------------------------------------------
# Each takes the parsed mail and its signals and answers with a Classification, or None to pass the
# mail on to the next rule.

Rule = Callable[[ParsedMail, _Signals], Classification | None]


def own_address(mail: ParsedMail, s: _Signals) -> Classification | None:
    """From is one of our addresses (a loop): own."""
    if mail.from_ and mail.from_.email in s.own:
        reason = f"From is our own address {mail.from_.email}"
        return Classification(MailClass.OWN, reason, evidence=(reason,))
    return None


def bounce(mail: ParsedMail, s: _Signals) -> Classification | None:
    """A delivery-status notification or a mailer's bounce: hard_bounce or soft_bounce."""
    # The only rule that reads ``raw`` again, and only for candidates.
    if not _bounce_candidate(mail, s):
        return None
    return _detect_bounce(mail, s.raw, s)


def machine_report(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Any other multipart/report (MDN RFC 8098, ARF RFC 5965, …): a notification, auto_reply."""
    if not s.content_type.startswith("multipart/report"):
        return None
    m = re.search(r"report-type\s*=\s*\"?([\w.-]+)", s.content_type)
    reason = f"multipart/report; report-type={m.group(1) if m else 'unknown'}"
    # Machine-made: the forward and reply markers are no evidence of it.
    return Classification(MailClass.AUTO_REPLY, reason, evidence=(*s.evidence, reason))


def auto_submitted_forward(mail: ParsedMail, s: _Signals) -> Classification | None:
    """``Auto-Submitted: auto-forwarded`` without list headers: auto_forwarded."""
    # Not an RFC 3834 keyword, but forwarders use it; list servers do too for their fan-out copies
    # (then List-Id is there, and the mail is list mail).
    if s.auto_token == "auto-forwarded" and not s.list_headers:
        return s.verdict(MailClass.AUTO_FORWARDED, "Auto-Submitted: auto-forwarded")
    return None


def exchange_rule_forward(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Exchange's mailbox-rule markers with a forward's shape (FW subject, attached mail): auto_forwarded."""
    if s.exchange_rule and not s.oof_prefix and _forward_shape(mail, s):
        return s.verdict(MailClass.AUTO_FORWARDED, "Exchange mailbox rule forward (FW subject / attached mail)")
    return None


def exchange_rule_redirect(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Exchange's mailbox-rule markers on a mail From someone else than the rule owner: auto_forwarded (or list)."""
    # Redirect: Exchange keeps the original author in From; the loop header names the mailbox whose
    # rule sent it on. A reply made by a rule comes From the rule owner.
    if not (s.exchange_rule and not s.oof_prefix and s.rule_owner and s.from_addr):
        return None
    if s.rule_owner == s.from_addr or s.auto_token == "auto-replied":
        return None
    if s.list_headers or s.precedence in _LIST_PRECEDENCE:
        return s.verdict(MailClass.LIST, f"list mail redirected via {s.rule_owner}")
    return s.verdict(MailClass.AUTO_FORWARDED, f"Exchange mailbox rule redirect via {s.rule_owner}")


def resent_forward(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Resent-* (or another redirect header) + ``auto-generated`` + a forward's shape: auto_forwarded."""
    if s.redirect and s.auto_token == "auto-generated" and not s.list_headers and _forward_shape(mail, s):
        return s.verdict(MailClass.AUTO_FORWARDED, "forwarded by rule (auto-generated forward)")
    return None


def auto_reply_marker(mail: ParsedMail, s: _Signals) -> Classification | None:
    """RFC 3834 Auto-Submitted, X-Autoreply/X-Autorespond, Precedence: auto_reply: out_of_office or auto_reply."""
    if s.auto_token and s.auto_token != "auto-forwarded":
        return _reply(mail, s, f"Auto-Submitted: {s.auto_token}")
    for name in ("x-autoreply", "x-autorespond"):
        value = _hv(mail, name)
        if value and value.lower() not in ("no", "false", "0"):
            marker = f"{name}: {value[:40]}"
            return _reply(mail, s, marker, marker)
    if s.precedence == "auto_reply":
        return _reply(mail, s, "Precedence: auto_reply")
    return None


def apple_vacation(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Apple Mail's ``X-Apple-Action: VACATION``: out_of_office."""
    if _hv(mail, "x-apple-action").upper() == "VACATION":
        return s.verdict(MailClass.OUT_OF_OFFICE, "X-Apple-Action: VACATION", "X-Apple-Action: VACATION")
    return None


def vacation_program(mail: ParsedMail, s: _Signals) -> Classification | None:
    """``X-Mailer: vacation``, the classic BSD vacation(1) program: out_of_office."""
    # MIT IS&T KB "well-behaved auto-responder".
    if _hv(mail, "x-mailer").lower().startswith("vacation"):
        return s.verdict(MailClass.OUT_OF_OFFICE, "X-Mailer: vacation", "X-Mailer: vacation")
    return None


def exchange_rule_reply(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Exchange's mailbox-rule markers on a mail that is no forward (OOF, template reply): reply by wording."""
    if s.exchange_rule:
        return _reply(mail, s, "Exchange mailbox rule reply")
    return None


def null_sender_oof(mail: ParsedMail, s: _Signals) -> Classification | None:
    """A null sender + X-Auto-Response-Suppress or an autoresponder subject prefix: out_of_office or auto_reply."""
    # Exchange on-premises OOF without Auto-Submitted. X-Auto-Response-Suppress alone is no marker
    # (see the module docstring).
    if s.null_sender and (s.suppress or s.oof_prefix):
        return _reply(mail, s, "null sender" + (" + X-Auto-Response-Suppress" if s.suppress else ""))
    return None


def notes_auto_subject(mail: ParsedMail, s: _Signals) -> Classification | None:
    """Lotus Notes/Domino's "AUTO: Smith, John is out of the office (returning …)": out_of_office."""
    if _AUTO_SUBJECT_RE.match(s.subject) and _OOF_WORDS_RE.search(s.subject):
        note = f"out-of-office subject {s.subject[:60]!r}"
        return s.verdict(MailClass.OUT_OF_OFFICE, "AUTO: out-of-office subject", note)
    return None


def oof_subject_prefix(mail: ParsedMail, s: _Signals) -> Classification | None:
    """An anchored autoresponder subject prefix ("Automatic reply:") alone: out_of_office."""
    # The subject in the form autoresponders write it. A person would write "Re: …" or words, not
    # this prefix with its colon.
    if s.oof_prefix:
        note = f"out-of-office subject {s.subject[:60]!r}"
        return s.verdict(MailClass.OUT_OF_OFFICE, "out-of-office subject", note)
    return None


def list_headers(mail: ParsedMail, s: _Signals) -> Classification | None:
    """List-Id (RFC 2919) or List-Unsubscribe (RFC 2369): list."""
    if s.list_headers:
        notes = [f"{h}: {_hv(mail, h)[:60]}" for h in s.list_headers]
        return s.verdict(MailClass.LIST, f"{s.list_headers[0]} header", *notes)
    return None


def list_precedence(mail: ParsedMail, s: _Signals) -> Classification | None:
    """``Precedence: bulk``, ``junk`` or ``list`` (RFC 2076, RFC 3834): list."""
    if s.precedence in _LIST_PRECEDENCE:
        return s.verdict(MailClass.LIST, f"Precedence: {s.precedence}")
    return None


def null_sender_or_daemon(mail: ParsedMail, s: _Signals) -> Classification | None:
    """A null return path or a MAILER-DAEMON From, without anything above: auto_reply."""
    # Null reverse-path (RFC 5321 4.5.5) is for notifications, and MAILER-DAEMON is no person, even
    # without a bounce form. (postmaster@ is: an administrator may write from it.)
    if s.null_sender:
        return s.verdict(MailClass.AUTO_REPLY, "Return-Path: <> (null sender)")
    if s.daemon_from:
        return s.verdict(MailClass.AUTO_REPLY, "mailer-daemon From")
    return None


def human(mail: ParsedMail, s: _Signals) -> Classification:
    """No automatic marker: a person's mail, human."""
    return s.verdict(MailClass.HUMAN, "no automatic marker")


RULES: tuple[Rule, ...] = (
    own_address,
    bounce,
    machine_report,
    auto_submitted_forward,
    exchange_rule_forward,
    exchange_rule_redirect,
    resent_forward,
    auto_reply_marker,
    apple_vacation,
    vacation_program,
    exchange_rule_reply,
    null_sender_oof,
    notes_auto_subject,
    oof_subject_prefix,
    list_headers,
    list_precedence,
    null_sender_or_daemon,
    human,
)


def _classify(parsed: ParsedMail, raw: bytes, own: frozenset[str]) -> Classification:
    """The first answer of ``RULES``, in order."""
    s = _signals(parsed, raw, own)
    for rule in RULES:
        found = rule(parsed, s)
        if found is not None:
            return found
    raise AssertionError("the last rule, human, always answers")


def classify_mail(parsed: ParsedMail, raw: bytes, own: frozenset[str]) -> Classification:
    """The class of one inbound mail. Never raises (a broken DSN is still a bounce if it looks like one)."""
    try:
        return _classify(parsed, raw, own)
    except Exception as e:  # every risky step is wrapped; this is the last net
        # A person's mail must not be lost to a classifier bug: it stays human, with the error on record.
        return Classification(MailClass.HUMAN, f"classification failed: {type(e).__name__}: {e}")
