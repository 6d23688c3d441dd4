"""The case tracker's words in German and English, and its times and SLA state in plain words.

Times are shown in the case's calendar zone (``views.zone_of``) and formatted by babel (CLDR) in
the viewer's language: "Do 07.01. 12:00" / "Thu 7 Jan, 12:00".
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from babel.dates import format_datetime

LANGUAGES = ("de", "en")

_PATTERN = {"de": "EEE dd.MM. HH:mm", "en": "EEE d MMM, HH:mm"}
_PATTERN_YEAR = {"de": "dd.MM.yyyy HH:mm", "en": "d MMM yyyy, HH:mm"}

TEXT: dict[str, dict[str, str | tuple[str, str]]] = {
    "de": {
        "title": "Case Tracker",
        "skip": "Zum Inhalt springen",
        "signin_heading": "Anmelden",
        "signin_intro": "Geben Sie Ihre E-Mail-Adresse ein. Wir schicken Ihnen einen Link, mit dem Sie sich "
        "ohne Passwort anmelden. Der Link gilt 15 Minuten und nur einmal.",
        "address": "E-Mail-Adresse",
        "send_link": "Anmelde-Link senden",
        "sent_heading": "Bitte sehen Sie in Ihr Postfach",
        "sent_text": "Wenn wir diese Adresse kennen, ist ein Anmelde-Link unterwegs. Er gilt 15 Minuten.",
        "link_invalid_heading": "Dieser Link gilt nicht mehr",
        "link_invalid_text": "Der Link ist abgelaufen, wurde schon benutzt oder ist unvollständig. "
        "Fordern Sie einfach einen neuen an.",
        "signout": "Abmelden",
        "signed_in_as": "Angemeldet als",
        "language": "Sprache",
        "cases": "Ihre Anfragen",
        "cases_org": "Anfragen von {org}",
        "search": "Suche",
        "search_hint": "Fallnummer, Betreff oder Text",
        "status": "Status",
        "severity": "Dringlichkeit",
        "queue": "Bereich",
        "sort": "Sortieren nach",
        "sort_updated": "Letzte Aktivität",
        "sort_created": "Erstellt",
        "sort_severity": "Dringlichkeit",
        "sort_due": "Fälligkeit",
        "order": "Reihenfolge",
        "desc": "absteigend",
        "asc": "aufsteigend",
        "any": "alle",
        "apply": "Anzeigen",
        "case": "Fall",
        "subject": "Betreff",
        "due": "Fällig",
        "last_activity": "Letzte Aktivität",
        "none_found": "Keine Anfragen gefunden.",
        "page": "Seite {page} von {pages} ({total})",
        "n_cases": ("Anfrage", "Anfragen"),
        "prev": "Zurück",
        "next": "Weiter",
        "back": "Zurück zur Übersicht",
        "conversation": "Verlauf",
        "full_text": "Ganzer Text",
        "attachments": "Anhänge",
        "sla": "Stand",
        "linked": "Verknüpfte Anfragen",
        "support": "Kundendienst",
        "contact": "Kontakt",
        "comment": "Kommentar hinzufügen",
        "comment_label": "Ihr Kommentar",
        "files": "Dateien (optional)",
        "send": "Senden",
        "urgency": "Höhere Dringlichkeit erbitten",
        "urgency_reason": "Begründung",
        "urgency_send": "Dringlichkeit erbitten",
        "urgency_text": "Bitte erhöhen Sie die Dringlichkeit dieses Falls.",
        "urgency_reason_prefix": "Begründung",
        "urgency_note": "Unser Team entscheidet über die Dringlichkeit und wird benachrichtigt.",
        "closed_note": "Diese Anfrage ist geschlossen. Sie können eine neue Anfrage eröffnen, "
        "die sich auf diese bezieht.",
        "new_case": "Neue Anfrage zu diesem Fall eröffnen",
        "comment_sent": "Danke, Ihr Kommentar ist eingegangen.",
        "urgency_sent": "Danke, Ihre Bitte um höhere Dringlichkeit ist eingegangen.",
        "new_case_sent": "Danke, Ihre neue Anfrage ist eingegangen.",
        "error_empty": "Bitte schreiben Sie einen Text.",
        "error_too_large": "Die Dateien sind zu groß (höchstens {limit}).",
        "error_csrf": "Das Formular ist abgelaufen. Bitte laden Sie die Seite neu und versuchen Sie es noch einmal.",
        "not_found": "Diese Anfrage gibt es nicht, oder Sie dürfen sie nicht sehen.",
        "status_new": "Neu",
        "status_open": "In Bearbeitung",
        "status_pending": "Wartet auf Ihre Antwort",
        "status_solved": "Gelöst",
        "status_closed": "Geschlossen",
        "sla_first": "erste Antwort bis {due}",
        "sla_first_late": "erste Antwort war fällig {due}",
        "sla_answered": "beantwortet",
        "sla_resolution": "Lösung bis {due}",
        "sla_waiting": "wartet auf Ihre Antwort",
        "sla_solved": "gelöst",
        "sla_closed": "geschlossen",
        "sla_none": "ohne zugesagte Frist",
        "no_due": "–",
        "you": "Sie",
    },
    "en": {
        "title": "Case Tracker",
        "skip": "Skip to content",
        "signin_heading": "Sign in",
        "signin_intro": "Enter your e-mail address. We will send you a link that signs you in without a "
        "password. It works for 15 minutes, once.",
        "address": "E-mail address",
        "send_link": "Send sign-in link",
        "sent_heading": "Please check your mailbox",
        "sent_text": "If we know this address, a sign-in link is on its way. It works for 15 minutes.",
        "link_invalid_heading": "This link no longer works",
        "link_invalid_text": "The link has expired, was used already, or is incomplete. Just ask for a new one.",
        "signout": "Sign out",
        "signed_in_as": "Signed in as",
        "language": "Language",
        "cases": "Your cases",
        "cases_org": "Cases of {org}",
        "search": "Search",
        "search_hint": "Case number, subject or text",
        "status": "Status",
        "severity": "Severity",
        "queue": "Area",
        "sort": "Sort by",
        "sort_updated": "Last activity",
        "sort_created": "Created",
        "sort_severity": "Severity",
        "sort_due": "Due",
        "order": "Order",
        "desc": "descending",
        "asc": "ascending",
        "any": "any",
        "apply": "Show",
        "case": "Case",
        "subject": "Subject",
        "due": "Due",
        "last_activity": "Last activity",
        "none_found": "No cases found.",
        "page": "Page {page} of {pages} ({total})",
        "n_cases": ("case", "cases"),
        "prev": "Previous",
        "next": "Next",
        "back": "Back to the list",
        "conversation": "Conversation",
        "full_text": "Full text",
        "attachments": "Attachments",
        "sla": "State",
        "linked": "Linked cases",
        "support": "Support",
        "contact": "Contact",
        "comment": "Add a comment",
        "comment_label": "Your comment",
        "files": "Files (optional)",
        "send": "Send",
        "urgency": "Ask for higher urgency",
        "urgency_reason": "Reason",
        "urgency_send": "Ask for urgency",
        "urgency_text": "Please raise the priority of this case.",
        "urgency_reason_prefix": "Reason",
        "urgency_note": "Our team decides about the urgency and is notified.",
        "closed_note": "This case is closed. You can open a new case that refers to this one.",
        "new_case": "Open a new case that refers to this one",
        "comment_sent": "Thank you, your comment has been received.",
        "urgency_sent": "Thank you, your request for higher urgency has been received.",
        "new_case_sent": "Thank you, your new case has been received.",
        "error_empty": "Please write a text.",
        "error_too_large": "The files are too large (at most {limit}).",
        "error_csrf": "The form has expired. Please reload the page and try again.",
        "not_found": "There is no such case, or you may not see it.",
        "status_new": "New",
        "status_open": "In progress",
        "status_pending": "Waiting for your reply",
        "status_solved": "Solved",
        "status_closed": "Closed",
        "sla_first": "first response by {due}",
        "sla_first_late": "first response was due {due}",
        "sla_answered": "answered",
        "sla_resolution": "resolution by {due}",
        "sla_waiting": "waiting for your reply",
        "sla_solved": "solved",
        "sla_closed": "closed",
        "sla_none": "no promised time",
        "no_due": "–",
        "you": "you",
    },
}


def language(value: str | None, fallback: str = "en") -> str:
    v = (value or "").lower()[:2]
    return v if v in LANGUAGES else fallback


def when(dt: datetime | None, tz: tzinfo, lang: str, now: datetime | None = None) -> str:
    """A time for people: weekday, day, month and minutes in the case's zone; with the year when
    it is not this year's."""
    if dt is None:
        return TEXT[lang]["no_due"]
    local = dt.astimezone(tz)
    same_year = now is None or now.astimezone(tz).year == local.year
    return format_datetime(local, _PATTERN[lang] if same_year else _PATTERN_YEAR[lang], locale=lang)


def sla_words(ticket, tz: tzinfo, lang: str, now: datetime) -> str:
    """The case's SLA state in plain words: "erste Antwort bis Do 07.01. 12:00", "beantwortet"."""
    t = TEXT[lang]
    if ticket.status == "closed":
        return t["sla_closed"]
    if ticket.status == "solved":
        return t["sla_solved"]
    if ticket.status == "pending":
        return t["sla_waiting"]
    if ticket.first_response_at is None:
        if ticket.first_response_due is None:
            return t["sla_none"]
        key = "sla_first_late" if ticket.first_response_due < now else "sla_first"
        return t[key].format(due=when(ticket.first_response_due, tz, lang, now))
    words = t["sla_answered"]
    if ticket.resolution_due is not None:
        words += " · " + t["sla_resolution"].format(due=when(ticket.resolution_due, tz, lang, now))
    return words
