"""extract_new_text: the new part of a reply, and the reply fixtures in tests/data/replies.

One named test per gap of mail-parser-reply that quoting.py works around (the docstring says the
behaviour), the reply marker, empty results, hostile input; then every fixture of
tests/data/replies/MANIFEST.toml through parse_mail → extract_new_text, with its routing rule
checked against its threading headers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailbridge.domain import CaseNumberFormat
from mailbridge.ingest import quoting
from mailbridge.ingest.parser import parse_mail
from mailbridge.ingest.quoting import MAX_CHARS, REPLY_MARKER, extract_new_text

REPLIES = Path(__file__).resolve().parents[1] / "data" / "replies"
ORIG = "Der Export nach PDF bricht mit Fehler 0x80004005 ab."


def _q(*lines: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in lines)


# --- the marker ---------------------------------------------------------------------------------


def test_marker_cuts_everything_from_its_line():
    """Nothing from the marker line on survives, whatever follows it."""
    text = f"Erledigt, ich rufe den Kunden an.\n\n{REPLY_MARKER}\n\nNeuer Fall C1000002\nKunde: geheim\n"
    assert extract_new_text(text) == "Erledigt, ich rufe den Kunden an."


def test_marker_found_when_quoted_and_rewrapped():
    """The marker is found when the client quoted it with "> " and wrapped it over two lines."""
    text = (
        "Bitte an den Kunden: das Update kommt morgen.\n\n"
        "Am 20.11.2026 um 10:15 schrieb Vendor Support <support@vendor.example>:\n"
        "> ##- Bitte oberhalb dieser Zeile antworten / Please type your reply\n"
        "> above this line -##\n"
        ">\n> Kunde: Max Mustermann\n"
    )
    assert extract_new_text(text) == "Bitte an den Kunden: das Update kommt morgen."


def test_marker_german_words_split_across_quoted_lines():
    """Each core phrase alone is enough, also split inside the phrase by a quoted line break."""
    text = "Ok.\n> ##- Bitte oberhalb dieser\n> > Zeile antworten\nVon: interne Daten\n"
    assert extract_new_text(text) == "Ok."
    assert extract_new_text("Ok.\nplease TYPE your reply ABOVE this line\nintern\n") == "Ok."


def test_marker_cut_holds_even_when_nothing_else_is_recognised():
    """Unquoted notification text below the marker, with no header the library knows, is still cut."""
    text = "Antwort an den Kunden.\n" + REPLY_MARKER + "\nStatus: offen\nDer Kunde schrieb: vertraulich\n"
    assert "vertraulich" not in extract_new_text(text)


def test_marker_on_first_line_gives_empty():
    """An agent reply that is only the quoted notification has no new text."""
    assert extract_new_text(f"> {REPLY_MARKER}\n> Neuer Fall C1000002\n") == ""


# --- reply headers and separators ---------------------------------------------------------------


def test_outlook_german_header_block():
    """An Outlook "Von:/Gesendet:/An:/Betreff:" block and everything below it are cut."""
    text = (
        "Hallo,\n\ndas hat geholfen.\n\nVon: Vendor Support <support@vendor.example>\n"
        "Gesendet: Freitag, 20. November 2026 10:15\nAn: Max <max@acme.example>\nBetreff: Export\n\n" + ORIG
    )
    assert extract_new_text(text) == "Hallo,\n\ndas hat geholfen."


def test_outlook_header_block_with_bold_markers():
    """The same block with "*Von:*" bold markers (HTML converted to text) is cut."""
    text = (
        "Danke.\n\n*Von:* Vendor Support <support@vendor.example>\n*Gesendet:* Freitag, 20. November 2026\n"
        "*An:* Max\n*Betreff:* Export\n\n" + ORIG
    )
    assert extract_new_text(text) == "Danke."


def test_urspruengliche_nachricht_line_is_removed():
    """The line "-----Ursprüngliche Nachricht-----" is cut with the history (the library keeps it)."""
    text = (
        "Hallo,\n\nanbei das Log.\n\n-----Ursprüngliche Nachricht-----\nVon: Vendor Support\n"
        "Gesendet: Freitag, 20. November 2026 10:15\nAn: Max\nBetreff: Export\n\n" + ORIG
    )
    assert extract_new_text(text) == "Hallo,\n\nanbei das Log."


def test_original_message_separator():
    """The line "-----Original Message-----" and the English Outlook block are cut."""
    text = "Works now.\n\n-----Original Message-----\nFrom: Support\nSent: Friday\nTo: Max\nSubject: x\n\n" + ORIG
    assert extract_new_text(text) == "Works now."


def test_header_block_with_reply_to_is_cut_completely():
    """A "From:/Reply-To:/Date:" block loses its first lines too (the library cuts only at "Date:")."""
    text = (
        "This is the actual reply.\n\nFrom: Vendor Support <support@vendor.example>\n"
        "Reply-To: Vendor Support <support@vendor.example>\nDate: Friday, November 20, 2026 10:15\n"
        "To: Max\nSubject: Export\n\n" + ORIG
    )
    assert extract_new_text(text) == "This is the actual reply."


def test_header_block_in_another_locale():
    """A Swedish Outlook block "Från:/Skickat:/Till:/Ämne:" is cut although the languages are de, en."""
    text = (
        "Same error in Stockholm.\n\nFrån: Vendor Support <support@vendor.example>\n"
        "Skickat: den 20 november 2026 10:15\nTill: Max\nÄmne: Export\n\n" + ORIG
    )
    assert extract_new_text(text) == "Same error in Stockholm."


def test_groupwise_header_line():
    """GroupWise's ">>> Name <addr> date >>>" line and the unquoted original below it are cut."""
    text = "Geht wieder.\n\n>>> Vendor Support <support@vendor.example> 20.11.2026 10:15 >>>\n" + ORIG
    assert extract_new_text(text) == "Geht wieder."


# --- attributions and > quotes ------------------------------------------------------------------


def test_thunderbird_attribution_and_quote():
    """An attribution "Am … schrieb …:" with a > quote below is cut."""
    text = "Hallo,\n\nja, Version 4.2.\n\nAm 20.11.26 um 10:15 schrieb Vendor Support:\n" + _q(ORIG)
    assert extract_new_text(text) == "Hallo,\n\nja, Version 4.2."


def test_gmail_attribution_wrapped_over_two_lines():
    """Gmail's "On …, Name <" / "addr> wrote:" wrapped attribution goes entirely, German and English."""
    en = "Thanks!\n\nOn Fri, Nov 20, 2026 at 10:15 AM Vendor Support <\nsupport@vendor.example> wrote:\n\n" + _q(ORIG)
    de = "Danke!\n\nAm Fr., 20. Nov. 2026 um 10:15 Uhr schrieb Vendor Support <\nsupport@vendor.example>:\n\n"
    de += _q(ORIG)
    assert extract_new_text(en) == "Thanks!"
    assert extract_new_text(de) == "Danke!"


def test_attribution_wrapped_inside_the_address():
    """'schrieb "X" <x@y' / '>:' is one attribution, although its second line starts with ">"."""
    text = 'Passt.\n\nAm 21.04.2026 17:48 schrieb "Vendor Support" <support@vendor.example\n>:\n\n' + _q(ORIG)
    assert extract_new_text(text) == "Passt."


def test_quote_without_attribution_is_removed():
    """A > quote with no header above it is not new text (the library keeps it)."""
    assert extract_new_text(f"Ja.\n\n{_q(ORIG)}\n") == "Ja."


def test_inline_reply_keeps_the_answers_between_quotes():
    """Inline replies: the unquoted lines between quotes are kept, the quotes and attribution dropped."""
    text = (
        "Hallo,\n\nAm 20.11.26 um 14:02 schrieb Vendor Support:\n"
        + _q(ORIG, "", "Welche Version ist installiert?")
        + "\nVersion 4.2.1\n\n"
        + _q("Tritt der Fehler bei allen Dateien auf?")
        + "\nNur bei großen Dateien.\n"
    )
    assert extract_new_text(text) == "Hallo,\n\nVersion 4.2.1\n\nNur bei großen Dateien."


def test_bottom_posted_reply_keeps_the_text_below_the_quote():
    """A reply written below the quote is kept (the library loses everything after the header)."""
    text = "On 20/11/2026 10:15, Vendor Support wrote:\n" + _q(ORIG) + "\n\nIt works now.\n\n-- \nMax\n"
    assert extract_new_text(text) == "It works now."


def test_only_quote_gives_empty():
    """A reply that is only attribution and quote has no new text (the library returns the quote)."""
    assert extract_new_text("Am 20.11.26 um 10:15 schrieb Vendor Support:\n" + _q(ORIG)) == ""


def test_unquoted_attribution_with_address():
    """An attribution "Name <addr> wrote:" above unquoted history is cut (the library needs "On … wrote:")."""
    text = "Testing.\n\nVendor Support <support@vendor.example> wrote:\n\n" + ORIG
    assert extract_new_text(text) == "Testing."


def test_gmail_iso_date_attribution():
    """Gmail's "2026-11-20 10:15 GMT+01:00 Name <addr>:" attribution, wrapped, is cut."""
    text = "Thank you!\n\n2026-11-20 10:15 GMT+01:00 Vendor Support <\nsupport@vendor.example>:\n\n" + _q(ORIG)
    assert extract_new_text(text) == "Thank you!"


def test_attribution_like_sentence_without_address_or_date_stays():
    """A sentence ending in "schrieb:" without an address or date, above unquoted text, is content."""
    text = "Hallo,\n\nmein Kollege schrieb dazu:\nDas betrifft nur Windows 11.\n"
    assert extract_new_text(text) == "Hallo,\n\nmein Kollege schrieb dazu:\nDas betrifft nur Windows 11."


# --- forwards -----------------------------------------------------------------------------------


def test_forward_keeps_the_comment_above_it():
    """Gmail, Apple Mail and Thunderbird forwards: the new text is the forwarder's comment."""
    gmail = "FYI\n\n---------- Forwarded message ---------\nFrom: Max\nDate: Fri\nSubject: x\nTo: y\n\n" + ORIG
    apple = "Siehe unten.\n\nAnfang der weitergeleiteten Nachricht:\n\n> Von: Max\n> Betreff: x\n>\n" + _q(ORIG)
    tb = "Zur Info.\n\n-------- Weitergeleitete Nachricht --------\nBetreff: x\nDatum: y\n\n" + ORIG
    assert extract_new_text(gmail) == "FYI"
    assert extract_new_text(apple) == "Siehe unten."
    assert extract_new_text(tb) == "Zur Info."


def test_forward_without_comment_gives_empty():
    """A forward with nothing written above it has no new text."""
    text = "\n---------- Forwarded message ---------\nFrom: Max\nDate: Fri\nSubject: x\nTo: y\n\n" + ORIG
    assert extract_new_text(text) == ""


# --- footers and signatures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "footer",
    [
        "Von meinem iPhone gesendet",
        "Sent from my iPhone",
        "Gesendet von meinem Samsung Galaxy Smartphone.",
        "Gesendet von Outlook für Android<https://aka.ms/AAb9ysg>",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Gesendet mit der GMX Mail App",
        "Diese Nachricht wurde von meinem Android-Gerät mit K-9 Mail gesendet.",
    ],
)
def test_mobile_footer_and_everything_below_is_cut(footer):
    """Mobile and webmail footers end the new text (the library knows only some of them)."""
    text = f"Passt, danke.\n\n{footer}\n\n> Am 20.11.2026 um 10:15 schrieb Vendor Support:\n> {ORIG}\n"
    assert extract_new_text(text) == "Passt, danke."


def test_sent_from_my_sentence_is_not_a_footer():
    """A line "Sent from my laptop, …" with a comma is a sentence and stays."""
    text = "Hi,\n\nSent from my laptop, the log is attached.\n"
    assert extract_new_text(text) == "Hi,\n\nSent from my laptop, the log is attached."


def test_signature_delimiter():
    """The delimiter "-- " starts the signature."""
    text = "Hallo,\n\ngeht wieder.\n\n-- \nMax Mustermann\nACME GmbH\n"
    assert extract_new_text(text) == "Hallo,\n\ngeht wieder."


def test_signature_delimiter_left_alone_by_a_footer_cut_is_dropped():
    """A delimiter "-- " whose only signature line was a mobile footer does not stay behind."""
    text = "Die Datei kommt heute.\n\n-- \nDiese Nachricht wurde von meinem Android-Gerät mit K-9 Mail gesendet.\n"
    assert extract_new_text(text) == "Die Datei kommt heute."


def test_mit_freundlichen_gruessen_block():
    """The closing "Mit freundlichen Grüßen" and the signature block below it are cut."""
    text = "Hallo,\n\ngeht wieder.\n\nMit freundlichen Grüßen\nMax Mustermann\nACME GmbH\nTel. +49 30 1234567\n"
    assert extract_new_text(text) == "Hallo,\n\ngeht wieder."


@pytest.mark.parametrize(
    "closing",
    ["Mit freundlichen Grüssen", "Freundliche Grüße", "Herzliche Grüße", "Regards", "LG Max", "MfG", "Cheers,"],
)
def test_closings_the_library_lacks(closing):
    """Closings missing from the library's list (Swiss "ss", "Freundliche Grüße", "Regards") end the text."""
    assert extract_new_text(f"Hallo,\n\ngeht.\n\n{closing}\nMax\nACME GmbH\n") == "Hallo,\n\ngeht."


def test_sentence_that_starts_like_a_closing_is_kept():
    """A later line "Thanks, that fixed it." is a sentence, not a signature (the library cuts there)."""
    text = "Hi,\n\nThanks, that fixed it.\nThe export works.\n\nThanks,\nMax\n"
    assert extract_new_text(text) == "Hi,\n\nThanks, that fixed it.\nThe export works."


def test_word_that_starts_like_a_closing_is_kept():
    """Words like "LG-Monitor" or "Grußkarte" are not closings."""
    text = "Hallo,\n\nder Fehler tritt nur am\nLG-Monitor auf.\n"
    assert extract_new_text(text) == "Hallo,\n\nder Fehler tritt nur am\nLG-Monitor auf."


def test_closing_on_the_first_line_is_content():
    """A mail that is only a closing formula keeps it: there is nothing else."""
    assert extract_new_text("Viele Grüße\n") == "Viele Grüße"


def test_hyphen_list_is_not_a_signature():
    """Lines "- item" stay (the library takes a line starting with "- " for a signature)."""
    text = "Hallo,\n\nfolgendes:\n- Punkt eins\n- Punkt zwei\n\nGruß\nMax\n"
    assert extract_new_text(text) == "Hallo,\n\nfolgendes:\n- Punkt eins\n- Punkt zwei"


def test_disclaimer_like_sentence_is_kept():
    """A sentence "Hinweis: … Mail …" stays (the library deletes it as a "disclaimer")."""
    text = "Hallo,\n\nHinweis: die Mail kam zweimal an.\nDanke\n"
    assert extract_new_text(text) == "Hallo,\n\nHinweis: die Mail kam zweimal an.\nDanke"


# --- formatting, empty input, hostile input -----------------------------------------------------


def test_indentation_and_paragraphs_are_kept():
    """Inner formatting survives (the library strips every line): indentation, one blank line."""
    text = "\n\nHallo,\n\n    code line\n        more\n\n\n\nEnde   \n\n"
    assert extract_new_text(text) == "Hallo,\n\n    code line\n        more\n\nEnde"


def test_line_endings_are_normalised():
    """CRLF and CR line endings give the same result as LF."""
    lf = "Hallo,\n\nja.\n\nAm 20.11.26 um 10:15 schrieb Vendor Support:\n> " + ORIG + "\n"
    assert extract_new_text(lf.replace("\n", "\r\n")) == extract_new_text(lf.replace("\n", "\r")) == "Hallo,\n\nja."


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", "\r\n \t\r\n", ">\n>\n", "-- \n"])
def test_empty_results(text):
    """Blank text, a bare quote or a bare delimiter has no new text."""
    assert extract_new_text(text) == ""


def test_languages_argument():
    """Any language list works (a bare string too); English reply headers are always known."""
    text = "Fine.\n\nOn Fri, Nov 20, 2026 at 10:15 AM Vendor Support wrote:\n" + _q(ORIG)
    assert extract_new_text(text, languages=("fr",)) == "Fine."
    assert extract_new_text(text, languages="de") == "Fine."
    assert extract_new_text(text, languages=()) == "Fine."


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,
        "a" + "\n" * 1_000_000,
        "a" + " " * 1_000_000 + "b",
        ("On " + "x" * 297 + "\n") * 3_400,
        ("Am " + "y" * 290 + " schrieb\n") * 3_400,
        ">" * 1_000_000,
        "> x\nanswer\n" * 100_000,
        ("x <a\n>:\n") * 125_000,
        "Warning: mail " * 70_000,
        "-" * 1_000_000,
        ("Thanks, " * 20 + "\n") * 6_200,
        ("Bitte oberhalb dieser " + ">" * 50 + "\n") * 14_000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_one_megabyte_of_hostile_input_is_capped(text):
    """1 MB inputs are analysed only up to MAX_CHARS; the result is never longer (the cap is what
    keeps the regexes, ours and the library's, fast)."""
    assert len(text) >= 900_000
    result = extract_new_text(text)
    assert len(result) <= MAX_CHARS
    assert set(result.split("\n")) <= {line.rstrip() for line in text[:MAX_CHARS].split("\n")} | {""}


def test_library_failure_keeps_our_own_cut(monkeypatch):
    """If mail-parser-reply raises, the pre-processed text is returned instead of an exception."""

    def boom(self):
        raise RuntimeError("library bug")

    monkeypatch.setattr(quoting.EmailMessage, "read", boom)
    text = "Hallo,\n\nja.\n\nAm 20.11.26 um 10:15 schrieb Vendor Support:\n" + _q(ORIG)
    assert extract_new_text(text) == "Hallo,\n\nja."


def test_internal_failure_gives_empty(monkeypatch):
    """If our own pre-processing raises, the result is "" (never the whole text, never an exception)."""

    def boom(text):
        raise RuntimeError("bug")

    monkeypatch.setattr(quoting, "_cut_at_marker", boom)
    assert extract_new_text("Hallo\n" + _q(ORIG)) == ""


# --- the reply fixtures -------------------------------------------------------------------------

CASE = CaseNumberFormat().format(100000)
SUBSTITUTIONS = {
    "@@CASE@@": CASE,
    "@@ACK_ID@@": "20261120091500.ack.4711@vendor.example",
    "@@ORIG_ID@@": "AM0PR07MB0001ORIGINAL@AM0PR07MB0001.eurprd07.prod.outlook.com",
    "@@REQUESTER@@": "max.mustermann@acme.example",
    "@@SUPPORT@@": "support@vendor.example",
}
MANIFEST = tomllib.loads((REPLIES / "MANIFEST.toml").read_text(encoding="utf-8"))["files"]


def _sub(value: str) -> str:
    for placeholder, real in SUBSTITUTIONS.items():
        value = value.replace(placeholder, real)
    return value


def _parse(name: str):
    raw = (REPLIES / name).read_bytes()
    for placeholder, real in SUBSTITUTIONS.items():
        raw = raw.replace(placeholder.encode(), real.encode())
    return parse_mail(raw)


def test_manifest_lists_every_fixture():
    """Every .eml in tests/data/replies has exactly one manifest entry, and there are at least 30."""
    listed = [entry["file"] for entry in MANIFEST]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in REPLIES.glob("*.eml")}
    assert len(listed) >= 30
    assert {entry["rule"] for entry in MANIFEST} == {"thread-header", "subject", "body"}


def test_fixtures_have_unique_message_ids():
    """Every fixture has its own Message-ID and a Date."""
    parsed = [_parse(entry["file"]) for entry in MANIFEST]
    ids = [p.message_id for p in parsed]
    assert None not in ids and len(ids) == len(set(ids))
    assert all(p.date is not None for p in parsed)


@pytest.mark.parametrize("entry", MANIFEST, ids=[entry["file"] for entry in MANIFEST])
def test_reply_fixture(entry):
    """parse_mail → extract_new_text gives the declared new text; the routing rule fits the headers."""
    parsed = _parse(entry["file"])
    assert not parsed.fatal_defects
    assert parsed.from_ is not None and parsed.from_.email.endswith("@acme.example")
    assert SUBSTITUTIONS["@@SUPPORT@@"] in parsed.recipient_emails

    new = extract_new_text(parsed.text)
    for line in entry["new_text_contains"]:
        assert _sub(line) in new, f"{line!r} missing from the new text:\n{new}"
    for text in entry["new_text_excludes"]:
        assert _sub(text) not in new, f"{text!r} (history or signature) in the new text:\n{new}"
    if entry.get("new_text_empty"):
        assert new == ""
    else:
        assert new

    threading = [*parsed.in_reply_to, *parsed.references]
    if entry["rule"] == "thread-header":
        assert {SUBSTITUTIONS["@@ACK_ID@@"], SUBSTITUTIONS["@@ORIG_ID@@"]} & set(threading)
    else:
        assert threading == [], "a subject/body fixture must not carry In-Reply-To or References"
    if entry["rule"] == "subject":
        assert CASE in parsed.subject
    if entry["rule"] == "body":
        assert CASE not in parsed.subject
        assert CASE in new
